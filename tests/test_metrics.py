"""/metrics in the Prometheus text format, with the numbers a real workload produces."""

from __future__ import annotations

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from sanic_feeds.errors import BrokerUnavailable
from support.local_server import LocalServer, local_server
from support.redis_server import RedisServer
from support.stalled import StalledClient
from support.ws import eventually, recv_json


async def scrape(server: LocalServer) -> dict[str, float]:
    """Every sample of /metrics by name (histograms by their _count/_sum/_bucket names)."""
    async with httpx.AsyncClient() as http:
        reply = await http.get(f"{server.http_url}/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                continue
            samples[sample.name] = sample.value
    return samples


async def test_metrics_count_real_traffic(broker_url: str) -> None:
    """Connections, messages in and out, bytes and publish-to-deliver latency are counted."""
    async with local_server(broker=broker_url, join_leave=False) as server:
        async with (
            connect(server.ws_url("m"), max_queue=None) as a,
            connect(server.ws_url("m"), max_queue=None) as b,
        ):
            await recv_json(a)
            await recv_json(b)
            await a.send(orjson.dumps({"type": "chat", "message": "hi"}).decode())
            for ws in (a, b):
                await recv_json(ws)
            await server.feeds.publish("m", 1)
            for ws in (a, b):
                await recv_json(ws)
            got = await scrape(server)
            assert got["sanic_feeds_connections"] == 2
            assert got["sanic_feeds_channels"] == 1
            assert got["sanic_feeds_connections_opened_total"] == 2
            assert got["sanic_feeds_client_messages_total"] == 1
            assert got["sanic_feeds_broker_messages_total"] == 2
            assert got["sanic_feeds_deliveries_total"] == 4
            assert got["sanic_feeds_bytes_sent_total"] > 4 * 60
            # Welcomes, chat and publish: each went out on its own, nothing is gathered here.
            assert 4 <= got["sanic_feeds_socket_writes_total"] <= 6
            assert got["sanic_feeds_publish_to_deliver_seconds_count"] == 2
            assert 0 <= got["sanic_feeds_publish_to_deliver_seconds_sum"] < 2
            assert got["sanic_feeds_slow_consumer_disconnects_total"] == 0
            assert got["sanic_feeds_rate_limited_messages_total"] == 0
            assert got["sanic_feeds_broker_reconnects_total"] == 0
            assert got["sanic_feeds_gaps_total"] == 0
            assert got["sanic_feeds_recovered_messages_total"] == 0
            assert got["sanic_feeds_publishes_refused_total"] == 0
            if broker_url.startswith("redis"):
                # chat + publish stored, presence reports and probes: batched, never refused
                assert got["sanic_feeds_broker_commands_total"] >= 2
                assert got["sanic_feeds_broker_batches_total"] >= 1
                assert got["sanic_feeds_broker_refused_total"] == 0
                assert got["sanic_feeds_broker_lost_replies_total"] == 0
                assert got["sanic_feeds_broker_in_flight"] >= 0
            else:
                assert "sanic_feeds_broker_commands_total" not in got

        async def closed_counted() -> bool:
            got = await scrape(server)
            return got["sanic_feeds_connection_buffer_high_water_bytes_count"] == 2

        await eventually(closed_counted, timeout=5)


async def test_slow_consumer_disconnects_are_counted() -> None:
    """A client cut off for not reading shows up in the slow-consumer counter."""
    async with local_server(join_leave=False, client_buffer=64 * 1024, close_timeout=0.5) as server:
        stalled = await StalledClient.connect(server.port, "/feed/flood")
        try:

            def joined() -> bool:
                return server.node.hub.members("flood") == 1

            await eventually(joined, timeout=5)
            for n in range(200):
                await server.feeds.publish("flood", {"n": n, "blob": "z" * 16000})

            async def counted() -> bool:
                got = await scrape(server)
                return got["sanic_feeds_slow_consumer_disconnects_total"] == 1

            await eventually(counted, timeout=10)
        finally:
            stalled.close()


async def test_refused_publishes_are_counted(redis_server: RedisServer, redis_url: str) -> None:
    """While Redis is down, each refused publish is counted (and the log says so, once). A
    quick probe makes the outage known, and publishes refused, within a second."""
    async with local_server(
        broker=redis_url, join_leave=False, broker_probe_interval=0.2, broker_probe_timeout=0.5
    ) as server:
        redis_server.kill()
        try:
            for n in range(3):
                with pytest.raises(BrokerUnavailable):
                    await server.feeds.publish("down", n)
            got = await scrape(server)
            assert got["sanic_feeds_publishes_refused_total"] == 3
            assert got["sanic_feeds_broker_refused_total"] >= 1
        finally:
            redis_server.start()
