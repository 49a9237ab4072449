"""Settles what nodes that stopped reporting had counted, once, on one surviving node.

A node that crashes leaves its per-node counts behind (a user's connections, a channel's
occupancy: ``Presence.add_count``). They stop counting when its report expires, but the
cluster must still learn the consequence once: a channel whose last members were on it is
now vacated. Every ``interval`` each node asks presence for the keys of dead nodes
(``Presence.claim_expired``: each dead node's keys go to one claimer), then counts each of
them with a zero change, which clears the dead counts and says whether the key lapsed. A
taker (occupancy) may do that count itself, in line with its own counts of the key, so its
events keep the order in which presence made them.

A claimed key whose count fails (the backend down meanwhile) is kept and counted again at the
next sweep, up to :data:`MAX_RETRIED` keys: the claim already took it from the backend, so
nobody else would clear it (and a channel nobody touches again would never be "vacated").
Each sweep also lets every count holder set again what it failed to count (``settle``).

Each sweep also asks whether this node itself was taken for dead and had its counts cleared
(cut off or paused past ``node_ttl``, then back): :class:`~sanic_feeds.recount.Recount` then
has them set again.

It costs, per interval and node, one read of who counts and who is live (no scan of keys);
per dead node, one claim by each node that notices, and one count per key it held, made by
the node that won the claim. It must never count anything but a zero change of other nodes'
keys.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .errors import BrokerUnavailable
from .presence import Presence
from .recount import Recount
from .tasks import cancel_and_wait

log = logging.getLogger(__name__)

MAX_RETRIED = 100_000
"""Claimed keys kept for the next sweep after their count failed, at most: past it (a backend
down for long while many nodes die) the rest is left to each key's next count."""


class CountReaper:
    """Claims dead nodes' counts every ``interval`` seconds and clears them."""

    def __init__(self, presence: Presence, node_id: str, interval: float) -> None:
        self._presence = presence
        self._node_id = node_id
        self._interval = interval
        self.takers: list[Callable[[str], bool]] = []
        """Called with each claimed key; one that returns True counts the key itself."""
        self._task: asyncio.Task[None] | None = None
        self._retry: set[str] = set()
        """Claimed keys whose zero count failed: counted again at the next sweep."""
        self.recount = Recount(presence, node_id)
        """Sets this node's own counts again where the cluster cleared them."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sanic-feeds:count-reaper")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self.recount.stop()

    async def sweep(self) -> None:
        """One pass: claim the dead nodes' keys, and clear (or hand over) each, with those
        whose count failed before; then the holders' settling and this node's recount. The
        first failure is raised once every part was tried."""
        failed: BrokerUnavailable | None = None
        try:
            claimed = await self._presence.claim_expired(self._node_id)
        except BrokerUnavailable as exc:
            claimed, failed = [], exc
        if claimed:
            log.info("clearing %d count(s) left by nodes that stopped reporting", len(claimed))
        keys, self._retry = sorted(set(claimed) | self._retry), set()
        for key in keys:
            if any(take(key) for take in self.takers):
                continue
            try:
                await self._presence.add_count(key, self._node_id, 0)
            except BrokerUnavailable as exc:
                failed = failed or exc
                self.retry_later(key)
        for holder in list(self.recount.holders):
            try:
                await holder.settle()
            except BrokerUnavailable as exc:
                failed = failed or exc
        try:
            await self.recount.check()
        except BrokerUnavailable as exc:
            failed = failed or exc
        if failed is not None:
            raise failed

    def retry_later(self, key: str) -> None:
        """Count ``key`` (a claimed dead node's) with a zero change at the next sweep: its
        count failed (a taker's too)."""
        if len(self._retry) < MAX_RETRIED:
            self._retry.add(key)
        else:
            log.warning("claimed count of %r dropped: too many waiting to be counted", key)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sweep()
            except BrokerUnavailable as exc:
                # What was claimed and not cleared is counted again at the next sweep.
                log.warning("counts of stopped nodes not cleared: %s", exc)
            except Exception:  # a fault in one sweep must not end the sweeps unseen
                log.exception("sweep of stopped nodes' counts failed")
