"""In-memory presence: the reports of the nodes that share one process."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from .base import CountChange, Counted, Member, NodeReport, Presence, RoomTotals


class MemoryPresence(Presence):
    """Reports kept in a dict; expiry is checked on read against ``clock``.

    ``clock`` returns seconds and must never go backwards (default ``time.monotonic``); tests pass
    one they advance by hand, to see a report expire without waiting for its ttl.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._reports: dict[str, tuple[float, dict[str, int], int]] = {}
        self._members: dict[str, dict[str, list[Member]]] = {}  # node -> channel -> members
        self._counts: dict[str, dict[str, int]] = {}  # key -> node -> count
        self._counted: dict[str, set[str]] = {}
        """Node -> the keys it counted: what a claim of its expiry hands over."""
        self._intact: set[str] = set()
        """Nodes whose counts no claim cleared since their first count or their last recount
        (a claim removes the node, :meth:`counts_restored` adds it again)."""
        self._started: set[str] = set()
        """Nodes that counted: their first count marks them intact, later ones do not."""

    async def open(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def report_rooms(
        self,
        node_id: str,
        rooms: Mapping[str, int],
        clients: int,
        ttl: float,
        members: Mapping[str, Sequence[Member]] | None = None,
    ) -> None:
        self._reports[node_id] = (self._clock() + ttl, dict(rooms), clients)
        lists = self._members.setdefault(node_id, {})
        for channel, listed in (members or {}).items():
            if listed:
                lists[channel] = list(listed)
            else:
                lists.pop(channel, None)

    async def members(self, channel: str, exclude_node: str = "") -> list[Member]:
        found: list[Member] = []
        for node_id, _ in self._live():
            if node_id != exclude_node:
                found.extend(self._members.get(node_id, {}).get(channel, ()))
        return found

    async def withdraw(self, node_id: str) -> None:
        # Counts it left (a clean stop counts back to zero) are cleared like a crashed node's.
        self._reports.pop(node_id, None)
        self._members.pop(node_id, None)

    async def add_count(self, key: str, node_id: str, delta: int) -> Counted:
        before = self._counts.get(key, {}).get(node_id, 0)
        total, lapsed = self._count(key, node_id, max(before + delta, 0))
        return Counted(total, lapsed=lapsed)

    async def set_count(self, key: str, node_id: str, value: int) -> CountChange:
        before = self._counts.get(key, {}).get(node_id, 0)
        total, lapsed = self._count(key, node_id, max(value, 0))
        return CountChange(total, max(value, 0) - before, lapsed)

    async def counts_cleared(self, node_id: str, *, lapsed: bool) -> bool:
        # A claim hands the node's keys over and forgets them; a lapse alone lets any count
        # drop its fields (they are the fields of a node that is not live).
        return lapsed or node_id not in self._intact

    async def counts_restored(self, node_id: str) -> None:
        self._intact.add(node_id)
        self._started.add(node_id)

    def _count(self, key: str, node_id: str, mine: int) -> tuple[int, bool]:
        """Set the node's count of ``key`` to ``mine``, clear the dead nodes' counts: the live
        total, and whether clearing them lapsed the key."""
        counts = self._counts.setdefault(key, {})
        if mine > 0:
            self._counted.setdefault(node_id, set()).add(key)
            if node_id not in self._started:
                self._started.add(node_id)
                self._intact.add(node_id)
        before = counts.get(node_id, 0)
        counts[node_id] = mine
        if not mine:
            self._counted.get(node_id, set()).discard(key)
        live = {n for n, _ in self._live()} | {node_id}
        dead = [n for n in counts if n not in live]
        cleared = sum(counts.pop(n) for n in dead)
        for node in [n for n, c in counts.items() if c == 0]:
            del counts[node]
        if not counts:
            del self._counts[key]
        total = sum(counts.values())
        return total, cleared > 0 and total - (mine - before) == 0

    async def claim_expired(self, node_id: str) -> list[str]:
        live = {n for n, _ in self._live()} | {node_id}
        keys: set[str] = set()
        for node in [n for n in self._counted if n not in live]:
            keys |= self._counted.pop(node)
            self._intact.discard(node)
        return sorted(keys)

    async def rooms(self, exclude_node: str = "") -> RoomTotals:
        totals = RoomTotals()
        for node_id, (_, counts, clients) in self._live():
            if node_id != exclude_node:
                totals.add(counts, clients)
        return totals

    async def nodes(self) -> list[str]:
        return sorted(node_id for node_id, _ in self._live())

    async def node_reports(self) -> dict[str, NodeReport]:
        live = self._live()
        return {node: NodeReport(dict(counts), clients) for node, (_, counts, clients) in live}

    def _live(self) -> list[tuple[str, tuple[float, dict[str, int], int]]]:
        now = self._clock()
        for node_id in [n for n, report in self._reports.items() if report[0] <= now]:
            del self._reports[node_id]
            self._members.pop(node_id, None)
        return list(self._reports.items())
