"""How Centrifugo frames reach a client: per transport, a framing and its :class:`~.wire.Wire`\\ s.

A Centrifugo client connects over a WebSocket, or over one of the SDKs' emulation transports
(an HTTP streaming response, or a Server-Sent Events stream). The protocol's frames are the
same JSON on all of them; only what carries each frame differs: a WebSocket text frame, a line
of an HTTP stream, the ``data`` of an SSE event. A :class:`CentrifugoFraming` is that carrier,
with everything a connection needs from it: its replies framed, its ping, and the two wires the
hub frames feed messages with.

The hub frames each broker message once per wire present in a channel. For a Centrifugo
subscriber that framing is a translation: the feed body (``chat``, ``data``, notices, ``gap``)
becomes a ``push`` (``pub``, ``join``, ``leave``, ``unsubscribe``). Centrifugo pushes join and
leave only to subscribers that asked for them (``join_leave``), so there are two wires per
transport: the hub frames a message once for each present, not once per member. A frame of
``b""`` means "nothing for this wire" and the hub skips it.

Pure code: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable

from .centrifugo_protobuf import commands_as_json, reply_as_json, reply_of
from .centrifugo_protocol import PING, position_body, push_of
from .frames import binary_frame, payload_of, text_frame
from .wire import Wire


class CentrifugoPushes:
    """Feed bodies as pushes, one frame each; join/leave notices only if ``join_leave``."""

    __slots__ = ("_frame", "_payload_of", "join_leave", "name")

    def __init__(self, framing: CentrifugoFraming, join_leave: bool) -> None:
        self._frame = framing.frame
        self._payload_of = framing.payload_of
        self.join_leave = join_leave
        self.name = f"centrifugo-{framing.name}"

    def frame(self, body: bytes) -> bytes:
        pushed = push_of(body, self.join_leave)
        return self._frame(pushed) if pushed else b""

    def body_of(self, frame: bytes) -> bytes:
        return position_body(self._payload_of(frame))


class CentrifugoFraming:
    """What carries one Centrifugo frame on a transport, and the wires built on it.

    Instances are made once per transport (below) and shared: the hub tells wires apart by
    identity.
    """

    __slots__ = (
        "commands",
        "frame",
        "join_leave",
        "name",
        "payload_of",
        "ping",
        "pushes",
        "transport",
    )

    def __init__(
        self,
        name: str,
        frame: Callable[[bytes], bytes],
        payload_of: Callable[[bytes], bytes],
        commands: Callable[[str | bytes], str | bytes] = lambda message: message,
        transport: str = "",
    ) -> None:
        self.name = name
        self.transport = transport or name
        """Centrifugo's name of the transport, as hooks and proxy payloads give it:
        ``websocket``, ``sse`` or ``http_stream`` (whatever the encoding)."""
        self.commands = commands
        """A client message as the JSON encoding's frame, for the state machine."""
        self.frame = frame
        """The bytes that carry one frame (a reply, a push) to the client."""
        self.payload_of = payload_of
        """The frame that :attr:`frame` wrapped."""
        self.ping = frame(PING)
        """The server's ping, framed once."""
        self.pushes: Wire = CentrifugoPushes(self, join_leave=False)
        """The wire of subscribers that did not ask for join/leave pushes."""
        self.join_leave: Wire = CentrifugoPushes(self, join_leave=True)
        """The wire of subscribers that asked for join/leave pushes (or whose namespace
        forces them)."""

    def wire(self, join_leave: bool) -> Wire:
        return self.join_leave if join_leave else self.pushes


def _sse_event(frame: bytes) -> bytes:
    # One event per frame; orjson never writes a raw newline, so one data line is enough.
    return b"data: %b\n\n" % frame


def _sse_payload(event: bytes) -> bytes:
    return event[6:-2]


def _line(frame: bytes) -> bytes:
    return frame + b"\n"


def _line_payload(line: bytes) -> bytes:
    return line[:-1]


WEBSOCKET_FRAMING = CentrifugoFraming("websocket", text_frame, payload_of)
"""``/connection/websocket``: one text frame per Centrifugo frame."""

SSE_FRAMING = CentrifugoFraming("sse", _sse_event, _sse_payload)
"""``/connection/sse``: one unnamed event per frame (the SDK's ``onmessage`` takes each)."""

HTTP_STREAM_FRAMING = CentrifugoFraming("http_stream", _line, _line_payload)
"""``/connection/http_stream``: one frame per line of the response body (JSON encoding)."""


def _protobuf_frame(frame: bytes) -> bytes:
    reply = reply_of(frame)
    return binary_frame(reply) if reply else b""


def _protobuf_payload(frame: bytes) -> bytes:
    return reply_as_json(payload_of(frame))


PROTOBUF_FRAMING = CentrifugoFraming(
    "protobuf", _protobuf_frame, _protobuf_payload, commands_as_json, transport="websocket"
)
"""``/connection/websocket`` with the ``centrifuge-protobuf`` subprotocol: one binary frame of
varint-delimited messages per frame of the JSON encoding (``centrifugo_protobuf.py``)."""

HTTP_STREAM_PROTOBUF_FRAMING = CentrifugoFraming(
    "http_stream_protobuf", reply_of, reply_as_json, commands_as_json, transport="http_stream"
)
"""``/connection/http_stream`` with ``Content-Type: application/octet-stream``: the response
body is the varint-delimited Replies themselves."""

CENTRIFUGO: Wire = WEBSOCKET_FRAMING.pushes
"""WebSocket subscribers that did not ask for join/leave pushes."""

CENTRIFUGO_JOIN_LEAVE: Wire = WEBSOCKET_FRAMING.join_leave
"""WebSocket subscribers that asked for join/leave pushes."""
