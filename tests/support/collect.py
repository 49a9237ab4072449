"""A ``deliver`` callback that records what a broker hands to it, and waits for it."""

from __future__ import annotations

import asyncio


class Deliveries:
    """Collects ``(channel, payload)`` pairs; tests await counts instead of sleeping."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes]] = []
        self._changed = asyncio.Event()

    def __call__(self, channel: str, payload: bytes) -> None:
        self.items.append((channel, payload))
        self._changed.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[tuple[str, bytes]]:
        """Wait until at least ``count`` deliveries arrived; return them all."""
        async with asyncio.timeout(timeout):
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.items

    def payloads(self, channel: str | None = None) -> list[bytes]:
        return [p for c, p in self.items if channel is None or c == channel]
