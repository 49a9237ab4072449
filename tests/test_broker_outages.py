"""The Redis broker notices outages that raise no error, and recovers from them by itself.

A "deaf node" (up, green, delivering nothing) is the classic failure of Redis-backed real-time
servers. The broker's liveness probe (a message to itself through Redis) is what catches a frozen
Redis or a silently replaced subscriber connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from websockets.asyncio.client import connect

from sanic_feeds.brokers import Broker, create_broker
from sanic_feeds.errors import BrokerUnavailable
from support.collect import Deliveries
from support.local_server import LocalServer, local_server
from support.redis_server import RedisServer
from support.tcp_proxy import TcpProxy
from support.ws import eventually, recv_json, recv_until

PROBE_INTERVAL = 0.3
PROBE_TIMEOUT = 0.5


@pytest.fixture
async def node(redis_url: str) -> AsyncIterator[tuple[Broker, Deliveries, Broker]]:
    got = Deliveries()
    subscriber = create_broker(
        redis_url, probe_interval=PROBE_INTERVAL, probe_timeout=PROBE_TIMEOUT
    )
    publisher = create_broker(redis_url)
    await subscriber.open(got)
    await publisher.open(None)
    yield subscriber, got, publisher
    await subscriber.aclose()
    await publisher.aclose()


async def healthy(broker: Broker) -> bool:
    try:
        await broker.check()
    except BrokerUnavailable:
        return False
    return True


async def delivery_works(publisher: Broker, got: Deliveries, marker: bytes) -> bool:
    try:
        await publisher.publish("live", marker)
    except BrokerUnavailable:
        return False
    await asyncio.sleep(0.05)
    return marker in got.payloads("live")


async def test_frozen_redis_is_noticed_and_recovered(
    node: tuple[Broker, Deliveries, Broker], redis_server: RedisServer
) -> None:
    """SIGSTOP: check() fails within probe interval + timeout; after SIGCONT all works again."""
    subscriber, got, publisher = node
    await subscriber.subscribe("live")
    assert await healthy(subscriber)
    redis_server.pause()
    try:

        async def down() -> bool:
            return not await healthy(subscriber)

        await eventually(down, timeout=PROBE_INTERVAL + PROBE_TIMEOUT + 3)
    finally:
        redis_server.resume()

    async def recovered() -> bool:
        return await healthy(subscriber) and await delivery_works(publisher, got, b"after")

    await eventually(recovered, timeout=20, interval=0.2)


async def test_killed_subscriber_connection_is_recovered(
    node: tuple[Broker, Deliveries, Broker], redis_server: RedisServer
) -> None:
    """CLIENT KILL TYPE pubsub: the subscriber comes back and re-subscribes every channel."""
    subscriber, got, publisher = node
    await subscriber.subscribe("live")
    assert await delivery_works(publisher, got, b"before")
    for _ in range(3):
        reply = redis_server.command("CLIENT", "KILL", "TYPE", "pubsub")
        assert reply.startswith(b":")

        async def works_again() -> bool:
            marker = f"after-{len(got.items)}".encode()
            return await delivery_works(publisher, got, marker)

        await eventually(works_again, timeout=10, interval=0.1)

    async def green() -> bool:
        # A probe in flight when the connection was killed is lost; the next one clears it.
        return await healthy(subscriber)

    await eventually(green, timeout=PROBE_INTERVAL + PROBE_TIMEOUT + 3)


async def test_black_holed_subscriber_is_noticed_and_rebuilt(redis_server: RedisServer) -> None:
    """A subscriber connection that silently stops carrying anything (no error, no close) is
    detected by the liveness probe and replaced; delivery resumes. Without the probe this node
    would stay up and deaf."""
    proxy = TcpProxy(redis_server.port)
    await proxy.start()
    got = Deliveries()
    subscriber = create_broker(
        proxy.url, probe_interval=PROBE_INTERVAL, probe_timeout=PROBE_TIMEOUT
    )
    publisher = create_broker(redis_server.url)
    await subscriber.open(got)
    await publisher.open(None)
    try:
        await subscriber.subscribe("live")
        assert await delivery_works(publisher, got, b"before")
        assert proxy.freeze() >= 1

        async def works_again() -> bool:
            marker = f"after-{len(got.items)}".encode()
            return await delivery_works(publisher, got, marker)

        await eventually(works_again, timeout=20, interval=0.2)

        async def green() -> bool:
            # The black-holed command connections are given up after the command timeout (5 s),
            # then the next probe clears the health.
            return await healthy(subscriber)

        await eventually(green, timeout=5 + PROBE_INTERVAL + PROBE_TIMEOUT + 3)
    finally:
        await subscriber.aclose()
        await publisher.aclose()
        await proxy.aclose()


async def test_chat_while_redis_is_down_gets_broker_unavailable(
    redis_server: RedisServer, redis_url: str
) -> None:
    """A chat that cannot reach the broker is answered with an error, never silently dropped.
    A quick probe makes the outage known, and the chat refused, within a second."""
    async with local_server(
        broker=redis_url, join_leave=False, broker_probe_interval=0.2, broker_probe_timeout=0.5
    ) as server:
        async with connect(server.ws_url("lobby")) as ws:
            await recv_json(ws)
            await ws.send(orjson.dumps({"type": "ping"}).decode())
            assert await recv_json(ws) == {"type": "pong"}  # the join has completed
            redis_server.kill()
            try:
                await ws.send(orjson.dumps({"type": "chat", "message": "lost?"}).decode())
                reply = await recv_json(ws, timeout=15)
                assert reply["type"] == "error"
                assert reply["code"] == "broker_unavailable"
                assert reply["channel"] == "lobby"
                with pytest.raises(BrokerUnavailable):
                    await server.feeds.publish("lobby", 1)
            finally:
                redis_server.start()


@pytest.fixture
async def proxied(
    redis_server: RedisServer, redis_url: str
) -> AsyncIterator[tuple[LocalServer, TcpProxy, Broker]]:
    """A server whose Redis connections go through a proxy that can black-hole them, and a
    second instance (a bare broker) that talks to Redis directly."""
    proxy = TcpProxy(redis_server.port)
    await proxy.start()
    direct = create_broker(redis_url)
    await direct.open(None)
    try:
        async with local_server(
            broker=proxy.url,
            join_leave=False,
            broker_probe_interval=PROBE_INTERVAL,
            broker_probe_timeout=PROBE_TIMEOUT,
        ) as server:
            yield server, proxy, direct
    finally:
        await direct.aclose()
        await proxy.aclose()


async def test_lost_messages_are_recovered_by_the_instance(
    proxied: tuple[LocalServer, TcpProxy, Broker],
) -> None:
    """Messages published while an instance's subscriber was cut off reach its members anyway,
    once each and in order, without the client doing anything: the instance refills the gap
    from the history when its subscription comes back."""
    server, proxy, direct = proxied
    async with connect(server.ws_url("feed"), max_queue=None) as ws:
        await recv_json(ws)
        await server.feeds.publish("feed", "seen")
        seen = await recv_json(ws)
        proxy.freeze()
        for i in range(5):
            await direct.publish_stored("feed", data_body("feed", i))
        got = [await recv_json(ws, timeout=20) for _ in range(5)]
        assert [m["data"] for m in got] == [0, 1, 2, 3, 4]
        assert [m["id"] for m in got] == list(range(seen["id"] + 1, seen["id"] + 6))
        await direct.publish_stored("feed", data_body("feed", "live"))
        live = await recv_json(ws, timeout=10)
        assert (live["data"], live["id"]) == ("live", seen["id"] + 6)
        assert server.node.broker.reconnects >= 1  # sanic_feeds_broker_reconnects
        assert server.node.hub.gaps >= 1  # sanic_feeds_gaps_total
        assert server.node.hub.recovered == 5
        assert b"\nsanic_feeds_recovered_messages_total 5.0\n" in server.feeds.metrics.render()


async def test_unfillable_gap_is_announced_and_a_resync_fills_it(
    proxied: tuple[LocalServer, TcpProxy, Broker],
) -> None:
    """When the instance cannot tell what it missed (it had delivered no stored message yet),
    members get a gap notice, and subscribe + since brings back exactly what they missed."""
    server, proxy, direct = proxied
    async with connect(server.ws_url("feed"), max_queue=None) as ws:
        await recv_json(ws)
        await ws.send(orjson.dumps({"type": "ping"}).decode())
        assert await recv_json(ws) == {"type": "pong"}  # the join is complete
        proxy.freeze()
        for i in range(3):
            await direct.publish_stored("feed", data_body("feed", i))
        notice = await recv_until(ws, lambda m: m["type"] == "gap", timeout=20)
        assert notice == {"type": "gap", "channel": "feed", "reason": "broker_reconnected"}
        request = {"type": "subscribe", "channel": "feed", "since": 0}
        await ws.send(orjson.dumps(request).decode())
        replay = [await recv_json(ws, timeout=10) for _ in range(5)]
        assert [m.get("data") for m in replay[:3]] == [0, 1, 2]
        assert (replay[3]["type"], replay[3]["recovered"]) == ("recovered", True)
        assert replay[4] == {"type": "subscribed", "channel": "feed"}


def data_body(channel: str, value: object) -> bytes:
    return orjson.dumps({"type": "data", "channel": channel, "data": value})
