"""How feed messages reach Centrifugo subscribers: a :class:`~sanic_feeds.wire.Wire` per flavour.

The hub frames each broker message once per wire present in a channel. For a Centrifugo
subscriber that framing is a translation: the feed body (``chat``, ``data``, notices, ``gap``)
becomes a ``push`` (``pub``, ``join``, ``leave``, ``unsubscribe``) in one WebSocket text frame.
Centrifugo pushes join and leave only to subscribers that asked for them (``join_leave``), so
there are two wires: the hub frames a message once for each, not once per member. A frame of
``b""`` means "nothing for this wire" and the hub skips it.

Pure code: no I/O.
"""

from __future__ import annotations

from .centrifugo_protocol import position_body, push_of
from .frames import payload_of, text_frame
from .wire import Wire


class CentrifugoPushes:
    """One text frame per push; join/leave notices only if ``join_leave``."""

    __slots__ = ("join_leave", "name")

    def __init__(self, join_leave: bool) -> None:
        self.join_leave = join_leave
        self.name = "centrifugo"

    def frame(self, body: bytes) -> bytes:
        pushed = push_of(body, self.join_leave)
        return text_frame(pushed) if pushed else b""

    def body_of(self, frame: bytes) -> bytes:
        return position_body(payload_of(frame))


CENTRIFUGO: Wire = CentrifugoPushes(join_leave=False)
"""Subscribers that did not ask for join/leave pushes."""

CENTRIFUGO_JOIN_LEAVE: Wire = CentrifugoPushes(join_leave=True)
"""Subscribers that asked for join/leave pushes (or whose namespace forces them)."""
