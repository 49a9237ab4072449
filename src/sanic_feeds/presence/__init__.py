"""Presence: cluster-wide view of who is where. The URL scheme picks the backend."""

from __future__ import annotations

from .base import Member, Presence, RoomTotals
from .memory import MemoryPresence

__all__ = ["Member", "MemoryPresence", "Presence", "RoomTotals", "create_presence"]


def create_presence(
    url: str, *, prefix: str = "sanic-feeds:", shared: MemoryPresence | None = None
) -> Presence:
    """Build the presence backend matching a broker URL.

    For ``memory://``, nodes that share a ``MemoryBus`` pass its presence as ``shared``.
    """
    scheme = url.partition("://")[0]
    if scheme == "memory":
        return shared if shared is not None else MemoryPresence()
    if scheme in ("redis", "rediss", "unix"):
        from .redis import RedisPresence

        return RedisPresence(url, prefix=prefix)
    raise ValueError(f"unknown presence scheme {scheme!r} in {url!r}")
