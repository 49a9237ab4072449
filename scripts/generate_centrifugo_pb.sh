#!/bin/sh
# Regenerates src/sanic_feeds/centrifugo_pb/ from Centrifugo's published client.proto (MIT,
# github.com/centrifugal/protocol, definitions/client.proto): copy it to
# src/sanic_feeds/centrifugo_pb/centrifugo_client.proto, then run this with grpcio-tools
# installed (pip install grpcio-tools; needed only here, not by the package).
#
# The file is renamed (protobuf registers files by name) and only its package line is changed
# (to sanic_feeds.centrifugo), so that its messages cannot clash in protobuf's default
# descriptor pool with another copy of the same file (the centrifuge-python client ships one).
# Package names never reach the wire.
set -eu
cd "$(dirname "$0")/../src/sanic_feeds/centrifugo_pb"
sed -i 's/^package centrifugal\.centrifuge\.protocol;/package sanic_feeds.centrifugo;/' \
    centrifugo_client.proto
python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. centrifugo_client.proto
