"""pytest fixtures for the private Redis and NATS servers used by the test suite.

Kept apart from ``redis_server.py`` so that module stays importable without pytest. Enable the
fixtures from ``tests/conftest.py`` with ``pytest_plugins = ["support.fixtures"]`` (or the dotted
path that matches how ``tests`` is importable), or by importing ``redis_server`` and ``redis_url``
into the conftest namespace.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, TypeVar

import pytest

from .nats_server import NatsServer
from .redis_cluster import RedisCluster, cluster_unavailable
from .redis_server import RedisServer

__all__ = [
    "nats_server",
    "nats_url",
    "redis_cluster",
    "redis_cluster_url",
    "redis_server",
    "redis_url",
    "running",
]


class Controlled(Protocol):
    """A private server process a test can start, stop and pause."""

    @property
    def is_paused(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def resume(self) -> None: ...


Server = TypeVar("Server", bound=Controlled)


def running(server: Server) -> Iterator[Server]:
    """Start ``server`` for the body of a fixture; stop it after, resuming it first if a test
    left it paused (so the graceful stop is not left waiting on a stopped process)."""
    server.start()
    try:
        yield server
    finally:
        if server.is_paused:
            server.resume()
        server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server for the whole session.

    Session scope because starting Redis costs tens of milliseconds and tests isolate themselves
    through ``redis_url`` (FLUSHALL) instead. Tests may kill, restart or pause it; teardown resumes
    a paused server first so the graceful stop is not left waiting on a stopped process.
    """
    yield from running(RedisServer())


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the private Redis, emptied before the test.

    A previous test may have paused or killed the shared session server (fault-injection tests);
    it is resumed or restarted here so that every test starts from a healthy, empty Redis.
    """
    if redis_server.is_paused:
        redis_server.resume()
    if not redis_server.is_running:
        redis_server.start()
    reply = redis_server.command("FLUSHALL")
    if reply != b"+OK\r\n":
        raise RuntimeError(f"FLUSHALL on the private Redis failed: {reply!r}")
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """One private Redis Cluster (three masters, three replicas) for the whole session.

    Forming one takes about two seconds, so every cluster test shares it; tests isolate
    themselves with their own key prefix. A test may kill a master (its replica takes over);
    ``redis_cluster_url`` starts it again, as a replica, before the next test.
    """
    why = cluster_unavailable()
    if why is not None:
        pytest.skip(f"no Redis Cluster here: {why}")
    yield from running(RedisCluster())


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisCluster) -> str:
    """``redis-cluster://`` URL of the session's cluster, every node running and in state ok."""
    if not redis_cluster.healthy():
        redis_cluster.repair()
    return redis_cluster.url


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """One private ``nats-server -js`` for the whole session (tests use their own prefixes).

    Tests may kill, restart or pause it; ``nats_url`` brings it back for the next test.
    """
    yield from running(NatsServer())


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    """URL of the private NATS server, running and answering."""
    if nats_server.is_paused:
        nats_server.resume()
    if not nats_server.is_running:
        nats_server.start()
    return nats_server.url
