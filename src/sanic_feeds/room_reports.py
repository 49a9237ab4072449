"""This node's members, reported to the cluster: who is here, and when every node knows it.

The node's presence report (member counts per channel, the member list of each channel, its
connection count) is written soon after membership changes and well before it expires. A join
that must be acknowledged only once every node lists the member waits for the next report
(:meth:`RoomReporter.reported`); the reporter then skips its usual gathering window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from . import __version__
from .errors import BrokerUnavailable
from .presence import Member, Presence
from .presence.base import FACT_PREFIX
from .tasks import cancel_and_wait

log = logging.getLogger(__name__)

REPORT_DEBOUNCE = 0.2
"""Seconds to gather membership changes before reporting rooms to the cluster."""

ACK_REPORT_TIMEOUT = 2.0
"""Most seconds a join's acknowledgement waits for the presence report that lists the member;
past it the join is acknowledged anyway (presence then catches up with the next report)."""


def node_facts(started_at: float, users: int) -> dict[str, int]:
    """What a node's report says about the node itself, beside its channels (``info``)."""
    return {
        f"{FACT_PREFIX}started": int(started_at),
        f"{FACT_PREFIX}users": users,
        f"{FACT_PREFIX}version:{__version__}": 1,
    }


class RoomReporter:
    """Writes this node's report from the hub's member records, soon after they change."""

    def __init__(
        self,
        presence: Presence,
        node_id: str,
        node_ttl: float,
        rooms: Callable[[], dict[str, int]],
        connections: Callable[[], int],
        members: Callable[[str], list[Member]],
        channels: Callable[[], list[str]],
    ) -> None:
        self._presence = presence
        self._node_id = node_id
        self._node_ttl = node_ttl
        self._rooms = rooms
        self._connections = connections
        self._members = members
        self._channels = channels
        self._changed = asyncio.Event()
        self._changed_channels: set[str] = set()
        self._waiters: list[asyncio.Future[None]] = []
        """Joins waiting for the next report (the one that will list them) to be written."""
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self.on_lapse: Callable[[], None] | None = None
        """Called after a report written more than ``node_ttl`` after the one before: the
        node was taken for stopped meanwhile (``Recount.lapsed``)."""
        self._last_written: float | None = None
        """Loop time at which the last report that was written began."""

    def start(self) -> None:
        self._running = True
        self._task = asyncio.create_task(self._run(), name="sanic-feeds:rooms")

    async def stop(self) -> None:
        self._running = False
        task, self._task = self._task, None
        await cancel_and_wait(task)
        for waiter in self._waiters:  # nothing will be reported any more
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    def changed(self) -> None:
        """Something the report counts changed (a connection came or went)."""
        self._changed.set()

    def changed_channel(self, channel: str) -> None:
        """A channel's members changed: rewrite its member list with the next report."""
        self._changed_channels.add(channel)
        self._changed.set()

    async def reported(self) -> None:
        """Until a report made after this call is written (at most ``ACK_REPORT_TIMEOUT``):
        from then on every node lists the changes made before it."""
        if not self._running:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._changed.set()
        self._wanted.set()
        try:
            async with asyncio.timeout(ACK_REPORT_TIMEOUT):
                await asyncio.shield(waiter)
        except TimeoutError:
            log.debug("acknowledging a join before its presence report was written")

    async def _run(self) -> None:
        """Keep this node's report fresh: soon after changes, and well before it expires.

        After a change only the changed channels' member lists are rewritten; the periodic
        report rewrites them all, which also repairs a Redis that lost its data.
        """
        interval = self._node_ttl / 3
        while self._running:
            full = False
            try:
                async with asyncio.timeout(interval):
                    await self._changed.wait()
                # Gather changes for a while, unless a join waits (or comes to wait) for its
                # report: then one loop turn, so joins arriving together share one report.
                if not self._waiters:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(REPORT_DEBOUNCE):
                            await self._wanted.wait()
                await asyncio.sleep(0)
            except TimeoutError:
                full = True
            self._changed.clear()
            self._wanted.clear()
            waiters, self._waiters = self._waiters, []
            changed = set(self._channels()) if full else set()
            changed |= self._changed_channels
            self._changed_channels = set()
            lists = {c: self._members(c) for c in changed}
            began = asyncio.get_running_loop().time()
            try:
                await self._presence.report_rooms(
                    self._node_id, self._rooms(), self._connections(), self._node_ttl, lists
                )
            except BrokerUnavailable as exc:
                self._changed_channels |= changed  # try these again next time
                log.warning("room report failed: %s", exc)
            else:
                self._written(began)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _written(self, began: float) -> None:
        """A report that began at ``began`` is written: was the one before it expired by now?"""
        last, self._last_written = self._last_written, began
        late = last is not None and asyncio.get_running_loop().time() - last > self._node_ttl
        if late and self.on_lapse is not None:
            log.warning(
                "presence report renewed past node_ttl: the cluster took this node for stopped"
            )
            self.on_lapse()
