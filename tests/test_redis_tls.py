"""The Redis brokers over TLS (``rediss://``, ``rediss-cluster://``), against real redis-servers
with TLS ports.

Managed Redis services ask for TLS, and nothing else in the suite speaks it: here a private
redis-server listens on a plain port (for the test's own checks) and on a TLS port with a
certificate from a throwaway CA made for the module. Two instances share channels, history and
presence through the TLS port, with the CA named in the URL (``ssl_ca_certs``, as redis-py
reads it), and every connection they open to Redis is on that port. Without the CA the
certificate is refused at start, in one sentence that says so. The same for a Redis Cluster of
three masters whose bus and replication are TLS too: messages, history and presence across
instances, each connection on a master's TLS port.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from sanic_feeds.brokers import create_broker
from sanic_feeds.errors import BrokerUnavailable
from support.local_server import LocalServer, local_server
from support.ports import free_port
from support.redis_cluster import RedisCluster, cluster_unavailable
from support.redis_server import RedisServer
from support.tls import make_certificates
from support.ws import recv_json


class TlsRedis:
    def __init__(self, server: RedisServer, tls_port: int, ca: Path) -> None:
        self.server, self.tls_port, self.ca = server, tls_port, ca

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.tls_port}/0?ssl_ca_certs={self.ca}"

    def clients(self) -> list[dict[str, str]]:
        return clients_of(self.server)


def clients_of(server: RedisServer) -> list[dict[str, str]]:
    """``CLIENT LIST`` (asked on the plain port), one dict of fields per connection but the
    one asking."""
    text = server.command("CLIENT", "LIST").split(b"\r\n", 1)[1].decode()
    rows = [
        dict(field.split("=", 1) for field in line.split() if "=" in field)
        for line in text.splitlines()
        if line.strip()
    ]
    return [row for row in rows if row.get("cmd") != "client|list"]


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    files = make_certificates(tmp_path_factory.mktemp("tls"))
    tls_port = free_port()
    server = RedisServer(extra_args=["--tls-port", str(tls_port), *files.redis_options()])
    try:
        server.start()
    except RuntimeError as exc:
        if "tls" in str(exc).lower():
            pytest.skip(f"this redis-server has no TLS: {str(exc)[:200]}")
        raise
    try:
        yield TlsRedis(server, tls_port, files.ca)
    finally:
        server.stop()


async def share_channels(url: str, channels: list[str], while_up: Callable[[], None]) -> None:
    """Two instances on ``url``; on each channel, across them: presence, a publish, its
    delivery and the history. Then ``while_up()``, before they stop."""
    async with (
        local_server(broker=url, join_leave=False) as one,
        local_server(broker=url, join_leave=False) as two,
    ):
        for channel in channels:
            await _share(one, two, channel)
        while_up()


async def _share(one: LocalServer, two: LocalServer, channel: str) -> None:
    async with connect(one.ws_url(channel)) as ws:
        welcome = await recv_json(ws)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{two.port}") as http:
            presence = (await http.get(f"/api/channels/{channel}/presence")).json()
            assert [m["client"] for m in presence["clients"]] == [welcome["client"]]
            answer = await http.post(f"/api/channels/{channel}/publish", json={"n": 1})
            assert answer.status_code == 200, answer.text
            got = await recv_json(ws, timeout=5)
            assert got["data"] == {"n": 1}
            history = (await http.get(f"/api/channels/{channel}/history")).json()
            assert [m["data"] for m in history["messages"]] == [{"n": 1}]


async def test_two_instances_share_channels_history_and_presence_over_tls(
    tls_redis: TlsRedis,
) -> None:
    def all_on_the_tls_port() -> None:
        ours = tls_redis.clients()
        assert any(c.get("name", "").startswith("sanic-feeds:") for c in ours)
        assert {c["laddr"].rpartition(":")[2] for c in ours} == {str(tls_redis.tls_port)}

    await share_channels(tls_redis.url, ["secure"], all_on_the_tls_port)


async def test_a_certificate_it_cannot_verify_is_refused_at_open(tls_redis: TlsRedis) -> None:
    """Without the CA (the system's trust store does not know it) the broker does not open,
    and the reason names the certificate."""
    broker = create_broker(f"rediss://127.0.0.1:{tls_redis.tls_port}/0")
    with pytest.raises(BrokerUnavailable) as refused:
        await broker.open(None)
    await broker.aclose()
    assert "certificate" in str(refused.value).lower()


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    why = cluster_unavailable()
    if why is not None:
        pytest.skip(f"no Redis Cluster here: {why}")
    cluster = RedisCluster(replicas=0, tls=make_certificates(tmp_path_factory.mktemp("tls")))
    try:
        cluster.start()
    except (RuntimeError, OSError) as exc:
        if "tls" in str(exc).lower():
            pytest.skip(f"this redis-server has no TLS: {str(exc)[:200]}")
        raise
    try:
        yield cluster
    finally:
        cluster.stop()


async def test_a_cluster_over_tls_serves_channels_history_and_presence(
    tls_cluster: RedisCluster,
) -> None:
    """``rediss-cluster://``: the broker's connections to each master, and redis-py's cluster
    client for presence, all verify the certificate and talk TLS."""
    tls_ports = {str(port) for port in tls_cluster.tls_ports}

    def all_on_tls_ports() -> None:
        held = [c for server in tls_cluster.servers for c in clients_of(server)]
        named = {c["name"] for c in held if c.get("name", "").startswith("sanic-feeds:")}
        assert len(named) == 2, named  # both instances, on every master
        assert all(
            sum(c.get("name") == name for c in clients_of(server)) >= 1
            for server in tls_cluster.servers
            for name in named
        )
        assert {c["laddr"].rpartition(":")[2] for c in held} <= tls_ports

    channels = [f"secure-{n}" for n in range(6)]  # spread over the slots, so the masters
    await share_channels(tls_cluster.url, channels, all_on_tls_ports)
