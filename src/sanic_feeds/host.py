"""What a session needs of its node, and what the node needs of a session: two small Protocols.

Sessions (per connection, above) and the node (per process, below) would otherwise import each
other. The node implements :class:`Host`; a session implements :class:`Participant` and
:class:`Attached`. Nothing here does anything: these are the seams that keep the dependencies
pointing one way (glue -> drivers -> session -> node services -> backends).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from .admission import UserSlots
from .codec import Codec
from .control import ControlCommand
from .history import HistoryPage, JoinPosition, Stored
from .hub import Sink
from .outbound import Flusher, Outbound
from .session_state import JoinOutcome, Limits
from .wire import Wire


class ChannelMember(Protocol):
    """A connection as a channel member, whatever its protocol: who, where its frames go."""

    @property
    def id(self) -> str: ...

    @property
    def user(self) -> str: ...

    @property
    def outbound(self) -> Sink: ...

    def send(self, body: bytes) -> None:
        """Queue one server message (already in the connection's protocol) for the client."""

    def overflow(self) -> None:
        """Its buffer (or parked frames) overflowed: cut it off as a slow consumer."""


class Participant(ChannelMember, Protocol):
    """A member speaking the feed protocol: framed by its wire, answered by its codec."""

    @property
    def wire(self) -> Wire: ...

    @property
    def codec(self) -> Codec: ...


class Attached(ChannelMember, Protocol):
    """A session as the node keeps it: closed on shutdown, pinged by the keepalive sweep."""

    @property
    def outbound(self) -> Outbound: ...

    @property
    def close_code(self) -> int | None: ...

    def close(self, code: int, reason: str) -> None: ...

    def keepalive(self, now: float, timeout: float) -> None: ...

    async def wait_finished(self) -> None: ...

    @property
    def user_key(self) -> str:
        """Who the server API calls ``user``: the credential's subject, else the name."""

    def control(self, command: ControlCommand) -> None:
        """A server API command for this connection (subscribe, unsubscribe, disconnect,
        refresh)."""


class Host(Protocol):
    """The node services a session uses: membership, publishing, presence, limits."""

    @property
    def limits(self) -> Limits: ...

    @property
    def flusher(self) -> Flusher: ...

    @property
    def client_buffer(self) -> int: ...

    @property
    def close_timeout(self) -> float: ...

    @property
    def draining(self) -> bool: ...

    @property
    def user_slots(self) -> UserSlots:
        """Connections per user over the cluster (``--user-connection-limit``)."""

    def attach(self, session: Attached) -> None:
        """The session opened: count it, close it on shutdown, ping it."""

    def identified(self, session: Attached, previous_key: str) -> None:
        """The session's user (``user_key``) became known after it opened."""

    def detach(self, session: Attached, high_water: int) -> None:
        """The session ended and left every channel."""

    def tally(self, counter: str) -> None:
        """Count an event (``client_messages``, ``rate_limited``)."""

    def track(self, cleanup: asyncio.Future[None]) -> asyncio.Future[None]:
        """Keep a session's cleanup alive until it ends (the node waits for it at stop)."""

    async def join(
        self,
        member: Participant,
        channel: str,
        since: int | None,
        epoch: str | None,
        greeting: tuple[bytes, ...] | None,
        ack: bytes | None = None,
    ) -> JoinOutcome:
        """Join; acknowledge once it holds (``greeting``, else ``ack`` or ``subscribed``);
        replay from ``since``. Or say why not: the broker could not subscribe, the channel is
        full."""

    async def resync(
        self, member: Participant, channel: str, since: int, epoch: str | None
    ) -> None:
        """Replay a joined channel from ``since``, then ``subscribed``."""

    async def join_at(
        self,
        member: ChannelMember,
        channel: str,
        *,
        since: int | None,
        epoch: str | None,
        wire: Wire,
        sink: Sink,
        acknowledge: Callable[[JoinPosition], bytes | None],
        info: object = None,
        chan_info: object = None,
    ) -> JoinOutcome:
        """Join, acknowledging with the stream position (and replay) in one reply, the member
        listed with its connection and channel info; see ``Memberships.join_at``."""

    async def leave(self, member: ChannelMember, channel: str) -> None: ...

    async def leave_all(self, member: ChannelMember, channels: list[str]) -> None:
        """Leave each channel, whatever happens to one of them (the connection ended)."""

    async def user_wait(self, user_key: str) -> float:
        """Seconds the per-user limit asks this user to wait (0: go ahead)."""

    async def publish_message(
        self, channel: str, body: bytes, idempotency_key: str | None = None
    ) -> Stored | None:
        """Publish a message (stored with an id unless history is off); raises
        ``BrokerUnavailable`` when it was not taken."""

    async def read_presence(self, channel: str) -> list[dict[str, object]]:
        """The channel's members on every node (public fields); raises ``BrokerUnavailable``."""

    async def read_history(
        self, channel: str, since: int | None, epoch: str | None, limit: int
    ) -> HistoryPage:
        """The channel's stored messages (see ``Broker.history``); raises ``BrokerUnavailable``."""
