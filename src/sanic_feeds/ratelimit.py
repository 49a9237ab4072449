"""Rate limits: a token bucket per connection, and a window per user across the cluster.

The bucket is pure (time is passed in). The per-user limiter counts in fixed windows, in memory
for one process or in Redis (INCR with expiry) so that a user's connections on every instance
share one budget.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

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


class UserLimiter(ABC):
    """At most ``rate.count`` messages per user per window of ``rate.seconds``."""

    def __init__(self, rate: Rate) -> None:
        self.rate = rate

    def window(self, now: float) -> tuple[int, float]:
        """The current window's number and the seconds until it ends."""
        number = int(now // self.rate.seconds)
        return number, (number + 1) * self.rate.seconds - now

    @abstractmethod
    async def take(self, user: str) -> float:
        """0.0 when allowed, else seconds until the user's next window."""


class MemoryUserLimiter(UserLimiter):
    def __init__(self, rate: Rate) -> None:
        super().__init__(rate)
        self._counts: dict[str, tuple[int, int]] = {}

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
    """Fixed windows in Redis, shared by all instances. Fails open when Redis is down."""

    def __init__(self, rate: Rate, client: aioredis.Redis, prefix: str) -> None:
        super().__init__(rate)
        self._client = client
        self._prefix = prefix

    async def take(self, user: str) -> float:
        number, left = self.window(time.time())
        key = f"{self._prefix}rate:{user}:{number}"
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, int(self.rate.seconds) + 2)
                count, _ = await pipe.execute()
        except (RedisError, OSError):
            return 0.0  # the broker's own errors decide what happens to the message
        return 0.0 if int(count) <= self.rate.count else left
