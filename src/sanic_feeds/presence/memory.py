"""In-memory presence: the reports of the nodes that share one process."""

from __future__ import annotations

import time
from collections.abc import Mapping

from .base import Presence, RoomTotals


class MemoryPresence(Presence):
    """Reports kept in a dict; expiry is checked on read with a monotonic clock."""

    def __init__(self) -> None:
        self._reports: dict[str, tuple[float, dict[str, int], int]] = {}

    async def open(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def report_rooms(
        self, node_id: str, rooms: Mapping[str, int], clients: int, ttl: float
    ) -> None:
        self._reports[node_id] = (time.monotonic() + ttl, dict(rooms), clients)

    async def withdraw(self, node_id: str) -> None:
        self._reports.pop(node_id, None)

    async def rooms(self, exclude_node: str = "") -> RoomTotals:
        totals = RoomTotals()
        for node_id, (_, counts, clients) in self._live():
            if node_id != exclude_node:
                totals.add(counts, clients)
        return totals

    async def nodes(self) -> list[str]:
        return sorted(node_id for node_id, _ in self._live())

    def _live(self) -> list[tuple[str, tuple[float, dict[str, int], int]]]:
        now = time.monotonic()
        for node_id in [n for n, report in self._reports.items() if report[0] <= now]:
            del self._reports[node_id]
        return list(self._reports.items())
