"""Settles what nodes that stopped reporting had counted, once, on one surviving node.

A node that crashes leaves its per-node counts behind (a user's connections, a channel's
occupancy: ``Presence.add_count``). They stop counting when its report expires, but the
cluster must still learn the consequence once: a channel whose last members were on it is
now vacated. Every ``interval`` each node asks presence for the keys of dead nodes
(``Presence.claim_expired``: each dead node's keys go to one claimer), then counts each of
them with a zero change, which clears the dead counts and says whether the key lapsed. A
taker (occupancy) may do that count itself, in line with its own counts of the key, so its
events keep the order in which presence made them.

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


class CountReaper:
    """Claims dead nodes' counts every ``interval`` seconds and clears them."""

    def __init__(self, presence: Presence, node_id: str, interval: float) -> None:
        self._presence = presence
        self._node_id = node_id
        self._interval = interval
        self.takers: list[Callable[[str], bool]] = []
        """Called with each claimed key; one that returns True counts the key itself."""
        self._task: asyncio.Task[None] | None = None
        self.recount = Recount(presence, node_id)
        """Sets this node's own counts again where the cluster cleared them."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sanic-feeds:count-reaper")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self.recount.stop()

    async def sweep(self) -> None:
        """One pass: claim the dead nodes' keys, and clear (or hand over) each."""
        keys = await self._presence.claim_expired(self._node_id)
        if keys:
            log.info("clearing %d count(s) left by nodes that stopped reporting", len(keys))
        for key in keys:
            if not any(take(key) for take in self.takers):
                await self._presence.add_count(key, self._node_id, 0)
        await self.recount.check()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sweep()
            except BrokerUnavailable as exc:
                # What was claimed and not cleared is cleared by the key's next count.
                log.warning("counts of stopped nodes not cleared: %s", exc)
            except Exception:  # a fault in one sweep must not end the sweeps unseen
                log.exception("sweep of stopped nodes' counts failed")
