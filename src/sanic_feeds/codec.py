"""A client protocol as the core sees it: how frames become commands and replies become bytes.

The core (the session state machine, membership) never encodes a reply itself: it asks the
connection's :class:`Codec`. Messages that travel through the broker to every member (chat,
data, join/leave notices, gap notices) are *bodies* in one canonical format, the feed JSON of
``protocol.py``, stored in history as such; each connection's ``Wire`` frames a body for its
transport (and a protocol with a message format of its own would translate it there, once per
message per wire). So adding a protocol adds a codec and a wire, and changes nothing in the
core. :data:`FEED_JSON` is the ``/feed/`` protocol (docs/protocol.md); Server-Sent Events use
it too, with their own wire.

Pure code: no I/O.
"""

from __future__ import annotations

from typing import Protocol

from . import protocol
from .protocol import Command


class Codec(Protocol):
    """One client protocol's parsing and replies."""

    @property
    def name(self) -> str: ...

    def parse(self, text: str | bytes) -> Command:
        """A client frame as a command; raises ``ProtocolError`` with a documented code."""

    def welcome(self, channel: str, client: str, user: str) -> bytes: ...

    def error(
        self, code: str, message: str, channel: str | None = None, **extra: object
    ) -> bytes: ...

    def pong(self) -> bytes: ...

    def subscribed(self, channel: str, by_server: bool = False) -> bytes:
        """``by_server``: the server API made the join (the client did not ask)."""

    def unsubscribed(self, channel: str, by_server: bool = False) -> bytes: ...

    def presence(self, channel: str, clients: list[dict[str, object]]) -> bytes: ...

    def recovered(
        self, channel: str, complete: bool, count: int, epoch: str, offset: int
    ) -> bytes: ...


class FeedJson:
    """The native protocol: JSON text frames, documented in docs/protocol.md."""

    name = "feed"

    def parse(self, text: str | bytes) -> Command:
        return protocol.parse_frame(text)

    def welcome(self, channel: str, client: str, user: str) -> bytes:
        return protocol.welcome(channel, client, user)

    def error(self, code: str, message: str, channel: str | None = None, **extra: object) -> bytes:
        return protocol.error(code, message, channel, **extra)

    def pong(self) -> bytes:
        return protocol.PONG

    def subscribed(self, channel: str, by_server: bool = False) -> bytes:
        return protocol.subscribed(channel, by_server)

    def unsubscribed(self, channel: str, by_server: bool = False) -> bytes:
        return protocol.unsubscribed(channel, by_server)

    def presence(self, channel: str, clients: list[dict[str, object]]) -> bytes:
        return protocol.presence(channel, clients)

    def recovered(self, channel: str, complete: bool, count: int, epoch: str, offset: int) -> bytes:
        return protocol.recovered(channel, complete, count, epoch, offset)


FEED_JSON: Codec = FeedJson()
"""The codec of ``/feed/`` sockets and ``/sse/`` streams."""
