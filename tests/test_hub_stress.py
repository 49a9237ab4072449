"""Randomized joins and leaves against both brokers: subscriptions always end in step with members.

The earlier design lost subscriptions when a client joined a channel while its last member was
leaving (the new member stayed attached to a channel nobody received). These tests drive the real
hub and the real broker with many concurrent actors and then check, for every channel, that the
node is subscribed exactly when it has members, and that every member really receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
from collections.abc import AsyncIterator

import pytest

from sanic_feeds.brokers import Broker, MemoryBus, create_broker
from sanic_feeds.envelope import seal
from sanic_feeds.frames import text_frame
from sanic_feeds.hub import Hub
from sanic_feeds.outbound import Flusher, Outbound
from sanic_feeds.tasks import cancel_and_wait
from support.recording_transport import RecordingTransport
from support.redis_server import RedisServer
from support.tcp_proxy import TcpProxy
from support.ws import eventually


@pytest.fixture
async def node(broker_url: str) -> AsyncIterator[tuple[Hub, Broker, str]]:
    prefix = f"stress-{secrets.token_hex(3)}:"
    broker = create_broker(broker_url, prefix=prefix, bus=MemoryBus())
    hub = Hub(broker)
    await broker.open(hub.deliver)
    yield hub, broker, prefix
    await broker.aclose()


def make_member(flusher: Flusher) -> tuple[Outbound, RecordingTransport]:
    transport = RecordingTransport()
    return Outbound(transport, flusher, 1 << 20, lambda: None), transport


async def wait_for_writes(transports: list[RecordingTransport], frame: bytes) -> None:
    async with asyncio.timeout(10):
        while not all(frame in t.data for t in transports):
            await asyncio.sleep(0.01)


async def check_in_step(
    hub: Hub,
    broker: Broker,
    members: dict[str, dict[str, RecordingTransport]],
    broker_url: str,
    prefix: str,
    redis_server: RedisServer | None,
) -> None:
    expected = {channel for channel, m in members.items() if m}
    assert set(hub.rooms()) == expected
    assert hub.rooms() == {c: len(m) for c, m in members.items() if m}
    assert hub.subscribed == expected
    assert broker.subscriptions == expected
    if redis_server is not None:
        reply = redis_server.command("PUBSUB", "CHANNELS", f"{prefix}ch:{{*").decode()
        on_server = {
            line[len(prefix) + 4 : -1] for line in reply.split("\r\n") if line.startswith(prefix)
        }
        assert on_server == expected
    # Every member really receives: publish one marker per channel.
    for channel, m in members.items():
        if not m:
            continue
        body = f'{{"marker":"{channel}-{secrets.token_hex(4)}"}}'.encode()
        await broker.publish(channel, seal(body))
        await wait_for_writes(list(m.values()), text_frame(body))


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_concurrent_joins_and_leaves(
    node: tuple[Hub, Broker, str], broker_url: str, request: pytest.FixtureRequest, seed: int
) -> None:
    """Many actors join and leave a few channels at random; the end state is consistent."""
    hub, broker, prefix = node
    redis_server = request.getfixturevalue("redis_server") if broker_url != "memory://" else None
    rng = random.Random(seed)
    flusher = Flusher(asyncio.get_running_loop())
    channels = [f"c{i}" for i in range(4)]
    members: dict[str, dict[str, RecordingTransport]] = {c: {} for c in channels}

    async def actor(name: str) -> None:
        joined: set[str] = set()
        for _ in range(40):
            channel = rng.choice(channels)
            if channel in joined:
                joined.discard(channel)
                members[channel].pop(name)
                await hub.leave(channel, name)
            else:
                outbound, transport = make_member(flusher)
                joined.add(channel)
                members[channel][name] = transport
                await hub.join(channel, name, outbound)
            if rng.random() < 0.3:
                await asyncio.sleep(rng.random() / 200)

    async with asyncio.timeout(60):
        await asyncio.gather(*(actor(f"actor{i}") for i in range(30)))
    await check_in_step(hub, broker, members, broker_url, prefix, redis_server)


async def test_join_while_last_member_is_leaving(
    node: tuple[Hub, Broker, str], broker_url: str, request: pytest.FixtureRequest
) -> None:
    """A join racing the unsubscribe of the channel's last member ends subscribed and receiving."""
    hub, broker, prefix = node
    redis_server = request.getfixturevalue("redis_server") if broker_url != "memory://" else None
    flusher = Flusher(asyncio.get_running_loop())
    for round_ in range(20):
        first, _ = make_member(flusher)
        await hub.join("hot", "first", first)
        second, second_transport = make_member(flusher)
        leaving = asyncio.create_task(hub.leave("hot", "first"))
        if round_ % 2:
            await asyncio.sleep(0)  # let the leave reach the broker before the join starts
        await hub.join("hot", "second", second)
        await leaving
        await check_in_step(
            hub, broker, {"hot": {"second": second_transport}}, broker_url, prefix, redis_server
        )
        await hub.leave("hot", "second")
    assert hub.subscribed == frozenset()
    assert broker.subscriptions == frozenset()


async def test_cancelled_join_leaves_no_subscription_behind(redis_server: RedisServer) -> None:
    """A join cancelled while its SUBSCRIBE is unanswered (the client left during an outage)
    leaves neither the hub nor the broker subscribed."""
    proxy = TcpProxy(redis_server.port)
    await proxy.start()
    broker = create_broker(proxy.url, prefix=f"cancel-{secrets.token_hex(3)}:")
    hub = Hub(broker)
    await broker.open(hub.deliver)
    try:
        proxy.freeze()  # requests go out, nothing comes back
        outbound, _ = make_member(Flusher(asyncio.get_running_loop()))
        join = asyncio.create_task(hub.join("stuck", "m1", outbound))
        await asyncio.sleep(0.3)
        join.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await join

        def clean() -> bool:
            return not hub.rooms() and not hub.subscribed and not broker.subscriptions

        await eventually(clean, timeout=10)
    finally:
        await cancel_and_wait(asyncio.create_task(broker.aclose()), 10)
        await proxy.aclose()
