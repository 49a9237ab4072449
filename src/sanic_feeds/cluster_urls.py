"""The nodes a ``redis-cluster://`` (or, with TLS, ``rediss-cluster://``) URL names. Pure, and
apart from ``config.py``, which checks such URLs, so that the Redis Cluster clients can read
them without importing the settings (the settings import the rate limiter, which opens such a
client).
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["redis_cluster_nodes"]


def redis_cluster_nodes(url: str) -> list[str]:
    """``redis-cluster://:pw@a:1,b:2`` -> ``["redis://:pw@a:1", "redis://:pw@b:2"]``: the nodes
    to ask for the cluster's layout, each with the credentials and the query (``?password=``,
    and for ``rediss-cluster://``, whose nodes are ``rediss://``, ``?ssl_ca_certs=``)."""
    scheme, _, rest = url.partition("://")
    node_scheme = "rediss" if scheme == "rediss-cluster" else "redis"
    rest, question, query = rest.partition("?")
    credentials, at, hosts = rest.rpartition("@")
    nodes = []
    for host in hosts.rstrip("/").split(","):
        if not host.strip():
            raise ValueError("a redis-cluster:// URL needs at least one HOST:PORT")
        if "/" in host:
            raise ValueError("a Redis Cluster has one database: no /DB in a redis-cluster:// URL")
        node = f"{node_scheme}://{credentials}{at}{host.strip()}{question}{query}"
        parts = urlsplit(node)
        _ = parts.port  # ValueError for a port that is not a number or too big
        if not parts.hostname:
            raise ValueError(f"no host in {host.strip()!r}")
        nodes.append(node)
    return nodes
