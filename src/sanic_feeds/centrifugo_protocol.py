"""The Centrifugo client protocol (v2, JSON encoding): frames in, commands out; replies and pushes.

Centrifugo's SDKs speak it on ``/connection/websocket`` (see docs/centrifugo.md). The spec is
``definitions/client.proto`` of ``centrifugal/protocol``: a client sends ``Command`` objects
(``{"id": N, "<method>": {...}}``, several per frame separated by newlines), the server answers
each with a ``Reply`` carrying the same ``id`` (a result under the method's name, or an
``error``), and sends ``push`` replies without ``id``. ``{}`` is the protocol's ping (server to
client) and pong (client to server). ``bytes`` fields (``data``) carry raw JSON.

This module also translates the messages that travel through the broker in the feed format
(``protocol.py``: ``chat``, ``data``, notices) into Centrifugo pushes and publications, so a
channel is one channel for every protocol.

Pure code: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

import orjson

from .protocol import ErrorCode


class ErrorReply(IntEnum):
    """Error codes of replies (docs ``server/codes.md``); the connection stays open."""

    INTERNAL = 100
    UNAUTHORIZED = 101
    UNKNOWN_CHANNEL = 102
    PERMISSION_DENIED = 103
    METHOD_NOT_FOUND = 104
    ALREADY_SUBSCRIBED = 105
    LIMIT_EXCEEDED = 106
    BAD_REQUEST = 107
    NOT_AVAILABLE = 108
    TOKEN_EXPIRED = 109
    EXPIRED = 110
    TOO_MANY_REQUESTS = 111
    UNRECOVERABLE_POSITION = 112


ERROR_MESSAGES: Final = {
    ErrorReply.INTERNAL: "internal server error",
    ErrorReply.UNAUTHORIZED: "unauthorized",
    ErrorReply.UNKNOWN_CHANNEL: "unknown channel",
    ErrorReply.PERMISSION_DENIED: "permission denied",
    ErrorReply.METHOD_NOT_FOUND: "method not found",
    ErrorReply.ALREADY_SUBSCRIBED: "already subscribed",
    ErrorReply.LIMIT_EXCEEDED: "limit exceeded",
    ErrorReply.BAD_REQUEST: "bad request",
    ErrorReply.NOT_AVAILABLE: "not available",
    ErrorReply.TOKEN_EXPIRED: "token expired",
    ErrorReply.EXPIRED: "expired",
    ErrorReply.TOO_MANY_REQUESTS: "too many requests",
    ErrorReply.UNRECOVERABLE_POSITION: "unrecoverable position",
}

TEMPORARY: Final = frozenset({ErrorReply.INTERNAL, ErrorReply.TOO_MANY_REQUESTS})
"""Errors worth retrying; SDKs give up on the others."""


class Disconnect(IntEnum):
    """Close codes (docs ``server/codes.md``): 3000-3499 reconnect, 3500-3999 do not."""

    SHUTDOWN = 3001
    SERVER_ERROR = 3004
    EXPIRED = 3005
    SUB_EXPIRED = 3006
    SLOW = 3008
    INSUFFICIENT_STATE = 3010
    FORCE_RECONNECT = 3011
    NO_PONG = 3012
    TOO_MANY_REQUESTS = 3013
    INVALID_TOKEN = 3500
    BAD_REQUEST = 3501
    STALE = 3502
    CONNECTION_LIMIT = 3504
    CHANNEL_LIMIT = 3505
    INAPPROPRIATE_PROTOCOL = 3506
    PERMISSION_DENIED = 3507
    NOT_AVAILABLE = 3508


DISCONNECT_REASONS: Final = {
    Disconnect.SHUTDOWN: "shutdown",
    Disconnect.SERVER_ERROR: "internal server error",
    Disconnect.EXPIRED: "connection expired",
    Disconnect.SUB_EXPIRED: "subscription expired",
    Disconnect.SLOW: "slow",
    Disconnect.INSUFFICIENT_STATE: "insufficient state",
    Disconnect.FORCE_RECONNECT: "force reconnect",
    Disconnect.NO_PONG: "no pong",
    Disconnect.TOO_MANY_REQUESTS: "too many requests",
    Disconnect.INVALID_TOKEN: "invalid token",
    Disconnect.BAD_REQUEST: "bad request",
    Disconnect.STALE: "stale",
    Disconnect.CONNECTION_LIMIT: "connection limit",
    Disconnect.CHANNEL_LIMIT: "channel limit",
    Disconnect.INAPPROPRIATE_PROTOCOL: "inappropriate protocol",
    Disconnect.PERMISSION_DENIED: "permission denied",
    Disconnect.NOT_AVAILABLE: "not available",
}

FEED_CLOSES: Final = {
    1001: Disconnect.SHUTDOWN,
    1011: Disconnect.SERVER_ERROR,
    4001: Disconnect.SLOW,
    4401: Disconnect.EXPIRED,
    4403: Disconnect.CONNECTION_LIMIT,
    4429: Disconnect.TOO_MANY_REQUESTS,
    4503: Disconnect.SERVER_ERROR,
    4504: Disconnect.SERVER_ERROR,
}
"""The node's close codes (shutdown, slow consumer, ...) as this protocol says them."""

REFUSALS: Final = {
    ErrorCode.INVALID_CHANNEL: ErrorReply.BAD_REQUEST,
    ErrorCode.UNKNOWN_NAMESPACE: ErrorReply.UNKNOWN_CHANNEL,
    ErrorCode.FORBIDDEN: ErrorReply.PERMISSION_DENIED,
    ErrorCode.NOT_SUBSCRIBED: ErrorReply.PERMISSION_DENIED,
    ErrorCode.NOT_AVAILABLE: ErrorReply.NOT_AVAILABLE,
    ErrorCode.MESSAGE_TOO_LARGE: ErrorReply.LIMIT_EXCEEDED,
    ErrorCode.CHANNEL_FULL: ErrorReply.LIMIT_EXCEEDED,
    ErrorCode.TOO_MANY_CHANNELS: ErrorReply.LIMIT_EXCEEDED,
    ErrorCode.RATE_LIMITED: ErrorReply.TOO_MANY_REQUESTS,
    ErrorCode.BROKER_UNAVAILABLE: ErrorReply.INTERNAL,
    ErrorCode.INTERNAL_ERROR: ErrorReply.INTERNAL,
}
"""The feed protocol's refusals (permissions.py decides for every protocol) as error replies."""

METHODS: Final = (
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "ping",
    "send",
    "rpc",
    "refresh",
    "sub_refresh",
)
"""Request fields of a ``Command``, in the spec's order: the first one set is the request."""

MAX_ID = 2**32 - 1


class BadFrame(ValueError):
    """A frame that is not a sequence of commands: the connection is closed (3501)."""


@dataclass(frozen=True, slots=True)
class Request:
    """One command: its ``id`` (0 for ``send``), method, and the method's fields."""

    id: int
    method: str
    params: dict[str, object]


@dataclass(frozen=True, slots=True)
class Pong:
    """``{}``: the client's answer to a ping."""


@dataclass(frozen=True, slots=True)
class Unknown:
    """A command with an id but no request the server knows (answered with error 104)."""

    id: int


Frame = Request | Pong | Unknown


def parse_frame(text: str | bytes) -> list[Frame]:
    """The commands of one text frame. Raises :class:`BadFrame` for anything else."""
    found: list[Frame] = []
    raw = text.encode() if isinstance(text, str) else text
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        found.append(_parse_command(line))
    if not found:
        raise BadFrame("empty frame")
    return found


def _parse_command(line: bytes) -> Frame:
    try:
        command = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise BadFrame("invalid JSON") from None
    if not isinstance(command, dict):
        raise BadFrame("a command must be a JSON object")
    ident = command.get("id", 0)
    if not isinstance(ident, int) or isinstance(ident, bool) or not 0 <= ident <= MAX_ID:
        raise BadFrame("id must be an unsigned 32-bit integer")
    for method in METHODS:
        params = command.get(method)
        if params is None:
            continue
        if not isinstance(params, dict):
            raise BadFrame(f"{method} must be an object")
        if method != "send" and ident == 0:
            raise BadFrame(f"{method} needs an id")
        return Request(ident, method, params)
    if ident == 0:
        return Pong()
    return Unknown(ident)


# -- replies ---------------------------------------------------------------------------------

PING: Final = b"{}"
"""The server's ping (and the client's pong)."""


def reply(ident: int, method: str, result: dict[str, object]) -> bytes:
    return orjson.dumps({"id": ident, method: result})


def error(ident: int, code: ErrorReply, message: str = "") -> bytes:
    body: dict[str, object] = {"code": int(code), "message": message or ERROR_MESSAGES[code]}
    if code in TEMPORARY:
        body["temporary"] = True
    return orjson.dumps({"id": ident, "error": body})


def custom_error(ident: int, code: int, message: str) -> bytes:
    """An application's own error code (an RPC handler's), as Centrifugo's proxies allow."""
    return orjson.dumps({"id": ident, "error": {"code": code, "message": message}})


def push(channel: str, kind: str, value: dict[str, object]) -> bytes:
    return orjson.dumps({"push": {"channel": channel, kind: value}})


def disconnect_reason(code: int, reason: str = "") -> str:
    """The reason a close frame carries (SDKs show it)."""
    try:
        return reason or DISCONNECT_REASONS[Disconnect(code)]
    except ValueError:
        return reason


# -- feed messages as Centrifugo sees them -----------------------------------------------------


def client_info(message: dict[str, object]) -> dict[str, object]:
    """``ClientInfo`` of a feed message's sender, or of a presence entry (``conn_info`` from
    its ``info``, ``chan_info`` from its ``chan_info``)."""
    info: dict[str, object] = {"client": message.get("client", ""), "user": message.get("user", "")}
    if message.get("info") is not None:
        info["conn_info"] = message["info"]
    if message.get("chan_info") is not None:
        info["chan_info"] = message["chan_info"]
    return info


def publication(message: dict[str, object]) -> dict[str, object] | None:
    """A stored or live feed message as a ``Publication``; None for notices.

    A ``chat`` becomes a publication of its ``message`` with the sender as ``info``; a
    ``data`` message (``Feeds.publish``, the HTTP API) one of its ``data``. The message's
    history ``id`` is the publication's ``offset``.
    """
    kind = message.get("type")
    pub: dict[str, object]
    if kind == "chat":
        pub = {"data": message.get("message"), "info": client_info(message)}
    elif kind == "data":
        pub = {"data": message.get("data")}
    else:
        return None
    if isinstance(message.get("id"), int):
        pub["offset"] = message["id"]
        pub["epoch"] = message.get("epoch", "")
    return pub


def publications(bodies: list[bytes]) -> list[dict[str, object]]:
    """Stored feed messages (history) as publications, in order."""
    found = []
    for body in bodies:
        message = orjson.loads(body)
        pub = publication(message) if isinstance(message, dict) else None
        if pub is not None:
            found.append(pub)
    return found


INSUFFICIENT_STATE: Final = {"code": 2500, "reason": "insufficient state"}
"""Unsubscribe push after a gap the node could not fill: SDKs resubscribe and recover."""


def push_of(body: bytes, join_leave: bool) -> bytes:
    """The push a feed message becomes for a Centrifugo subscriber (b"": none)."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return b""
    if not isinstance(message, dict) or not isinstance(message.get("channel"), str):
        return b""
    channel: str = message["channel"]
    kind = message.get("type")
    pub = publication(message)
    if pub is not None:
        return push(channel, "pub", pub)
    if kind in ("user_joined", "user_left") and join_leave:
        return push(
            channel, "join" if kind == "user_joined" else "leave", {"info": client_info(message)}
        )
    if kind == "gap":
        return push(channel, "unsubscribe", dict(INSUFFICIENT_STATE))
    return b""


def position_body(frame_payload: bytes) -> bytes:
    """A pushed publication's position in the stored-message form ``history.position_of``
    reads, so parked pushes can be matched against a replay (b"" for other pushes)."""
    try:
        message = orjson.loads(frame_payload)
        pub = message["push"]["pub"]
        offset, epoch = pub["offset"], pub.get("epoch", "")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return b""
    if not isinstance(offset, int) or not isinstance(epoch, str):
        return b""
    return b'{"id":%d,"epoch":"%s"}' % (offset, epoch.encode())
