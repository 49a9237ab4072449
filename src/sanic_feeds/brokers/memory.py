"""In-memory broker: publish/subscribe inside one process.

The default backend: ``sanic-feeds serve`` works with nothing else installed. It is a product
feature, not a test double, and it passes the same contract suite as the Redis broker. Several
brokers can share one :class:`MemoryBus` to act as several nodes of one cluster inside a process
(useful in tests and for mounting two feeds apps in one server).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque

from ..envelope import seal
from ..history import (
    HistoryPage,
    HistoryPolicy,
    HistoryRules,
    Stored,
    build_page,
    new_epoch,
    stamp,
)
from ..presence.memory import MemoryPresence
from .base import Broker, DeliverFn, GapFn


class _ChannelHistory:
    """One channel's stored messages: a bounded ring, its offset counter and epoch."""

    __slots__ = ("entries", "epoch", "expires", "seq")

    def __init__(self, size: int) -> None:
        self.entries: deque[tuple[int, bytes]] = deque(maxlen=size)
        self.seq = 0
        self.epoch = new_epoch()
        self.expires = 0.0


class MemoryBus:
    """The shared medium of a set of in-process brokers: channel -> subscribed brokers."""

    def __init__(self) -> None:
        self._subscribers: dict[str, dict[MemoryBroker, None]] = {}
        self._histories: dict[str, _ChannelHistory] = {}
        self.presence = MemoryPresence()
        """The presence reports of the nodes on this bus."""
        self._published: OrderedDict[tuple[str, str], tuple[float, Stored]] = OrderedDict()

    def seen_publish(self, channel: str, key: str) -> Stored | None:
        """The result of an earlier publish with this idempotency key (two minutes), if any."""
        now = time.monotonic()
        while self._published and next(iter(self._published.values()))[0] < now - 120:
            self._published.popitem(last=False)
        found = self._published.get((channel, key))
        return None if found is None else found[1]

    def remember_publish(self, channel: str, key: str, stored: Stored) -> None:
        self._published[(channel, key)] = (time.monotonic(), stored)
        if len(self._published) > 100_000:
            self._published.popitem(last=False)

    def history_of(self, channel: str) -> _ChannelHistory | None:
        """The channel's live history, or None when it has none (never stored, or expired)."""
        found = self._histories.get(channel)
        if found is not None and found.expires <= time.monotonic():
            del self._histories[channel]
            return None
        return found

    def forget(self, channel: str) -> None:
        """Drop the channel's history (offsets and epoch included)."""
        self._histories.pop(channel, None)

    def store(self, channel: str, body: bytes, policy: HistoryPolicy) -> tuple[Stored, bytes]:
        found = self.history_of(channel)
        if found is None:
            found = self._histories[channel] = _ChannelHistory(policy.size)
        found.seq += 1
        stamped = stamp(body, found.seq, found.epoch)
        found.entries.append((found.seq, stamped))
        found.expires = time.monotonic() + policy.ttl
        return Stored(found.seq, found.epoch), stamped

    def publish(self, channel: str, payload: bytes) -> int:
        """Deliver synchronously to each subscribed broker; return how many got it."""
        subscribers = self._subscribers.get(channel)
        if not subscribers:
            return 0
        # A delivery may make a node unsubscribe; iterate over a snapshot.
        targets = tuple(subscribers)
        for broker in targets:
            broker._receive(channel, payload)
        return len(targets)

    def attach(self, channel: str, broker: MemoryBroker) -> None:
        self._subscribers.setdefault(channel, {})[broker] = None

    def detach(self, channel: str, broker: MemoryBroker) -> None:
        subscribers = self._subscribers.get(channel)
        if subscribers is not None:
            subscribers.pop(broker, None)
            if not subscribers:
                del self._subscribers[channel]

    def channels(self) -> frozenset[str]:
        return frozenset(self._subscribers)


class MemoryBroker(Broker):
    """A broker whose only medium is a :class:`MemoryBus` in this process."""

    def __init__(
        self, bus: MemoryBus | None = None, history: HistoryPolicy | HistoryRules | None = None
    ) -> None:
        self.bus = bus if bus is not None else MemoryBus()
        self.history_rules = HistoryRules.of(history)
        self._deliver: DeliverFn | None = None
        self._channels: set[str] = set()

    async def open(self, deliver: DeliverFn | None = None, on_gap: GapFn | None = None) -> None:
        self._deliver = deliver  # in one process nothing is lost between publish and deliver

    async def aclose(self) -> None:
        for channel in tuple(self._channels):
            self.bus.detach(channel, self)
        self._channels.clear()
        self._deliver = None

    async def publish(self, channel: str, payload: bytes) -> None:
        self.bus.publish(channel, payload)

    async def publish_stored(
        self, channel: str, body: bytes, idempotency_key: str | None = None
    ) -> Stored:
        if idempotency_key is not None:
            done = self.bus.seen_publish(channel, idempotency_key)
            if done is not None:
                return done
        stored, stamped = self.bus.store(channel, body, self.history_rules.for_channel(channel))
        if idempotency_key is not None:
            self.bus.remember_publish(channel, idempotency_key, stored)
        self.bus.publish(channel, seal(stamped))
        return stored

    async def history(
        self, channel: str, since: int | None, epoch: str | None, limit: int
    ) -> HistoryPage:
        found = self.bus.history_of(channel)
        if found is None:
            return build_page([], since=since, wanted_epoch=epoch, epoch="", top=0, limit=limit)
        # The ring is read from its newest end: a reader pays for what it missed, not for
        # the size of the history.
        return build_page(
            found.entries,
            since=since,
            wanted_epoch=epoch,
            epoch=found.epoch,
            top=found.seq,
            limit=limit,
        )

    async def remove_history(self, channel: str) -> None:
        self.bus.forget(channel)

    async def subscribe(self, channel: str) -> None:
        if self._deliver is None:
            raise RuntimeError("broker opened publish-only; pass deliver to open() to subscribe")
        self._channels.add(channel)
        self.bus.attach(channel, self)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        self.bus.detach(channel, self)

    async def check(self) -> dict[str, object]:
        return {"ok": True, "backend": "memory"}

    @property
    def subscriptions(self) -> frozenset[str]:
        return frozenset(self._channels)

    @property
    def url(self) -> str:
        return "memory://"

    def _receive(self, channel: str, payload: bytes) -> None:
        if self._deliver is not None and channel in self._channels:
            self._deliver(channel, payload)
