"""The broker contract, run against every backend (memory and Redis).

Two brokers on one medium (a shared MemoryBus, or one private Redis) play two nodes of a cluster.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from sanic_feeds.brokers import Broker, DeliverFn, MemoryBus, create_broker
from sanic_feeds.errors import BrokerUnavailable
from support.collect import Deliveries
from support.redis_server import RedisServer
from support.ws import eventually

OpenBroker = Callable[[DeliverFn | None], Awaitable[Broker]]


@pytest.fixture
async def open_broker(broker_url: str) -> AsyncIterator[OpenBroker]:
    """Factory of opened brokers sharing one medium; all are closed after the test."""
    bus = MemoryBus()
    prefix = f"test-{secrets.token_hex(3)}:"
    opened: list[Broker] = []

    async def factory(deliver: DeliverFn | None) -> Broker:
        broker = create_broker(broker_url, prefix=prefix, bus=bus)
        await broker.open(deliver)
        opened.append(broker)
        return broker

    yield factory
    for broker in opened:
        await broker.aclose()


async def test_subscribed_channel_receives_exact_payload_once(open_broker: OpenBroker) -> None:
    """A subscriber gets each published payload once, byte for byte."""
    got = Deliveries()
    node = await open_broker(got)
    await node.subscribe("news")
    payload = b'\x00head\n{"x": 1}\xff'
    await node.publish("news", payload)
    assert await got.wait_for(1) == [("news", payload)]
    await asyncio.sleep(0.1)
    assert len(got.items) == 1


async def test_only_subscribed_channels_are_delivered(open_broker: OpenBroker) -> None:
    """Nothing arrives for channels the node did not subscribe to, or left."""
    got = Deliveries()
    node = await open_broker(got)
    await node.subscribe("a")
    await node.publish("b", b"not for us")
    await node.subscribe("c")
    await node.unsubscribe("c")
    await node.publish("c", b"left already")
    await node.publish("a", b"marker")
    await got.wait_for(1)
    await asyncio.sleep(0.1)
    assert got.items == [("a", b"marker")]
    assert node.subscriptions == {"a"}


async def test_order_is_kept_per_channel(open_broker: OpenBroker) -> None:
    """Messages of one channel from one publisher arrive in publish order."""
    got = Deliveries()
    subscriber = await open_broker(got)
    publisher = await open_broker(None)
    await subscriber.subscribe("seq")
    for i in range(500):
        await publisher.publish("seq", str(i).encode())
    items = await got.wait_for(500)
    assert [int(p) for _, p in items] == list(range(500))


async def test_every_subscribed_node_gets_one_copy(open_broker: OpenBroker) -> None:
    """Each node subscribed to a channel receives each message exactly once."""
    first, second, bystander = Deliveries(), Deliveries(), Deliveries()
    node1 = await open_broker(first)
    node2 = await open_broker(second)
    node3 = await open_broker(bystander)
    await node1.subscribe("room")
    await node2.subscribe("room")
    await node3.subscribe("other")
    await node3.publish("room", b"hello")
    await first.wait_for(1)
    await second.wait_for(1)
    await asyncio.sleep(0.1)
    assert first.items == second.items == [("room", b"hello")]
    assert bystander.items == []


async def test_channels_never_cross(open_broker: OpenBroker) -> None:
    """With many channels on one subscriber connection, each message keeps its own channel."""
    got = Deliveries()
    node = await open_broker(got)
    channels = [f"ch{i}" for i in range(20)]
    for channel in channels:
        await node.subscribe(channel)
    for round_ in range(10):
        for channel in channels:
            await node.publish(channel, f"{channel}/{round_}".encode())
    items = await got.wait_for(200)
    for channel, payload in items:
        assert payload.decode().split("/")[0] == channel
    for channel in channels:
        assert got.payloads(channel) == [f"{channel}/{r}".encode() for r in range(10)]


async def test_resubscribe_after_unsubscribe_receives_again(open_broker: OpenBroker) -> None:
    """Toggling a subscription quickly ends in the last requested state."""
    got = Deliveries()
    node = await open_broker(got)
    for _ in range(20):
        await node.subscribe("flip")
        await node.unsubscribe("flip")
    await node.subscribe("flip")
    await node.publish("flip", b"on")
    assert await got.wait_for(1) == [("flip", b"on")]


async def test_publish_only_broker(open_broker: OpenBroker) -> None:
    """A broker opened without deliver publishes but cannot subscribe."""
    got = Deliveries()
    subscriber = await open_broker(got)
    await subscriber.subscribe("x")
    publisher = await open_broker(None)
    await publisher.publish("x", b"from a cron job")
    assert await got.wait_for(1) == [("x", b"from a cron job")]
    with pytest.raises(RuntimeError, match="publish-only"):
        await publisher.subscribe("x")


async def test_check_reports_ok(open_broker: OpenBroker) -> None:
    """check() proves the broker works and says which backend it is."""
    node = await open_broker(Deliveries())
    details = await node.check()
    assert details["ok"] is True
    assert details["backend"] in ("memory", "redis")
    assert "://" in node.url


async def test_closed_broker_delivers_nothing(open_broker: OpenBroker) -> None:
    """After aclose() a node gets no more messages; aclose() is idempotent."""
    got = Deliveries()
    node = await open_broker(got)
    await node.subscribe("x")
    await node.aclose()
    await node.aclose()
    other = await open_broker(None)
    await other.publish("x", b"late")
    await asyncio.sleep(0.1)
    assert got.items == []


async def test_redis_url_password_is_redacted() -> None:
    """Broker URLs shown in /health and logs never contain the password."""
    broker = create_broker("redis://user:secret@example.invalid:6380/2")
    assert "secret" not in broker.url
    assert broker.url == "redis://user:***@example.invalid:6380/2"


async def test_redis_down_raises_broker_unavailable(redis_server: RedisServer) -> None:
    """Publishing or subscribing with Redis gone raises BrokerUnavailable, not a raw error."""
    broker = create_broker(redis_server.url)
    await broker.open(Deliveries())
    try:
        redis_server.kill()
        with pytest.raises(BrokerUnavailable):
            await broker.publish("x", b"1")
        with pytest.raises(BrokerUnavailable):
            await broker.check()
    finally:
        redis_server.start()
        await broker.aclose()


async def test_redis_restart_resubscribes_and_resumes(redis_server: RedisServer) -> None:
    """After Redis restarts, the one reader reconnects and re-subscribes every channel."""
    got = Deliveries()
    node = create_broker(redis_server.url)
    publisher = create_broker(redis_server.url)
    await node.open(got)
    await publisher.open(None)
    try:
        await node.subscribe("a")
        await node.subscribe("b")
        redis_server.restart()

        async def both_delivered() -> bool:
            try:
                await publisher.publish("a", b"A")
                await publisher.publish("b", b"B")
            except BrokerUnavailable:
                return False
            await asyncio.sleep(0.05)
            return bool(got.payloads("a")) and bool(got.payloads("b"))

        await eventually(both_delivered, timeout=20, interval=0.2)
        await node.check()
    finally:
        await node.aclose()
        await publisher.aclose()
