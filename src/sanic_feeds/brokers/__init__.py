"""Brokers: how nodes exchange channel messages. The URL's kind picks the backend."""

from __future__ import annotations

from ..config import BrokerAddress
from ..history import HistoryPage, HistoryPolicy, HistoryRules, Stored
from .base import Broker, DeliverFn
from .memory import MemoryBroker, MemoryBus

__all__ = [
    "Broker",
    "DeliverFn",
    "HistoryPage",
    "HistoryPolicy",
    "HistoryRules",
    "MemoryBroker",
    "MemoryBus",
    "Stored",
    "create_broker",
]


def create_broker(
    url: str | BrokerAddress,
    *,
    prefix: str = "sanic-feeds:",
    node_id: str = "",
    bus: MemoryBus | None = None,
    probe_interval: float = 2.0,
    probe_timeout: float = 3.0,
    history: HistoryPolicy | HistoryRules | None = None,
) -> Broker:
    """Build the broker a URL names: ``memory://``, ``redis://`` / ``rediss://`` / ``unix://``,
    ``redis-cluster://`` or ``nats://``.

    ``ValueError`` for a URL :meth:`BrokerAddress.parse` refuses. Nothing is connected until
    the broker's ``open``.
    """
    address = url if isinstance(url, BrokerAddress) else BrokerAddress.parse(url)
    if address.kind == "memory":
        return MemoryBroker(bus, history)
    if address.kind == "nats":
        from .nats import NatsBroker  # imported lazily: only NATS users load nats-py

        return NatsBroker(
            address.url,
            prefix=prefix,
            node_id=node_id,
            probe_interval=probe_interval,
            probe_timeout=probe_timeout,
            history=history,
        )
    if address.kind == "redis-cluster":
        from .redis_cluster import RedisClusterBroker  # imported lazily, as for one Redis

        return RedisClusterBroker(
            address.url,
            prefix=prefix,
            node_id=node_id,
            probe_interval=probe_interval,
            probe_timeout=probe_timeout,
            history=history,
        )
    from .redis import RedisBroker  # imported lazily: memory-only users never load redis-py

    return RedisBroker(
        address.url,
        prefix=prefix,
        node_id=node_id,
        probe_interval=probe_interval,
        probe_timeout=probe_timeout,
        history=history,
    )
