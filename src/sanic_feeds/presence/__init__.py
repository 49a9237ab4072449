"""Presence: cluster-wide view of who is where. The URL scheme picks the backend."""

from __future__ import annotations

from .base import Presence, RoomTotals
from .memory import MemoryPresence

__all__ = ["MemoryPresence", "Presence", "RoomTotals", "create_presence"]


def create_presence(url: str, *, prefix: str = "sanic-feeds:") -> Presence:
    """Build the presence backend matching a broker URL."""
    scheme = url.partition("://")[0]
    if scheme == "memory":
        return MemoryPresence()
    if scheme in ("redis", "rediss", "unix"):
        from .redis import RedisPresence

        return RedisPresence(url, prefix=prefix)
    raise ValueError(f"unknown presence scheme {scheme!r} in {url!r}")
