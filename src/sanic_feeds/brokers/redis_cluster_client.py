"""A redis-py client for the low-rate paths (presence, rate limits) on a Redis Cluster.

redis-py's ``RedisCluster`` finds the nodes, routes each command by slot and follows MOVED
itself: right for a report every few seconds and a counter per message, where batching buys
nothing. Its per-node pools *refuse* a command past ``max_connections`` instead of waiting
(and take the refusal for a failed node), so callers bound their concurrency themselves with
``GATE`` permits; the pools' own limit is only a backstop.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from ..cluster_urls import redis_cluster_nodes
from ..tls_settings import TLS_QUERY

GATE = 16
"""Commands (or pipelines) one presence or limiter object has in flight at most."""


def tls_options(url: str) -> dict[str, Any]:
    """redis-py's keyword arguments for the TLS a cluster URL asks for (none without it): the
    query settings of :mod:`~sanic_feeds.tls_settings`, as the broker's own connections read
    them (``resp.Endpoint``)."""
    if not url.startswith("rediss-cluster://"):
        return {}
    first: dict[str, Any] = dict(parse_url(redis_cluster_nodes(url)[0]))
    options: dict[str, Any] = {"ssl": True}
    options |= {name: first[name] for name in TLS_QUERY if first.get(name) is not None}
    if first.get("ssl_cert_reqs", "required") != "required":  # as client_context does
        options["ssl_check_hostname"] = False
    return options


def open_cluster_client(url: str) -> RedisCluster:
    """A client for the cluster a ``redis-cluster://`` or ``rediss-cluster://`` URL names; it
    connects on first use."""
    nodes = [parse_url(node) for node in redis_cluster_nodes(url)]
    first = nodes[0]
    return RedisCluster(
        startup_nodes=[ClusterNode(str(n["host"]), int(n.get("port", 6379))) for n in nodes],
        username=first.get("username"),
        password=first.get("password"),
        retry=Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), retries=3),
        socket_connect_timeout=3.0,
        socket_timeout=5.0,
        max_connections=GATE * 4,
        **tls_options(url),
    )
