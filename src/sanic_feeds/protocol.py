"""The client protocol: parsing client frames and encoding server messages.

Pure code: no sockets, no asyncio, no Sanic. Everything a client can receive is built here, so the
wire format lives in one place and is unit-tested without I/O. docs/protocol.md is the user-facing
description of the same rules; keep the two in step.

Server messages are encoded to ``bytes`` with orjson exactly once per message: the fan-out writes
those same bytes to every member.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Final

import orjson

from .channels import CHANNEL_RULES, is_valid_channel
from .errors import ProtocolError

JSONValue = object
"""Any value orjson can decode from or encode to JSON."""


class ErrorCode(StrEnum):
    """``code`` of an ``{"type": "error"}`` message. The connection stays open after each."""

    INVALID_JSON = "invalid_json"
    """The text frame is not valid JSON (or nests deeper than the decoder allows)."""
    INVALID_MESSAGE = "invalid_message"
    """The frame is JSON but not an object, or a field has the wrong type."""
    UNKNOWN_TYPE = "unknown_type"
    """``type`` names no message the server accepts."""
    MISSING_FIELD = "missing_field"
    """A required field is absent."""
    INVALID_CHANNEL = "invalid_channel"
    """A channel name breaks the channel name rules."""
    NOT_SUBSCRIBED = "not_subscribed"
    """The frame names a channel this connection has not joined."""
    BINARY_NOT_SUPPORTED = "binary_not_supported"
    """Binary frames are not part of the protocol; send JSON text frames."""
    BROKER_UNAVAILABLE = "broker_unavailable"
    """The message could not be handed to the broker; it was not delivered. Retry later."""
    FORBIDDEN = "forbidden"
    """The credential does not allow this channel (join or publish); nothing was done."""
    RATE_LIMITED = "rate_limited"
    """Over the rate limit; the message was not delivered. ``retry_after`` says when to retry."""
    TOO_MANY_CHANNELS = "too_many_channels"
    """The connection already follows the most channels it may (``--max-channels``)."""
    INTERNAL_ERROR = "internal_error"
    """The server failed to handle the frame; it was not delivered."""
    UNKNOWN_NAMESPACE = "unknown_namespace"
    """The channel's name starts with ``ns:`` but no namespace ``ns`` is configured."""
    NOT_AVAILABLE = "not_available"
    """The channel's namespace has this feature off (presence, history)."""
    MESSAGE_TOO_LARGE = "message_too_large"
    """The chat is larger than the namespace's ``max_message_size``; it was not delivered."""
    CHANNEL_FULL = "channel_full"
    """The channel has the most members its namespace allows (``max_members``)."""
    REFUSED = "refused"
    """The application's hook (or proxied backend) refused it; ``refusal`` is its own code and
    ``message`` its message (docs/hooks.md)."""
    BACKEND_UNAVAILABLE = "backend_unavailable"
    """The application's hook or backend did not answer in time (or not properly); nothing was
    done. Retry later."""


class CloseCode(IntEnum):
    """WebSocket close codes the server uses. See docs/protocol.md for the reconnect policy."""

    NORMAL = 1000
    GOING_AWAY = 1001
    """Server shutting down or restarting: reconnect (with backoff)."""
    PROTOCOL_ERROR = 1002
    """The client broke RFC 6455 (closed by the WebSocket layer itself)."""
    INVALID_PAYLOAD = 1007
    """A text frame that is not valid UTF-8 (closed by the WebSocket layer itself)."""
    POLICY_VIOLATION = 1008
    """Authentication failed, the origin or the URL's channel is not allowed: do not retry as is."""
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    """The instance is at its connection cap or connection rate: reconnect with backoff."""
    SLOW_CONSUMER = 4001
    """The client did not read fast enough and its outbound buffer overflowed: reconnect."""
    TOKEN_EXPIRED = 4401
    """The credential expired while the connection was open: reconnect with a fresh one."""
    RATE_LIMITED = 4429
    """Too many messages over the rate limit: reconnect later, and slower."""
    INVALID_CHANNEL = 4400
    """The channel in the URL breaks the channel name rules: do not reconnect."""
    BROKER_UNAVAILABLE = 4503
    """The channel could not be joined because the broker is down: reconnect with backoff."""
    CONNECTION_LIMIT = 4403
    """The user already holds the most connections allowed (``--user-connection-limit``):
    do not reconnect until one of them closes."""
    UNKNOWN_NAMESPACE = 4404
    """The URL's channel names a namespace that is not configured: do not reconnect."""
    CHANNEL_FULL = 4409
    """The URL's channel has the most members its namespace allows: reconnect later."""
    BACKEND_UNAVAILABLE = 4504
    """The application's connect or subscribe hook (or proxied backend) did not answer in time,
    or not properly: reconnect with backoff."""
    DISCONNECTED = 4410
    """The server API disconnected this user or connection (``disconnect`` without a code of
    its own): do not reconnect on your own."""


# -- Client -> server ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chat:
    """``{"type": "chat", "message": <any JSON>, "channel"?: str}``."""

    message: JSONValue
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class Subscribe:
    """``{"type": "subscribe", "channel": str, "since"?: int, "epoch"?: str}``.

    Join one more channel on this socket; with ``since``, first receive every stored message
    after that id (see docs/protocol.md, "Recovery").
    """

    channel: str
    since: int | None = None
    epoch: str | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """``{"type": "unsubscribe", "channel": str}``: leave a channel, keep the socket."""

    channel: str


@dataclass(frozen=True, slots=True)
class Ping:
    """``{"type": "ping"}``: application-level liveness check, answered with ``pong``."""


@dataclass(frozen=True, slots=True)
class Presence:
    """``{"type": "presence", "channel"?: str}``: who is in a channel now, on every instance."""

    channel: str | None = None


Command = Chat | Subscribe | Unsubscribe | Ping | Presence


def _optional_channel(frame: dict[str, object]) -> str | None:
    if "channel" not in frame:
        return None
    return _required_channel(frame)


def _required_channel(frame: dict[str, object]) -> str:
    if "channel" not in frame:
        raise ProtocolError(ErrorCode.MISSING_FIELD, "Missing field: channel")
    channel = frame["channel"]
    if not is_valid_channel(channel):
        raise ProtocolError(
            ErrorCode.INVALID_CHANNEL, f"Invalid channel name; channel names are {CHANNEL_RULES}"
        )
    return channel


def _parse_chat(frame: dict[str, object]) -> Command:
    if "message" not in frame:
        raise ProtocolError(ErrorCode.MISSING_FIELD, "Missing field: message")
    return Chat(frame["message"], _optional_channel(frame))


MAX_EPOCH_LENGTH = 64


def parse_since(value: object) -> int | None:
    """A ``since`` value: None, or a non-negative integer (also given as decimal text)."""
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    raise ProtocolError(ErrorCode.INVALID_MESSAGE, "Field 'since' must be a non-negative integer")


def parse_epoch(value: object) -> str | None:
    """An ``epoch`` value: None, or a short string as the server sends it."""
    if value is None:
        return None
    if isinstance(value, str) and 0 < len(value) <= MAX_EPOCH_LENGTH and value.isalnum():
        return value
    raise ProtocolError(ErrorCode.INVALID_MESSAGE, "Field 'epoch' must be the epoch of a message")


def _parse_subscribe(frame: dict[str, object]) -> Command:
    return Subscribe(
        _required_channel(frame), parse_since(frame.get("since")), parse_epoch(frame.get("epoch"))
    )


def _parse_unsubscribe(frame: dict[str, object]) -> Command:
    return Unsubscribe(_required_channel(frame))


def _parse_ping(frame: dict[str, object]) -> Command:
    return Ping()


def _parse_presence(frame: dict[str, object]) -> Command:
    return Presence(_optional_channel(frame))


_PARSERS: Final = {
    "chat": _parse_chat,
    "subscribe": _parse_subscribe,
    "unsubscribe": _parse_unsubscribe,
    "ping": _parse_ping,
    "presence": _parse_presence,
}

CLIENT_TYPES: Final = tuple(_PARSERS)
"""The ``type`` values a client may send."""


def parse_frame(text: str | bytes) -> Command:
    """Parse one client text frame into a command.

    Raises :class:`ProtocolError` with a documented code for anything that is not a valid command.
    """
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ProtocolError(ErrorCode.INVALID_JSON, "Invalid JSON format") from None
    if not isinstance(frame, dict):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "A message must be a JSON object")
    if "type" not in frame:
        raise ProtocolError(ErrorCode.MISSING_FIELD, "Missing field: type")
    kind = frame["type"]
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "Field 'type' must be a string")
    parser = _PARSERS.get(kind)
    if parser is None:
        shown = kind if len(kind) <= 40 else kind[:40] + "..."
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"Unknown message type {shown!r}; expected one of: {', '.join(CLIENT_TYPES)}",
        )
    return parser(frame)


# -- Server -> client ---------------------------------------------------------------------------

PONG: Final = b'{"type":"pong"}'


def welcome(channel: str, client: str, user: str) -> bytes:
    """First message on a new connection: who the server thinks you are."""
    return orjson.dumps(
        {
            "type": "system",
            "channel": channel,
            "client": client,
            "user": user,
            "message": f"Welcome to {channel}, {user}",
        }
    )


def user_joined(
    channel: str, client: str, user: str, info: object = None, chan_info: object = None
) -> bytes:
    """``info`` and ``chan_info`` (the member's connection and channel info, when it has
    them) are how Centrifugo subscribers get ``conn_info`` and ``chan_info`` in join pushes."""
    return _notice("user_joined", channel, client, user, info, chan_info)


def user_left(
    channel: str, client: str, user: str, info: object = None, chan_info: object = None
) -> bytes:
    return _notice("user_left", channel, client, user, info, chan_info)


def _notice(
    kind: str, channel: str, client: str, user: str, info: object, chan_info: object
) -> bytes:
    notice: dict[str, object] = {"type": kind, "channel": channel, "client": client, "user": user}
    if info is not None:
        notice["info"] = info
    if chan_info is not None:
        notice["chan_info"] = chan_info
    return orjson.dumps(notice)


def chat(channel: str, client: str, user: str, message: JSONValue) -> bytes:
    return orjson.dumps(
        {"type": "chat", "channel": channel, "client": client, "user": user, "message": message}
    )


def data(channel: str, payload: JSONValue) -> bytes:
    """A message published by a backend (``Feeds.publish``, the CLI or the HTTP API)."""
    return orjson.dumps({"type": "data", "channel": channel, "data": payload})


def message(payload: object) -> bytes:
    """A message from the backend to one user's connections, in no channel
    (``Feeds.send_message``); never stored, not recovered."""
    return orjson.dumps({"type": "message", "data": payload})


def recovered(channel: str, complete: bool, count: int, epoch: str, offset: int) -> bytes:
    """After a replay: were all missed messages there (``recovered``), how many were sent, and
    the id (``offset``, in ``epoch``) the client now holds every message up to."""
    return orjson.dumps(
        {
            "type": "recovered",
            "channel": channel,
            "recovered": complete,
            "count": count,
            "epoch": epoch,
            "offset": offset,
        }
    )


def presence(channel: str, clients: list[dict[str, object]]) -> bytes:
    """The members of a channel: ``[{"client", "user", "joined_at"}, ...]`` (with ``info``
    and ``chan_info`` for members that have them)."""
    return orjson.dumps({"type": "presence", "channel": channel, "clients": clients})


def gap(channel: str) -> bytes:
    """Messages of ``channel`` may have been lost (the broker connection was re-established).

    With history on, send ``subscribe`` with ``since``/``epoch`` to get them.
    """
    return orjson.dumps({"type": "gap", "channel": channel, "reason": "broker_reconnected"})


def subscribed(channel: str, by_server: bool = False) -> bytes:
    """``by_server``: the server API subscribed the connection (``"server": true``)."""
    if by_server:
        return orjson.dumps({"type": "subscribed", "channel": channel, "server": True})
    return orjson.dumps({"type": "subscribed", "channel": channel})


def unsubscribed(channel: str, by_server: bool = False) -> bytes:
    """``by_server``: the server API unsubscribed the connection (``"server": true``)."""
    if by_server:
        return orjson.dumps({"type": "unsubscribed", "channel": channel, "server": True})
    return orjson.dumps({"type": "unsubscribed", "channel": channel})


def error(code: str, message: str, channel: str | None = None, **extra: object) -> bytes:
    body: dict[str, object] = {"type": "error", "code": str(code), "message": message}
    if channel is not None:
        body["channel"] = channel
    body.update(extra)
    return orjson.dumps(body)
