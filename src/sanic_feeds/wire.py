"""How a message is put on the wire for one kind of connection: the framing a transport needs.

The core (hub, session) deals in *bodies*: a server message as the JSON bytes the protocol
encoder produced. What a member's connection needs around a body differs by transport: a
WebSocket text frame, a Server-Sent Events event. A :class:`Wire` turns a body into those bytes
and back. The hub frames each message once per wire present in a channel, not once per member,
so adding a transport costs one framing per message, not one per delivery.

Pure code: no I/O.
"""

from __future__ import annotations

from typing import Protocol

from .envelope import open_envelope, seal
from .frames import payload_of, text_frame


class Wire(Protocol):
    """The framing of one kind of connection. Instances are shared and compared by identity."""

    @property
    def name(self) -> str:
        """For logs and metrics: ``websocket``, ``sse``."""

    def frame(self, body: bytes) -> bytes:
        """The bytes that carry ``body`` to a client of this kind."""

    def body_of(self, frame: bytes) -> bytes:
        """The body a frame of :meth:`frame` carries (used to filter replayed messages)."""


class WebSocketText:
    """One unmasked WebSocket text frame per message (RFC 6455)."""

    name = "websocket"

    def frame(self, body: bytes) -> bytes:
        return text_frame(body)

    def body_of(self, frame: bytes) -> bytes:
        return payload_of(frame)


WEBSOCKET: Wire = WebSocketText()
"""The wire of ``/feed/`` sockets."""


class BrokerPayloads:
    """Broker messages as they arrive (envelopes), for holding them back during a gap refill:
    the same replay rule then applies to them as to a member's frames."""

    name = "broker"

    def frame(self, body: bytes) -> bytes:
        return seal(body)

    def body_of(self, frame: bytes) -> bytes:
        try:
            return open_envelope(frame).body
        except ValueError:
            return b""  # malformed: not a stored message, so it is passed on (and dropped there)


BROKER_PAYLOADS: Wire = BrokerPayloads()
"""The wire of messages held back by the hub while it refills a gap."""
