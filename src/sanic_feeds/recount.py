"""Re-establishes this node's own counts when the cluster may have cleared them.

A node cut off from the presence backend (or paused) for longer than ``node_ttl`` looks dead
to the others, though its connections stayed open: counts made meanwhile drop its fields, a
survivor claims its keys (``CountReaper`` on that node) and channels it was the last holder
of get their ``vacated``. When it is back, its members would go uncounted: the per-user limit
would let a user past it, and occupancy would take its channels for empty.

So the node watches for it: its room reporter says when a report came later than ``node_ttl``
after the one before (:meth:`Recount.lapsed`), and every sweep of its count reaper asks the
backend whether it was claimed or lost its counts (:meth:`Recount.check`). Then each holder
(the per-user slots, occupancy) sets its counts again to what the node holds, through the same
per-key order as its own changes: setting is idempotent, so a recount that finds nothing
cleared changes nothing, a second one is harmless, and a channel that goes from zero to held
by this node says ``occupied`` once (its ``vacated`` was said when it was cleared).

It costs little while the node reports in time: per sweep where it holds counts, a read of
the live nodes and one small read (Redis: one EXISTS; NATS: one key read). A recount costs
one count per key it holds. It must never count anything but this node's own keys, at their
local value.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from .errors import BrokerUnavailable
from .presence import Presence
from .tasks import cancel_and_wait

log = logging.getLogger(__name__)

RECOUNT_GRACE = 0.2
"""Seconds between the report that shows the node is back and its recount: a count that
another node began with a list of live nodes read before the return (which drops this node's
fields) is done by then, so it does not undo the recount."""


_REASONS = {
    (True, True): "a recount did not finish",
    (True, False): "a recount did not finish",
    (False, True): "its report lapsed",
    (False, False): "its counts were claimed or lost",
}
"""Why a recount is made, by (a recount did not finish, the report lapsed)."""


class CountHolder(Protocol):
    """What holds counts of this node (``UserSlots``, ``Occupancy``)."""

    @property
    def holds_counts(self) -> bool: ...

    async def recount(self) -> None:
        """Set each of this node's counts again, to its local value."""

    async def settle(self) -> None:
        """Count again what failed to be counted since the last sweep (called every sweep)."""


class Recount:
    """Sets this node's counts again when they may have been cleared, once per occasion."""

    def __init__(self, presence: Presence, node_id: str) -> None:
        self._presence = presence
        self._node_id = node_id
        self.holders: list[CountHolder] = []
        self._task: asyncio.Task[None] | None = None
        self._lapsed = False
        """A late report was seen and its recount has not started yet."""
        self._pending = False
        """A recount began and did not finish (a holder's count failed): the next check sets
        the counts again without asking the backend, which may already say "not cleared"
        (a count that did succeed listed the node again)."""
        self.recounts = 0
        """How many times the counts were set again (for tests and logs)."""

    def lapsed(self) -> None:
        """This node's report was renewed later than its ttl (called by the room reporter,
        right after the late report: the node is listed as live again)."""
        self._lapsed = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._after_lapse(), name="sanic-feeds:recount")

    async def check(self) -> None:
        """Ask the backend whether this node's counts were cleared (claimed as a dead node's,
        or lost), and set them again if so (called from each sweep; also retries a recount
        after a lapse that failed)."""
        if self._task is not None and not self._task.done():
            return  # a recount after a lapse is under way
        await self._recount_if_cleared()

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _after_lapse(self) -> None:
        await asyncio.sleep(RECOUNT_GRACE)
        try:
            await self._recount_if_cleared()
        except BrokerUnavailable as exc:  # the next sweep's check tries again
            log.warning("counts not set again after a lapse: %s", exc)

    async def _recount_if_cleared(self) -> None:
        lapsed, self._lapsed = self._lapsed, False
        pending, self._pending = self._pending, False
        if not any(holder.holds_counts for holder in self.holders):
            return
        started = False
        try:
            if self._node_id not in await self._presence.nodes():
                # Not listed (its reports still fail): counts set now would be dropped as a
                # dead node's again. The report that lists it again says it lapsed.
                self._lapsed = self._lapsed or lapsed
                self._pending = self._pending or pending
                return
            if not pending and not await self._presence.counts_cleared(
                self._node_id, lapsed=lapsed
            ):
                return
            started = True
            log.warning(
                "node %s was taken for stopped (%s): counting its own again",
                self._node_id,
                _REASONS[(pending, lapsed)],
            )
            self.recounts += 1
            await self._recount_each()
            await self._presence.counts_restored(self._node_id)
        except BaseException:
            # Not done: the next check does it (a recount once begun, without asking again).
            self._lapsed = self._lapsed or (lapsed and not started)
            self._pending = self._pending or pending or started
            raise

    async def _recount_each(self) -> None:
        """Every holder sets its counts, also after another one failed; the first failure is
        raised once all were tried."""
        failed: BaseException | None = None
        for holder in list(self.holders):
            try:
                await holder.recount()
            except Exception as exc:  # each holder must get its turn
                failed = failed or exc
        if failed is not None:
            raise failed
