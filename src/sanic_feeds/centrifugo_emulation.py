"""Centrifugo's bidirectional emulation: the requests, their routing between nodes, the end.

Over an emulation transport (``/connection/http_stream``, ``/connection/sse``) the server's
frames go down one long HTTP response, and the client sends its further commands as separate
``POST /emulation`` requests, ``{"session": ..., "node": ..., "data": <commands>}``, with the
``session`` and ``node`` its connect reply gave it. A load balancer may send such a request to
any instance, so:

- a request for a session of this node goes straight to it (:class:`EmulatedSessions`);
- a request naming another node is published on that node's own broker channel
  (:func:`node_channel`, subscribed by a node once it serves an emulated connection), and that
  node hands it to its session. Delivery is the broker's, at most once, like every live
  message; sticky sessions at the balancer save the hop.

The ``session`` is a secret of its connection (unlike the client id, which presence shows to
every subscriber): whoever holds it can send commands as that connection.

A stream cannot carry a close code, so an emulated connection is closed with a ``disconnect``
push (code, reason, whether to reconnect) as its last frame (:func:`farewell`); below 3000 (a
transport-level reason) the stream just ends, and the SDKs reconnect.

What it must never do: await, or hand a request to a session other than the one it names.
Pure code but for the registry's calls into sessions.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import orjson
from google.protobuf.message import DecodeError

from .centrifugo_pb.centrifugo_client_pb2 import EmulationRequest as ProtobufRequest
from .centrifugo_wire import CentrifugoFraming
from .log_every import LogEvery

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "#emulation:"
"""Per-node broker channels of forwarded requests; no client channel can start with ``#``."""

MAX_REQUEST_SIZE = 65536
"""Bytes of an ``/emulation`` request or of an HTTP-streaming connect (Centrifugo's default)."""

BAD_FORWARD_LOG_EVERY = 10.0
"""Seconds between two log lines about forwarded requests this node cannot read."""

_NODE_ID = re.compile(r"[\w.-]{1,100}", re.ASCII)


class BadEmulationRequest(ValueError):
    """An ``/emulation`` body that is not ``{"session", "node", "data"}`` strings (or, in the
    Protobuf encoding, not an ``EmulationRequest``)."""


@dataclass(frozen=True, slots=True)
class EmulationRequest:
    """Commands for the connection ``session`` of node ``node``."""

    node: str
    session: str
    data: str | bytes
    """The commands, as the client would have sent them in one WebSocket frame (bytes in the
    Protobuf encoding)."""

    def encode(self) -> bytes:
        """As another node's channel carries it (the request's shape; Protobuf commands in
        ``binary``, base64)."""
        body: dict[str, str] = {"node": self.node, "session": self.session}
        if isinstance(self.data, bytes):
            body["binary"] = base64.b64encode(self.data).decode()
        else:
            body["data"] = self.data
        return orjson.dumps(body)


def parse_request(body: bytes) -> EmulationRequest:
    """An ``/emulation`` body (JSON encoding), or :class:`BadEmulationRequest`."""
    if len(body) > MAX_REQUEST_SIZE:
        raise BadEmulationRequest("too large")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadEmulationRequest("not JSON") from None
    if not isinstance(value, dict):
        raise BadEmulationRequest("not an object")
    node, session, data = value.get("node"), value.get("session"), value.get("data")
    if isinstance(value.get("binary"), str) and data is None:
        try:
            data = base64.b64decode(value["binary"], validate=True)
        except binascii.Error:
            raise BadEmulationRequest("binary is not base64") from None
    if not (isinstance(node, str) and isinstance(session, str) and isinstance(data, str | bytes)):
        raise BadEmulationRequest("session, node and data must be strings")
    return _checked(EmulationRequest(node, session, data))


def parse_protobuf_request(body: bytes) -> EmulationRequest:
    """An ``/emulation`` body in the Protobuf encoding (an ``EmulationRequest``)."""
    if len(body) > MAX_REQUEST_SIZE:
        raise BadEmulationRequest("too large")
    request = ProtobufRequest()
    try:
        request.ParseFromString(body)
    except DecodeError:
        raise BadEmulationRequest("not an EmulationRequest") from None
    return _checked(EmulationRequest(request.node, request.session, request.data))


def _checked(request: EmulationRequest) -> EmulationRequest:
    node, session = request.node, request.session
    if not _NODE_ID.fullmatch(node):
        raise BadEmulationRequest("not a node id")
    if not session:
        raise BadEmulationRequest("no session")
    return request


def node_channel(node: str) -> str:
    """The broker channel that carries requests to ``node``'s emulated connections."""
    return CHANNEL_PREFIX + node


def new_session_id() -> str:
    """An emulated connection's secret (128 random bits)."""
    return secrets.token_urlsafe(16)


def farewell(framing: CentrifugoFraming) -> Callable[[int, str], bytes]:
    """The last frame of an emulated connection closed with ``code`` and ``reason``."""

    def last(code: int, reason: str) -> bytes:
        if code < 3000:
            return b""
        reconnect = code < 3500 or 4000 <= code < 4500
        push = {"disconnect": {"code": code, "reason": reason, "reconnect": reconnect}}
        return framing.frame(orjson.dumps({"push": push}))

    return last


class Receiver(Protocol):
    """An emulated connection's session, as requests reach it."""

    def receive(self, message: str | bytes) -> None: ...


class EmulatedSessions:
    """This node's emulated connections by session id, and the requests forwarded to them."""

    __slots__ = ("_complaints", "_sessions", "delivered")

    def __init__(self) -> None:
        self._sessions: dict[str, Receiver] = {}
        self.delivered = 0
        """Requests handed to a session of this node."""
        self._complaints = LogEvery(BAD_FORWARD_LOG_EVERY)

    def __len__(self) -> int:
        return len(self._sessions)

    def add(self, session_id: str, session: Receiver) -> None:
        self._sessions[session_id] = session

    def remove(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def deliver(self, session_id: str, data: str | bytes) -> bool:
        """Hand ``data`` to the session; False when this node has no such session."""
        session = self._sessions.get(session_id)
        if session is None:
            return False
        self.delivered += 1
        session.receive(data)
        return True

    def forwarded(self, payload: bytes) -> None:
        """A request from this node's channel (the broker's delivery callback: never await)."""
        try:
            request = parse_request(payload)
        except BadEmulationRequest as exc:
            if self._complaints.due():
                log.warning("ignored a forwarded emulation request: %s", exc)
            return
        self.deliver(request.session, request.data)
