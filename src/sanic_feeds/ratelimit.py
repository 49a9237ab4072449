"""Rate limits: a token bucket per connection, and a window per user across the cluster.

The bucket is pure (time is passed in). The per-user limiter counts in fixed windows, in memory
for one process or in Redis (INCR with expiry) so that a user's connections on every instance
share one budget. This module must not import redis-py at import time: the settings (``Rate``)
and memory-only servers use it too.
"""

from __future__ import annotations

import asyncio
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster

_RATE_RE = re.compile(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*")


@dataclass(frozen=True)
class Rate:
    """``count`` messages per ``seconds``."""

    count: int
    seconds: float

    @classmethod
    def parse(cls, text: str) -> Rate | None:
        """``"10/60"`` -> 10 per 60 s; ``""``, ``"off"`` or ``"0"`` -> None (no limit)."""
        if text.strip().lower() in ("", "off", "0", "none"):
            return None
        match = _RATE_RE.fullmatch(text)
        if match is None:
            raise ValueError(f"expected COUNT/SECONDS such as 10/60, got {text!r}")
        count, seconds = int(match.group(1)), float(match.group(2))
        if count < 1 or seconds <= 0:
            raise ValueError(f"COUNT and SECONDS must be positive, got {text!r}")
        return cls(count, seconds)

    def __str__(self) -> str:
        return f"{self.count}/{self.seconds:g}"


class TokenBucket:
    """Allows bursts up to ``rate.count`` and refills at ``count / seconds`` per second."""

    __slots__ = ("_rate", "_refill", "_stamp", "_tokens")

    def __init__(self, rate: Rate, now: float) -> None:
        self._rate = rate
        self._refill = rate.count / rate.seconds
        self._tokens = float(rate.count)
        self._stamp = now

    def take(self, now: float) -> float:
        """Take one token: 0.0 when allowed, else the seconds until one is available."""
        self._tokens = min(self._rate.count, self._tokens + (now - self._stamp) * self._refill)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._refill


class NamespaceBuckets:
    """One connection's token buckets, one per namespace whose ``rate_limit`` it has used."""

    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        self._buckets: dict[str | None, TokenBucket] = {}

    def take(self, namespace: str | None, rate: Rate, now: float) -> float:
        """0.0 when a message to ``namespace`` may go now, else the seconds to wait."""
        bucket = self._buckets.get(namespace)
        if bucket is None:
            bucket = self._buckets[namespace] = TokenBucket(rate, now)
        return bucket.take(now)


class UserLimiter(ABC):
    """At most ``rate.count`` messages per user per window of ``rate.seconds``."""

    def __init__(self, rate: Rate) -> None:
        self.rate = rate

    def window(self, now: float) -> tuple[int, float]:
        """The current window's number and the seconds until it ends."""
        number = int(now // self.rate.seconds)
        return number, (number + 1) * self.rate.seconds - now

    @abstractmethod
    async def open(self) -> None:
        """Connect to where the counts are kept."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections. Idempotent."""

    @abstractmethod
    async def take(self, user: str) -> float:
        """0.0 when allowed, else seconds until the user's next window."""


class MemoryUserLimiter(UserLimiter):
    """Counts in this process only: the limit is per instance."""

    def __init__(self, rate: Rate) -> None:
        super().__init__(rate)
        self._counts: dict[str, tuple[int, int]] = {}

    async def open(self) -> None:
        """Nothing to connect to."""

    async def aclose(self) -> None:
        self._counts.clear()

    async def take(self, user: str) -> float:
        number, left = self.window(time.time())
        window, count = self._counts.get(user, (number, 0))
        if window != number:
            count = 0
        if len(self._counts) > 100_000:  # bounded: drop stale windows
            self._counts = {u: v for u, v in self._counts.items() if v[0] == number}
        self._counts[user] = (number, count + 1)
        return 0.0 if count < self.rate.count else left


class RedisUserLimiter(UserLimiter):
    """Fixed windows in Redis, shared by all instances. Fails open when Redis is down.

    Holds its own redis-py client (a bounded, blocking pool) from ``open`` to ``aclose``; with
    ``cluster``, a Redis Cluster client, its calls bounded by a semaphore instead (its pools
    refuse rather than wait). A window is one key, so one slot either way.
    """

    def __init__(self, rate: Rate, url: str, prefix: str, *, cluster: bool = False) -> None:
        super().__init__(rate)
        self._url = url
        self._prefix = prefix
        self._cluster = cluster
        self._client: aioredis.Redis | RedisCluster | None = None
        self._errors: tuple[type[Exception], ...] = (OSError,)
        self._gate: asyncio.Semaphore | None = None

    async def open(self) -> None:
        if self._client is not None:
            return
        from redis.exceptions import RedisError  # imported here: memory users never load redis-py

        from .brokers.redis import open_client
        from .brokers.redis_cluster_client import GATE, open_cluster_client

        self._errors = (RedisError, OSError)
        self._gate = asyncio.Semaphore(GATE)
        self._client = open_cluster_client(self._url) if self._cluster else open_client(self._url)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def take(self, user: str) -> float:
        client, gate = self._client, self._gate
        if client is None or gate is None:
            return 0.0  # not open (or closed): fail open, as when Redis is down
        number, left = self.window(time.time())
        key = f"{self._prefix}rate:{user}:{number}"
        try:
            async with gate, client.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, int(self.rate.seconds) + 2)
                count, _ = await pipe.execute()
        except self._errors:
            return 0.0  # the broker's own errors decide what happens to the message
        return 0.0 if int(count) <= self.rate.count else left
