"""When a channel gets its first member anywhere in the cluster, and loses its last one.

Each node counts, in the presence backend, whether it has members of a channel: 1 when its
own members of the channel go from none to some, 0 when they go back to none (the same
per-node counters the per-user connection limit uses, which leave out nodes whose reports
expired). The node whose change made the cluster-wide count 1 says "occupied"; the node whose
change made it 0 says "vacated". The change and the read are one step, so of two nodes whose first
members arrive at once exactly one sees 1, and of two whose last members leave at once exactly
one sees 0.

A node that crashes with members stops counting once its report expires (``node_ttl``). The
count that then removes its leftover count of a channel is told whether the channel lapsed
with it (no live node counts it): that one count, on one node, says "vacated". It is either
this node's next change of the channel, or the zero change :meth:`Occupancy.take` queues when
this node's :class:`~sanic_feeds.count_reaper.CountReaper` claims the dead node's channels
(every ``node_ttl / 3``), so the "vacated" comes at most about ``4/3 node_ttl`` after the crash.
Both go through the channel's one queue, so this node's events of a channel keep the order in
which presence decided them.

This node's counts are set, not added: each change makes the node's count of the channel 1
or 0, what it holds at that point of the queue, and the backend says what that moved the
cluster-wide total by. So a node that was cut off past ``node_ttl`` and comes back (its
counts were cleared and its channels said "vacated") sets them again (:meth:`Occupancy.
recount`, asked by :class:`~sanic_feeds.recount.Recount`): a channel that goes from zero to
held by it is "occupied" again, once, and one another node kept occupied gets nothing; a leave
whose count had been cleared says nothing (the "vacated" was said). Recounts go through the
same queue as the changes, so they never undo a change made after them.

What this cannot see (docs/hooks.md): a channel whose members come and go on one node faster
than the backend answers is counted in order, per channel, so its events stay in order but
may lag. When the presence backend is down the change is not counted and no event is sent
(logged).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .errors import BrokerUnavailable
from .presence.base import CountChange, Counted, Presence

log = logging.getLogger(__name__)

MAX_RETRIED = 100_000
"""Channels kept to be counted again at the next sweep after their count failed, at most."""

KEY_PREFIX = "#room:"
"""Counter names in the presence backend (``#`` cannot start a user id the server counts)."""


class Occupancy:
    """Watches this node's members per channel and reports the cluster's first and last."""

    def __init__(
        self,
        presence: Presence,
        node_id: str,
        local_members: Callable[[str], int],
        emit: Callable[[str, str], None],
    ) -> None:
        self._presence = presence
        self._node_id = node_id
        self._local_members = local_members
        self._emit = emit
        """Called with ("channel.occupied" or "channel.vacated", channel)."""
        self._held: set[str] = set()
        """Channels this node counts itself as having members of."""
        self._queues: dict[str, list[int | None]] = {}
        """Channel -> the counts waiting: 1 or 0 (this node's count of it, set), or None (a
        zero change, clearing what a claimed dead node left)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._retry: set[str] = set()
        """Channels a claimed dead node counted whose zero change failed: the claim took them
        from the backend, so they are counted again at the next sweep (:meth:`settle`), or
        a channel nobody touches again would never be "vacated"."""
        self._unset: set[str] = set()
        """Channels whose set (1 or 0) failed: the backend may hold either value, so the next
        sweep sets them again to what this node holds (its missed event comes then)."""

    def changed(self, channel: str) -> None:
        """The hub's members of ``channel`` changed (called from its ``on_change``)."""
        if channel.startswith("#"):
            return  # the node's own channels (the control channel)
        has = self._local_members(channel) > 0
        if has == (channel in self._held):
            return
        if has:
            self._held.add(channel)
        else:
            self._held.discard(channel)
        self._enqueue(channel, 1 if has else 0)

    def take(self, key: str) -> bool:
        """A key a dead node counted, claimed by this node (``CountReaper``): a channel's is
        counted here with a zero change, in line with this node's own counts of it."""
        if not key.startswith(KEY_PREFIX):
            return False
        self._enqueue(key[len(KEY_PREFIX) :], None)
        return True

    @property
    def holds_counts(self) -> bool:
        """Whether this node counts itself as having members of any channel."""
        return bool(self._held)

    async def recount(self) -> None:
        """Set this node's count of each channel it holds again (its counts may have been
        cleared while it was cut off). A channel it no longer holds was set to 0 by the change
        that let it go."""
        for channel in sorted(self._held):
            self._enqueue(channel, 1)

    async def settle(self) -> None:
        """Count again what failed: the claimed channels with a zero change, the channels
        whose set failed with what this node holds of them now."""
        channels, self._retry = self._retry, set()
        for channel in sorted(channels):
            self._enqueue(channel, None)
        unset, self._unset = self._unset, set()
        for channel in sorted(unset):
            self._enqueue(channel, 1 if channel in self._held else 0)

    def _retry_later(self, channel: str, waiting: set[str]) -> None:
        if len(waiting) < MAX_RETRIED:
            waiting.add(channel)
        else:
            log.warning("occupancy of %s dropped: too many waiting to be counted", channel)

    def _enqueue(self, channel: str, count: int | None) -> None:
        queue = self._queues.get(channel)
        if queue is not None:  # a task is counting this channel: it takes this change next
            queue.append(count)
            return
        self._queues[channel] = [count]
        task = asyncio.ensure_future(self._count(channel))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _count(self, channel: str) -> None:
        queue = self._queues[channel]
        key = KEY_PREFIX + channel
        try:
            while queue:
                count = queue.pop(0)
                try:
                    if count is None:
                        self._said(channel, await self._presence.add_count(key, self._node_id, 0))
                    else:
                        self._said(
                            channel, await self._presence.set_count(key, self._node_id, count)
                        )
                        self._unset.discard(channel)
                except BrokerUnavailable as exc:
                    log.warning("occupancy of %s not counted: %s", channel, exc)
                    self._retry_later(channel, self._retry if count is None else self._unset)
        finally:
            del self._queues[channel]

    def _said(self, channel: str, counted: Counted | CountChange) -> None:
        """The events one count of ``channel`` makes."""
        if counted.lapsed:  # its last holder stopped reporting before this count
            self._emit("channel.vacated", channel)
        if not isinstance(counted, CountChange):
            return
        if counted.change > 0 and counted.total == counted.change:
            self._emit("channel.occupied", channel)
        elif counted.change < 0 and counted.total == 0 and not counted.lapsed:
            self._emit("channel.vacated", channel)

    async def aclose(self) -> None:
        """Wait (briefly) for the counts in flight, so a clean stop says "vacated"."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2.0)
