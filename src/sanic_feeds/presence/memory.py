"""In-memory presence: the reports of the nodes that share one process."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from .base import Member, NodeReport, Presence, RoomTotals


class MemoryPresence(Presence):
    """Reports kept in a dict; expiry is checked on read against ``clock``.

    ``clock`` returns seconds and must never go backwards (default ``time.monotonic``); tests pass
    one they advance by hand, to see a report expire without waiting for its ttl.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._reports: dict[str, tuple[float, dict[str, int], int]] = {}
        self._members: dict[str, dict[str, list[Member]]] = {}  # node -> channel -> members
        self._users: dict[str, dict[str, int]] = {}  # user -> node -> connections

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
        self._reports.pop(node_id, None)
        self._members.pop(node_id, None)
        for counts in self._users.values():
            counts.pop(node_id, None)

    async def user_connections(self, user: str, node_id: str, delta: int) -> int:
        counts = self._users.setdefault(user, {})
        counts[node_id] = max(counts.get(node_id, 0) + delta, 0)
        live = {n for n, _ in self._live()} | {node_id}
        for node in [n for n, c in counts.items() if n not in live or c == 0]:
            del counts[node]
        if not counts:
            del self._users[user]
        return sum(counts.values())

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
