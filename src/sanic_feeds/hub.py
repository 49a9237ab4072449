"""The hub: this node's channel members, its broker subscriptions, and the fan-out.

Membership is changed synchronously (no ``await`` between deciding and recording), and the broker
subscription of a channel is then *reconciled* with it: a per-channel lock serializes the
subscribe/unsubscribe calls, and after every call the loop looks again at the membership it must
match. Whatever interleaving of joins and leaves happens, when the last reconcile of a channel
finishes the node is subscribed exactly when the channel has local members. That is the property
the stress tests check; the earlier design (a per-channel lock taken and released by different
clients, a cache entry deleted after an ``await``) broke it.

The fan-out (``deliver``) frames each message once and queues the same bytes on every member's
bounded outbound buffer. It never awaits, never copies the member table, and so never sees it
change under it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping
from typing import Protocol

from . import protocol
from .brokers import Broker
from .envelope import open_envelope
from .errors import BrokerUnavailable
from .history import HistoryPage
from .presence import Member
from .replay import ReplayBuffer
from .stream_positions import Position, StreamPositions
from .wire import BROKER_PAYLOADS, WEBSOCKET, Wire

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Where a member's frames go: its ``Outbound`` buffer, or a ``ReplayBuffer`` for a while."""

    def send(self, frame: bytes) -> None: ...


class Hub:
    """Local members per channel, kept in step with the broker's subscriptions."""

    def __init__(self, broker: Broker, history_limit: int = 0, park_limit: int = 0) -> None:
        self._broker = broker
        self._park_limit = park_limit or MAX_PARKED_BYTES
        self._history_limit = history_limit
        self._positions = StreamPositions()
        """Where each channel's stored messages stand here, and the members further on."""
        self._parked: dict[str, ReplayBuffer] = {}
        """Channels being recovered after a gap -> broker payloads held back meanwhile."""
        self._recoveries: set[asyncio.Task[None]] = set()
        self._members: dict[str, dict[str, Sink]] = {}
        """Channel -> client id -> where its frames go: every local member."""
        self._by_wire: dict[str, dict[Wire, dict[str, Sink]]] = {}
        """The same members grouped by wire: each message is framed once per wire."""
        self._records: dict[str, dict[str, Member]] = {}
        """The same members as presence shows them (who, since when, their info), for the reports.
        The hub is the one owner of membership: all three tables change in one step."""
        self.on_change: Callable[[str], None] | None = None
        """Called with a channel whose membership changed (the room reporter listens)."""
        self._subscribed: set[str] = set()
        self._unsure: set[str] = set()
        """Channels whose last SUBSCRIBE failed: it may or may not hold at the broker."""
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_users: dict[str, int] = {}
        self.messages_in = 0
        """Broker messages received for channels with local members."""
        self.deliveries = 0
        """Frames queued to members (one per member per message)."""
        self.observe_latency: Callable[[float], None] | None = None
        """Called with each message's publish-to-deliver time (seconds), once per node."""
        self.gaps = 0
        self.recovered = 0
        """Messages a node re-fetched from the history after a gap."""
        self.taps: dict[str, Callable[[bytes], None]] = {}
        """Channels the node itself listens to, with no members (the control channel): their
        payloads go to the tap as they came, looked up only when a channel has no members."""

    # -- membership ------------------------------------------------------------------------------

    async def join(
        self,
        channel: str,
        client_id: str,
        outbound: Sink,
        wire: Wire = WEBSOCKET,
        record: Member | None = None,
    ) -> None:
        """Add a member whose frames are framed for ``wire``; return once the node receives
        the channel.

        Raises :class:`BrokerUnavailable` (and leaves the member out) when the broker cannot
        subscribe.
        """
        self._members.setdefault(channel, {})[client_id] = outbound
        self._by_wire.setdefault(channel, {}).setdefault(wire, {})[client_id] = outbound
        if record is not None:
            self._records.setdefault(channel, {})[client_id] = record
            if self.on_change is not None:
                self.on_change(channel)
        try:
            await self._reconcile(channel)
        except BaseException:
            self._remove(channel, client_id)
            # Settle the subscription without the failed member; errors are logged there.
            await self._settle(channel)
            raise

    def swap(self, channel: str, client_id: str, sink: Sink, holds: Position | None = None) -> None:
        """Point a member at another sink, with no await in between (nothing can slip past);
        ``holds``: the end of its replay: stored messages up to it that come later skip it."""
        members = self._members.get(channel)
        if members is not None and client_id in members:
            self._positions.hold(channel, client_id, holds)
            members[client_id] = sink
            for group in self._by_wire[channel].values():
                if client_id in group:
                    group[client_id] = sink

    async def leave(self, channel: str, client_id: str) -> None:
        """Remove a member; unsubscribe the node when it was the channel's last local member."""
        if self._remove(channel, client_id):
            await self._settle(channel)

    def members(self, channel: str) -> int:
        members = self._members.get(channel)
        return len(members) if members else 0

    def records(self, channel: str) -> Mapping[str, Member]:
        """This node's members of ``channel`` as presence lists them, by client id (a live
        view: copy it to keep it across an await)."""
        return self._records.get(channel) or {}

    def record_channels(self) -> list[str]:
        """Channels with members presence lists."""
        return list(self._records)

    def rooms(self) -> dict[str, int]:
        """Local member count per channel."""
        return {channel: len(members) for channel, members in self._members.items()}

    @property
    def subscribed(self) -> frozenset[str]:
        """Channels the hub believes the broker is (or may be) subscribed to."""
        return frozenset(self._subscribed | self._unsure)

    def _remove(self, channel: str, client_id: str) -> bool:
        members = self._members.get(channel)
        if members is None or members.pop(client_id, None) is None:
            return False
        self._positions.forget(channel, client_id)
        groups = self._by_wire[channel]
        for wire, group in list(groups.items()):
            if group.pop(client_id, None) is not None and not group:
                del groups[wire]
        records = self._records.get(channel)
        if records is not None and records.pop(client_id, None) is not None:
            if not records:
                del self._records[channel]
            if self.on_change is not None:
                self.on_change(channel)
        if not members:
            del self._members[channel]
            del self._by_wire[channel]
            self._positions.drop(channel)
        return True

    async def _settle(self, channel: str) -> None:
        try:
            await self._reconcile(channel)
        except BrokerUnavailable as exc:
            log.warning("could not update the subscription of %r: %s", channel, exc)

    async def _reconcile(self, channel: str) -> None:
        lock = self._locks.get(channel)
        if lock is None:
            lock = self._locks[channel] = asyncio.Lock()
        self._lock_users[channel] = self._lock_users.get(channel, 0) + 1
        try:
            async with lock:
                while True:
                    wanted = channel in self._members
                    unsure = channel in self._unsure
                    if wanted == (channel in self._subscribed) and not unsure:
                        return
                    if wanted:
                        try:
                            await self._broker.subscribe(channel)
                        except BaseException:
                            # The subscription may exist now (the request can have reached the
                            # broker), or not: the next reconcile subscribes again if the
                            # channel is still wanted, or unsubscribes it if not.
                            self._subscribed.discard(channel)
                            self._unsure.add(channel)
                            raise
                        self._unsure.discard(channel)
                        self._subscribed.add(channel)
                    else:
                        self._subscribed.discard(channel)
                        self._unsure.discard(channel)
                        await self._broker.unsubscribe(channel)
        finally:
            users = self._lock_users[channel] - 1
            if users:
                self._lock_users[channel] = users
            else:
                del self._lock_users[channel]
                del self._locks[channel]

    # -- fan-out ---------------------------------------------------------------------------------

    def gap(self, channel: str) -> None:
        """Broker callback: the node may have missed messages of ``channel``.

        With history, the node fills the gap itself: it holds back new messages of the channel,
        fans out what the history has after the last message it delivered, then releases the
        held-back ones it did not just replay. Members see every message once, in order, and
        nothing else. Only when that is impossible do they get a ``gap`` notice (they can then
        resync with ``subscribe`` + ``since``, or reload).
        """
        if not self._members.get(channel) or channel in self._parked:
            return
        self.gaps += 1
        last = self._positions.last.get(channel)
        if last is None or self._history_limit <= 0:
            self._notify_gap(channel)
            return
        self._parked[channel] = ReplayBuffer(self._park_limit, BROKER_PAYLOADS)
        task = asyncio.create_task(
            self._recover(channel, *last), name=f"sanic-feeds:recover:{channel}"
        )
        self._recoveries.add(task)
        task.add_done_callback(self._recoveries.discard)

    async def _recover(self, channel: str, epoch: str, offset: int) -> None:
        """Fan out what the history has after ``offset``, then the held-back messages; read
        again while the first held-back one is further on (messages stored after the read,
        before the subscription delivered again): never release them over a hole."""
        for _ in range(RECOVERY_READS):
            page = await read_history(self._broker, channel, offset, epoch, self._history_limit)
            if not self._members.get(channel) or (parked := self._parked.get(channel)) is None:
                self._parked.pop(channel, None)
                return
            for body in page.messages:  # members who hold one already are skipped
                self._fan_out(channel, body, "")
            self.recovered += len(page.messages)
            epoch, offset = self._positions.last.get(channel, (epoch, offset))
            if not page.complete or parked.next_stored(epoch, offset) in (None, offset + 1):
                break
        if (parked := self._parked.pop(channel, None)) is None:
            return
        # The same replay rule as a member's resync: what the history just gave is dropped.
        for payload in parked.unseen(epoch, offset):
            self.deliver(channel, payload)
        if not page.complete or parked.overflowed:
            self._notify_gap(channel)

    def _notify_gap(self, channel: str) -> None:
        if self._members.get(channel):
            self._fan_out(channel, protocol.gap(channel), "")

    def deliver(self, channel: str, payload: bytes) -> None:
        """Broker callback: queue one message for every local member of ``channel``."""
        members = self._members.get(channel)
        if not members:
            tap = self.taps.get(channel)
            if tap is not None:
                tap(payload)
            return
        parked = self._parked.get(channel)
        if parked is not None:
            parked.send(payload)
            return
        try:
            body, exclude, sent_at = open_envelope(payload)
        except ValueError:
            log.warning("dropped a malformed broker message on %r", channel)
            return
        self.messages_in += 1
        if sent_at is not None and self.observe_latency is not None:
            self.observe_latency(time.time() - sent_at)
        self._fan_out(channel, body, exclude)

    def _fan_out(self, channel: str, body: bytes, exclude: str) -> None:
        skip = self._positions.fanned_out(channel, body, exclude)
        self.deliveries += fan_out(self._by_wire[channel], body, skip)


def fan_out(groups: dict[Wire, dict[str, Sink]], body: bytes, skip: Collection[str] = ()) -> int:
    """Frame ``body`` once per wire and queue it on every member not in ``skip``; return how
    many frames were queued. A wire may have nothing to send for a body (a notice its members
    did not ask for): its members are skipped."""
    count = 0
    for wire, members in groups.items():
        frame = wire.frame(body)
        if not frame:
            continue
        if skip:
            for client_id, sink in members.items():
                if client_id not in skip:
                    sink.send(frame)
                    count += 1
        else:
            for sink in members.values():
                sink.send(frame)
            count += len(members)
    return count


RECOVERY_READS = 5
"""History reads one gap refill may take while held-back messages show a hole after it."""

HISTORY_ATTEMPTS = 8
"""Tries to read a history (about 5 s with backoff) before a replay gives up."""

MAX_PARKED_BYTES = 8 * 1024 * 1024
"""Most bytes of broker messages held back per channel while the node fills a gap; past it they
are dropped and members get a ``gap`` notice (they resync with ``since``)."""


async def read_history(
    broker: Broker, channel: str, since: int, epoch: str | None, limit: int
) -> HistoryPage:
    """Read a history, retrying briefly: right after a restart Redis accepts SUBSCRIBE (which
    is what reveals a gap) while it still refuses reads as it loads its data."""
    delay = 0.1
    for attempt in range(HISTORY_ATTEMPTS):
        try:
            return await broker.history(channel, since, epoch, limit)
        except BrokerUnavailable as exc:
            if attempt == HISTORY_ATTEMPTS - 1:
                log.warning("no history for %s: %s", channel, exc)
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
    return HistoryPage(complete=False)
