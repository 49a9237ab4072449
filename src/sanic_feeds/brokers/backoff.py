"""Reconnect delays that remember how long the last connection held.

A peer that accepts a connection and drops it at once (an output-buffer limit under load, a
proxy, a failover in progress) must not be reconnected to every 50 ms: each reconnect of the
subscriber subscribes every channel again and starts a history refill per channel. So the delay
grows from one attempt to the next and is only forgotten once a connection has held for
``steady`` seconds; after such a connection the first attempt is immediate.

Pure code: the clock and the jitter are passed in.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """``delay()`` before each attempt; ``up(now)`` when connected, ``lost(now)`` when not."""

    __slots__ = ("_jitter", "_next", "_up_since", "first", "most", "steady")

    def __init__(
        self,
        first: float = 0.05,
        most: float = 2.0,
        steady: float = 5.0,
        jitter: Callable[[], float] = lambda: random.uniform(0.5, 1.0),
    ) -> None:
        self.first = first
        self.most = most
        self.steady = steady
        self._jitter = jitter
        self._next = 0.0
        self._up_since: float | None = None

    def up(self, now: float) -> None:
        self._up_since = now

    def lost(self, now: float) -> None:
        if self._up_since is not None and now - self._up_since >= self.steady:
            self._next = 0.0  # it held: try again at once
        self._up_since = None

    def delay(self) -> float:
        """Seconds to wait before the next attempt."""
        current = self._next
        self._next = min(max(current * 2, self.first), self.most)
        return current * self._jitter()
