"""The broker contract, run against every backend (memory, Redis, Redis Cluster and NATS).

Two brokers on one medium (a shared MemoryBus, one private Redis, one private Redis Cluster, or
one private NATS server) play two nodes of a cluster.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Protocol

import pytest

from sanic_feeds.brokers import Broker, DeliverFn, HistoryPolicy, MemoryBus, create_broker
from sanic_feeds.envelope import open_envelope
from sanic_feeds.errors import BrokerUnavailable
from sanic_feeds.history import HistoryRules
from support.collect import Deliveries
from support.nats_server import NatsServer
from support.redis_server import RedisServer
from support.ws import eventually


class OpenBroker(Protocol):
    def __call__(
        self, deliver: DeliverFn | None, history: HistoryPolicy | HistoryRules | None = None
    ) -> Awaitable[Broker]: ...


@pytest.fixture
async def open_broker(backend_url: str) -> AsyncIterator[OpenBroker]:
    """Factory of opened brokers sharing one medium; all are closed after the test."""
    bus = MemoryBus()
    prefix = f"test-{secrets.token_hex(3)}:"
    opened: list[Broker] = []

    async def factory(
        deliver: DeliverFn | None, history: HistoryPolicy | HistoryRules | None = None
    ) -> Broker:
        broker = create_broker(backend_url, prefix=prefix, bus=bus, history=history)
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
    assert details["backend"] in ("memory", "redis", "redis-cluster", "nats")
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
        await eventually(lambda: _reach(publisher, got, "a", "b"), timeout=20, interval=0.2)
        await node.check()
    finally:
        await node.aclose()
        await publisher.aclose()


async def test_nats_down_raises_broker_unavailable(nats_server: NatsServer) -> None:
    """Publishing or checking with NATS gone raises BrokerUnavailable, not a raw error."""
    broker = create_broker(nats_server.url, prefix=f"test-{secrets.token_hex(3)}:")
    await broker.open(Deliveries())
    try:
        nats_server.kill()
        await eventually(lambda: _refuses(broker.publish("x", b"1")), timeout=10, interval=0.05)
        with pytest.raises(BrokerUnavailable):
            await broker.check()
        with pytest.raises(BrokerUnavailable):
            await broker.publish_stored("x", b'{"type":"data"}')
    finally:
        nats_server.start()
        await broker.aclose()


async def _reach(publisher: Broker, got: Deliveries, first: str, second: str) -> bool:
    """Publish ``A`` to ``first`` and ``B`` to ``second``: True once both reached the node.

    While the restarted server is not back, publishing fails or the node is not subscribed
    again yet; ``eventually`` asks again until both arrive.
    """
    try:
        await publisher.publish(first, b"A")
        await publisher.publish(second, b"B")
    except BrokerUnavailable:
        return False
    await asyncio.sleep(0.05)
    return bool(got.payloads(first)) and bool(got.payloads(second))


async def _refuses(call: Awaitable[object]) -> bool:
    try:
        await call
    except BrokerUnavailable:
        return True
    return False


async def test_nats_restart_resubscribes_and_resumes(nats_server: NatsServer) -> None:
    """After NATS restarts, the node reconnects, subscribes again and reports the gap."""
    got, gaps = Deliveries(), list[str]()
    prefix = f"test-{secrets.token_hex(3)}:"
    node = create_broker(nats_server.url, prefix=prefix)
    publisher = create_broker(nats_server.url, prefix=prefix)
    await node.open(got, gaps.append)
    await publisher.open(None)
    try:
        await node.subscribe("a.1")
        await node.subscribe("b:2@x")
        before = await publisher.publish_stored("a.1", b'{"type":"data"}')
        nats_server.restart()
        await eventually(lambda: _reach(publisher, got, "a.1", "b:2@x"), timeout=20, interval=0.2)
        await node.check()
        assert set(gaps) >= {"a.1", "b:2@x"}
        after = await publisher.publish_stored("a.1", b'{"type":"data"}')
        assert (after.offset, after.epoch) == (before.offset + 1, before.epoch)  # kept on disk
    finally:
        await node.aclose()
        await publisher.aclose()


async def test_nats_url_password_is_redacted() -> None:
    """NATS URLs, with several servers, are shown without the password."""
    broker = create_broker("nats://user:secret@a.invalid:4222,b.invalid:4223")
    assert "secret" not in broker.url
    assert broker.url == "nats://user:***@a.invalid:4222,b.invalid:4223"


# -- history ---------------------------------------------------------------------------------------


async def test_stored_messages_get_growing_offsets_and_are_published_stamped(
    open_broker: OpenBroker,
) -> None:
    """publish_stored numbers messages 1, 2, 3... in one epoch; live and stored texts are equal."""
    got = Deliveries()
    node = await open_broker(got)
    await node.subscribe("chat")
    stored = [await node.publish_stored("chat", b'{"type":"data","n":%d}' % i) for i in range(3)]
    assert [s.offset for s in stored] == [1, 2, 3]
    assert len({s.epoch for s in stored}) == 1
    epoch = stored[0].epoch
    items = await got.wait_for(3)
    expected = [
        b'{"id":%d,"epoch":"%s","type":"data","n":%d}' % (i + 1, epoch.encode(), i)
        for i in range(3)
    ]
    envelopes = [open_envelope(p) for _, p in items]
    assert [e.body for e in envelopes] == expected
    assert all(e.exclude == "" for e in envelopes)
    assert all(e.sent_at is not None and abs(e.sent_at - time.time()) < 10 for e in envelopes)
    page = await node.history("chat", since=0, epoch=epoch, limit=100)
    assert page.messages == expected
    assert page.offsets == [1, 2, 3]
    assert (page.top, page.epoch, page.complete) == (3, epoch, True)


async def test_offsets_are_shared_by_all_nodes(open_broker: OpenBroker) -> None:
    """Two nodes storing to one channel draw offsets from one sequence."""
    one = await open_broker(None)
    two = await open_broker(None)
    offsets = []
    for i in range(10):
        node = one if i % 2 else two
        offsets.append((await node.publish_stored("shared", b'{"type":"data"}')).offset)
    assert offsets == list(range(1, 11))
    page = await one.history("shared", since=4, epoch=None, limit=100)
    assert page.offsets == list(range(5, 11))
    assert page.complete


async def test_history_since_latest_and_limit(open_broker: OpenBroker) -> None:
    """since=None gives the latest messages; a limit that cuts the gap makes it incomplete."""
    node = await open_broker(None)
    for i in range(20):
        await node.publish_stored("h", b'{"type":"data","n":%d}' % i)
    latest = await node.history("h", since=None, epoch=None, limit=5)
    assert latest.offsets == [16, 17, 18, 19, 20]
    cut = await node.history("h", since=10, epoch=None, limit=3)
    assert cut.offsets == [18, 19, 20]  # the newest: no hole between them and live messages
    assert not cut.complete
    caught_up = await node.history("h", since=20, epoch=None, limit=3)
    assert (caught_up.offsets, caught_up.complete) == ([], True)


async def test_history_that_no_longer_reaches_back_is_incomplete(open_broker: OpenBroker) -> None:
    """When the gap is older than what is kept, the page says so (recovered: false)."""
    node = await open_broker(None, HistoryPolicy(size=5, ttl=60))
    for _ in range(300):
        await node.publish_stored("small", b'{"type":"data"}')
    old = await node.history("small", since=1, epoch=None, limit=1000)
    assert not old.complete
    assert old.offsets and old.offsets[-1] == 300
    assert old.offsets == sorted(old.offsets)
    recent = await node.history("small", since=298, epoch=None, limit=1000)
    assert (recent.offsets, recent.complete) == ([299, 300], True)


async def test_other_epoch_gets_everything_and_incomplete(open_broker: OpenBroker) -> None:
    """A reader from another epoch (history lost and restarted) gets all of the current one."""
    node = await open_broker(None)
    for _ in range(3):
        await node.publish_stored("e", b'{"type":"data"}')
    page = await node.history("e", since=2, epoch="not-this-one", limit=100)
    assert page.offsets == [1, 2, 3]
    assert not page.complete
    ahead = await node.history("e", since=50, epoch=None, limit=100)
    assert ahead.offsets == [1, 2, 3]
    assert not ahead.complete


async def test_history_expires_and_restarts_with_a_new_epoch(open_broker: OpenBroker) -> None:
    """After ttl without publications the history is gone; the next message starts a new epoch."""
    node = await open_broker(None, HistoryPolicy(size=100, ttl=0.3))
    first = await node.publish_stored("brief", b'{"type":"data"}')
    await asyncio.sleep(0.5)
    gone = await node.history("brief", since=0, epoch=first.epoch, limit=10)
    assert (gone.offsets, gone.top, gone.complete) == ([], 0, False)
    again = await node.publish_stored("brief", b'{"type":"data"}')
    assert again.offset == 1
    assert again.epoch != first.epoch


async def test_a_namespace_with_a_shorter_ttl_loses_its_history_sooner(
    open_broker: OpenBroker,
) -> None:
    """A namespace's own history_ttl holds on every broker (on NATS the stream keeps the
    widest namespace's age; the channel's shorter one applies when read and stored)."""
    rules = HistoryRules(HistoryPolicy(size=100, ttl=60), {"brief": HistoryPolicy(100, 0.3)})
    node = await open_broker(None, rules)
    first = await node.publish_stored("brief:x", b'{"type":"data"}')
    kept = await node.publish_stored("long", b'{"type":"data"}')
    await asyncio.sleep(0.5)
    gone = await node.history("brief:x", since=0, epoch=first.epoch, limit=10)
    assert (gone.offsets, gone.top, gone.complete) == ([], 0, False)
    again = await node.publish_stored("brief:x", b'{"type":"data"}')
    assert again.offset == 1 and again.epoch != first.epoch
    assert (await node.history("brief:x", since=0, epoch=again.epoch, limit=10)).offsets == [1]
    still = await node.history("long", since=0, epoch=kept.epoch, limit=10)
    assert (still.offsets, still.complete) == ([1], True)


async def test_history_of_a_busy_channel_outlives_its_ttl(
    open_broker: OpenBroker, backend_url: str
) -> None:
    """Each publish keeps the history alive for ttl more: publishing every 0.1 s for three
    ttls of 0.3 s keeps the epoch and, on memory and Redis, every message (the expiry is
    renewed as it runs down). JetStream ages each message out on its own (``max_age``): there
    the newest are kept, with no hole before them."""
    node = await open_broker(None, HistoryPolicy(size=100, ttl=0.3))
    first = await node.publish_stored("busy", b'{"type":"data"}')
    for _ in range(9):
        await asyncio.sleep(0.1)
        await node.publish_stored("busy", b'{"type":"data"}')
    page = await node.history("busy", since=0, epoch=first.epoch, limit=100)
    assert page.epoch == first.epoch
    if backend_url.startswith("nats"):
        assert page.offsets == list(range(page.offsets[0], 11)) and len(page.offsets) >= 2
    else:
        assert (page.offsets, page.complete) == (list(range(1, 11)), True)


async def test_empty_channel_history(open_broker: OpenBroker) -> None:
    """A channel that never stored anything has an empty, complete history from 0."""
    node = await open_broker(None)
    page = await node.history("never", since=0, epoch=None, limit=10)
    assert (page.messages, page.top, page.epoch, page.complete) == ([], 0, "", True)


async def test_publish_with_an_idempotency_key_happens_once(open_broker: OpenBroker) -> None:
    """A retried publish with the same key returns the first result and delivers nothing."""
    got = Deliveries()
    node = await open_broker(got)
    await node.subscribe("once")
    first = await node.publish_stored("once", b'{"type":"data"}', "k-1")
    again = await node.publish_stored("once", b'{"type":"data"}', "k-1")
    other = await node.publish_stored("once", b'{"type":"data"}', "k-2")
    assert again == first
    assert other.offset == first.offset + 1
    await got.wait_for(2)
    await asyncio.sleep(0.1)
    assert len(got.items) == 2
    page = await node.history("once", since=0, epoch=None, limit=10)
    assert page.offsets == [1, 2]


async def test_removed_history_is_empty_everywhere_and_starts_anew(
    open_broker: OpenBroker,
) -> None:
    """remove_history forgets a channel's messages for every node (others keep theirs); the
    next stored publish, from any node, starts a new epoch at offset 1."""
    one = await open_broker(None)
    two = await open_broker(None)
    first = [await one.publish_stored("gone", b'{"type":"data"}') for _ in range(3)]
    await two.publish_stored("gone", b'{"type":"data"}')  # two now knows the channel's top
    await one.publish_stored("kept", b'{"type":"data"}')
    await one.remove_history("gone")
    for node in (one, two):
        page = await node.history("gone", since=None, epoch=None, limit=10)
        assert (page.messages, page.top) == ([], 0)
    assert (await two.history("kept", since=None, epoch=None, limit=10)).offsets == [1]
    again = await two.publish_stored("gone", b'{"type":"data"}')
    assert again.offset == 1
    assert again.epoch != first[0].epoch
    page = await one.history("gone", since=0, epoch=again.epoch, limit=10)
    assert (page.offsets, page.complete) == ([1], True)
    await one.remove_history("never-stored")  # nothing to remove: no error
