"""The presence interface: what each node reports about its members, readable cluster-wide.

Today a node reports its per-channel member counts; ``/api/rooms`` sums them over live nodes.
Reports expire: a node that crashes stops refreshing, and its numbers disappear after ``ttl``
seconds instead of haunting the totals forever.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

CLIENTS_FIELD = "#clients"
"""Report field holding the node's connection count; ``#`` cannot start a channel name."""


@dataclass
class RoomTotals:
    """Cluster-wide totals: members per channel, and connected clients."""

    rooms: dict[str, int] = field(default_factory=dict)
    clients: int = 0

    def add(self, counts: Mapping[str, int], clients: int) -> None:
        """Add one node's counts (non-positive numbers are dropped)."""
        for channel, count in counts.items():
            if count > 0:
                self.rooms[channel] = self.rooms.get(channel, 0) + count
        self.clients += max(clients, 0)


class Presence(ABC):
    """Cluster-wide view of the nodes' rooms. Memory and Redis implementations."""

    @abstractmethod
    async def open(self) -> None:
        """Connect."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections. Idempotent."""

    @abstractmethod
    async def report_rooms(
        self, node_id: str, rooms: Mapping[str, int], clients: int, ttl: float
    ) -> None:
        """Replace ``node_id``'s report; it counts until ``ttl`` seconds from now."""

    @abstractmethod
    async def withdraw(self, node_id: str) -> None:
        """Remove ``node_id``'s report at once (clean shutdown)."""

    @abstractmethod
    async def rooms(self, exclude_node: str = "") -> RoomTotals:
        """Sum of the live nodes' counts per channel, leaving out ``exclude_node``'s report.

        A node excludes its own (possibly stale) report and adds its live local counts instead.
        """

    @abstractmethod
    async def nodes(self) -> list[str]:
        """Ids of the nodes whose reports have not expired."""
