"""Presence: cluster-wide view of who is where. The broker URL's kind picks the backend."""

from __future__ import annotations

from ..config import BrokerAddress
from .base import CountChange, Counted, Member, NodeReport, Presence, RoomTotals
from .memory import MemoryPresence

__all__ = [
    "CountChange",
    "Counted",
    "Member",
    "MemoryPresence",
    "NodeReport",
    "Presence",
    "RoomTotals",
    "create_presence",
]


def create_presence(
    url: str | BrokerAddress,
    *,
    prefix: str = "sanic-feeds:",
    shared: MemoryPresence | None = None,
    max_age: float = 60.0,
) -> Presence:
    """Build the presence backend matching a broker URL.

    For ``memory://``, nodes that share a ``MemoryBus`` pass its presence as ``shared``. On NATS
    ``max_age`` is the key-value bucket's (how long an abandoned report lingers at most).
    ``ValueError`` for a URL :meth:`BrokerAddress.parse` refuses.
    """
    address = url if isinstance(url, BrokerAddress) else BrokerAddress.parse(url)
    if address.kind == "memory":
        return shared if shared is not None else MemoryPresence()
    if address.kind == "nats":
        from .nats import NatsPresence  # imported lazily: only NATS users load nats-py

        return NatsPresence(address.url, prefix=prefix, max_age=max_age)
    from .redis import RedisPresence  # imported lazily: memory-only users never load redis-py

    return RedisPresence(address.url, prefix=prefix, cluster=address.kind == "redis-cluster")
