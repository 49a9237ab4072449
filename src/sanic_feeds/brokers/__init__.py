"""Brokers: how nodes exchange channel messages. The URL scheme picks the backend."""

from __future__ import annotations

from ..history import HistoryPage, HistoryPolicy, Stored
from .base import Broker, DeliverFn
from .memory import MemoryBroker, MemoryBus

__all__ = [
    "Broker",
    "DeliverFn",
    "HistoryPage",
    "HistoryPolicy",
    "MemoryBroker",
    "MemoryBus",
    "Stored",
    "create_broker",
]


def create_broker(
    url: str,
    *,
    prefix: str = "sanic-feeds:",
    node_id: str = "",
    bus: MemoryBus | None = None,
    probe_interval: float = 2.0,
    probe_timeout: float = 3.0,
    history: HistoryPolicy | None = None,
) -> Broker:
    """Build the broker a URL names: ``memory://`` or ``redis://`` / ``rediss://`` / ``unix://``."""
    scheme = url.partition("://")[0]
    if scheme == "memory":
        return MemoryBroker(bus, history)
    if scheme in ("redis", "rediss", "unix"):
        from .redis import RedisBroker  # imported lazily: memory-only users never load redis-py

        return RedisBroker(
            url,
            prefix=prefix,
            node_id=node_id,
            probe_interval=probe_interval,
            probe_timeout=probe_timeout,
            history=history,
        )
    raise ValueError(f"unknown broker scheme {scheme!r} in {url!r}")
