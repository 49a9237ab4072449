"""Which master each channel of a node is subscribed on, kept in step with the slot map.

A shard channel can be subscribed only on the master serving its slot, so when a slot gets a
new master (a failover, a migration) its channels must follow, and whatever was published
meanwhile never reached this node: after the move the hub hears of a gap for each moved channel
(``on_gap``) and refills it from the history. Redis tells of a move three ways, each handled:
a ``MOVED`` refusal of ``SSUBSCRIBE``, a ``sunsubscribe`` it sends of its own accord, or a
master that is gone; each makes the router read the map again, and every reading ends in
:meth:`ShardedSubscriptions.rehome`.

What it must never do: leave a wanted channel unsubscribed once the map names its master, or
report a gap for a channel that only just joined (its member has nothing to miss yet).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..errors import BrokerUnavailable
from .base import DeliverFn, GapFn
from .cluster_slots import key_slot
from .redis_cluster_router import ClusterRouter
from .redis_shard import Shard
from .redis_subscriber import Moved, Refused

log = logging.getLogger(__name__)


class ShardedSubscriptions:
    """``subscribe``/``unsubscribe`` from any task; ``rehome`` after every reading of the map."""

    def __init__(
        self,
        router: ClusterRouter,
        channel_key: Callable[[str], bytes],
        deliver: DeliverFn,
        on_gap: GapFn | None,
        confirm_timeout: float,
    ) -> None:
        self._router = router
        self._channel_key = channel_key
        self._deliver = deliver
        self._on_gap = on_gap
        self._confirm_timeout = confirm_timeout
        self.channels: dict[bytes, str] = {}
        """Shard channel -> channel, for every channel this node wants."""
        self._home: dict[bytes, Shard] = {}
        """Shard channel -> the master it is (being) subscribed on."""
        self._joining: set[bytes] = set()
        """Channels whose ``subscribe`` is running: it places them itself."""
        self.probes: dict[bytes, Shard] = {}
        """Each master's probe channel -> its shard."""
        self._moves: set[asyncio.Task[None]] = set()
        self._held: dict[bytes, list[bytes]] = {}
        """Channels being moved to another master -> their messages meanwhile, held back until
        the gap is reported (see ``_follow``)."""
        self.moved = 0
        """Subscriptions moved to another master (each reported as a gap)."""

    async def aclose(self) -> None:
        for task in list(self._moves):
            task.cancel()
        await asyncio.gather(*self._moves, return_exceptions=True)
        self.channels.clear()
        self._home.clear()
        self.probes.clear()

    async def subscribe(self, channel: str) -> None:
        key = self._channel_key(channel)
        self.channels[key] = channel  # on the books from here on, as on a single Redis
        self._joining.add(key)
        try:
            async with asyncio.timeout(self._confirm_timeout):
                while True:
                    shard = await self._router.shard_for(key_slot(key))
                    self._place(key, shard)
                    try:
                        await shard.require_subscriber().subscribe(key)
                        return
                    except (Refused, Moved):  # another master serves it: follow the new map
                        await self._router.refresh()
                        await asyncio.sleep(0.05)
        except TimeoutError:
            raise BrokerUnavailable(
                f"no SSUBSCRIBE confirmation for {channel!r} in {self._confirm_timeout:g} s"
            ) from None
        finally:
            self._joining.discard(key)

    def unsubscribe(self, channel: str) -> None:
        key = self._channel_key(channel)
        self.channels.pop(key, None)
        home = self._home.pop(key, None)
        if home is not None and home.subscriber is not None and not home.closed:
            home.subscriber.unsubscribe(key)

    def _place(self, key: bytes, shard: Shard) -> None:
        """Put ``key`` on ``shard``'s books, taking it off the master it was on."""
        old = self._home.get(key)
        if old is not None and old is not shard and old.subscriber is not None and not old.closed:
            old.subscriber.move_out(key)
        self._home[key] = shard

    def rehome(self) -> None:
        """Move every channel whose slot has another master (or that its master dropped), and
        report a gap for it once it is subscribed there."""
        self.probes = {k: s for k, s in self.probes.items() if not s.closed}
        for key in list(self.channels):
            shard = self._router.owner(key_slot(key))
            if shard is None:
                continue  # no master yet: the next reading places it
            if key in self._joining:
                self._place(key, shard)  # its subscribe() gets Moved and follows
                continue
            if self._home.get(key) is shard and key in shard.require_subscriber().keys:
                continue
            self._place(key, shard)
            task = asyncio.ensure_future(self._follow(key, shard))
            self._moves.add(task)
            task.add_done_callback(self._moves.discard)

    async def _follow(self, key: bytes, shard: Shard) -> None:
        """Subscribe ``key`` on its new master, then report the gap the move may have made.

        The new subscription's first messages can arrive before this coroutine resumes after
        the subscription is confirmed (they come in the same read): delivered at once, they
        would move the hub's position past the messages stored while no master had the
        channel, and its refill would start after them. So they are held back until the gap is
        reported (the hub then holds live messages itself), then handed over in order.
        """
        held = self._held.setdefault(key, [])
        try:
            await shard.require_subscriber().subscribe(key)
        except BrokerUnavailable as exc:
            log.info("moving a subscription to %r failed (%s); trying again", shard, exc)
            self._router.wake()
            self._release(key)
            return
        channel = self.channels.get(key)
        if channel is not None and self._home.get(key) is shard and self._held.get(key) is held:
            self.moved += 1
            log.info("subscription of %r moved to %r; members may have a gap", channel, shard)
            if self._on_gap is not None:
                self._on_gap(channel)
        self._release(key)

    def _release(self, key: bytes) -> None:
        """Deliver what was held back for ``key`` while it moved."""
        channel = self.channels.get(key)
        for data in self._held.pop(key, ()):
            if channel is not None:
                self._deliver(channel, data)

    # -- callbacks of the shards' subscribers ----------------------------------------------------

    def on_message(self, key: bytes, data: bytes) -> None:
        channel = self.channels.get(key)
        held = self._held.get(key)
        if held is not None and channel is not None:
            held.append(data)
            return
        if channel is not None:
            try:
                self._deliver(channel, data)
            except Exception:  # a bug in one delivery must not break the connection's callback
                log.exception("delivery to channel %r failed", channel)
            return
        shard = self.probes.get(key)
        if shard is not None and shard.probe is not None:
            shard.probe.seen(data)

    def on_resubscribed(self, key: bytes) -> None:
        channel = self.channels.get(key)
        if channel is not None and self._on_gap is not None:
            log.info("subscription of %r re-established; members may have a gap", channel)
            self._on_gap(channel)

    def on_refused(self, refused: Refused) -> None:
        self._router.wake()

    def on_dropped(self, key: bytes) -> None:
        log.info("Redis Cluster moved the slot of %r; following it", key)
        self._router.wake()
