"""Each fault of the original gist's design, pinned by a test that would catch it coming back.

The gist ("Sanic websocket feeds v3") showed these faults when run: messages of one channel read by
another channel's receiver; ``get_message(timeout=0)`` spinning the CPU; an emptied channel
resetting the shared PubSub and unsubscribing every other channel; "Lock is not acquired" when two
clients left at once; serial sends, so one slow client delayed everyone; "Set changed size during
iteration" when a client joined during a broadcast; the receiver dying on a client closed
mid-broadcast; and no resubscribe after a Redis restart.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect

from sanic_feeds.control import CONTROL_CHANNEL
from sanic_feeds.protocol import CloseCode
from support.local_server import LocalServer, local_server
from support.redis_server import RedisServer
from support.stalled import StalledClient
from support.ws import eventually, recv_json, recv_until


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def pubsub_clients(url: str) -> list[bytes]:
    """``CLIENT LIST TYPE pubsub`` of the Redis at ``url``, one line per connection."""
    client = Redis.from_url(url)
    try:
        listing: bytes = await client.execute_command("CLIENT", "LIST", "TYPE", "pubsub")
    finally:
        await client.aclose()
    return listing.splitlines()


async def joined(server: LocalServer, channel: str, count: int) -> None:
    def enough() -> bool:
        return server.node.hub.members(channel) == count

    await eventually(enough, timeout=10)


async def test_channels_never_receive_each_others_messages(broker_url: str) -> None:
    """With one subscriber connection for all channels, no message reaches another channel."""
    async with local_server(broker=broker_url, join_leave=False) as server:
        channels = [f"room{i}" for i in range(8)]
        clients = [await connect(server.ws_url(c)) for c in channels]
        try:
            for ws in clients:
                await recv_json(ws)
            for round_ in range(5):
                for channel in channels:
                    await server.feeds.publish(channel, {"for": channel, "n": round_})
            for channel, ws in zip(channels, clients, strict=True):
                got = [await recv_json(ws) for _ in range(5)]
                assert [m["data"] for m in got] == [{"for": channel, "n": n} for n in range(5)]
            # No reader task at all: messages are read in the one subscriber connection's
            # callback, so no two readers can share (and steal from) one connection.
            assert not [t for t in asyncio.all_tasks() if "reader" in t.get_name()]
            if broker_url.startswith("redis"):
                name = f"sanic-feeds:{server.node.id}".encode()
                listing = await pubsub_clients(broker_url)
                assert sum(1 for line in listing if b"name=" + name + b" " in line) == 1
        finally:
            for ws in clients:
                await ws.close()


async def test_idle_server_does_not_spin(redis_url: str) -> None:
    """With many channels subscribed and no traffic, the process uses almost no CPU."""
    async with local_server(broker=redis_url, join_leave=False) as server:
        clients = [await connect(server.ws_url(f"idle{i}")) for i in range(30)]
        try:
            for ws in clients:
                await recv_json(ws)
            assert len(server.node.broker.subscriptions - {CONTROL_CHANNEL}) == 30
            started = time.process_time()
            await asyncio.sleep(2.0)
            used = time.process_time() - started
            assert used < 0.3, f"idle process used {used:.2f} s CPU in 2 s"
        finally:
            for ws in clients:
                await ws.close()


async def test_emptied_channel_does_not_unsubscribe_the_others(broker_url: str) -> None:
    """When one channel's last member leaves, every other channel keeps receiving."""
    async with local_server(broker=broker_url, join_leave=False) as server:
        async with connect(server.ws_url("stays")) as stays:
            await recv_json(stays)
            async with connect(server.ws_url("empties")) as leaver:
                await recv_json(leaver)

            def unsubscribed() -> bool:
                return server.node.broker.subscriptions - {CONTROL_CHANNEL} == {"stays"}

            await eventually(unsubscribed, timeout=5)
            await server.feeds.publish("stays", "still here")
            assert (await recv_json(stays))["data"] == "still here"


async def test_many_clients_leaving_at_once(
    broker_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Simultaneous leaves raise nothing and leave no subscription behind."""
    async with local_server(broker=broker_url) as server:
        # max_queue=None: these clients never read, and a websockets client with a full queue
        # stops reading its socket, so it would not see the server's close reply.
        clients = [await connect(server.ws_url("crowd"), max_queue=None) for _ in range(25)]
        for ws in clients:
            await recv_json(ws)
        await asyncio.gather(*(ws.close() for ws in clients))

        def empty() -> bool:
            node = server.node
            channels = node.broker.subscriptions - {CONTROL_CHANNEL}
            return not node.hub.rooms() and not channels and not node.sessions

        await eventually(empty, timeout=10)
        assert errors_logged(caplog) == []


async def test_stalled_client_does_not_delay_the_others(broker_url: str) -> None:
    """A client that stops reading is cut off with 4001; the others get everything, in order."""
    limit = 256 * 1024
    async with local_server(
        broker=broker_url, join_leave=False, client_buffer=limit, close_timeout=2
    ) as server:
        stalled = await StalledClient.connect(server.port, "/feed/flood")
        fast = [await connect(server.ws_url("flood"), max_queue=None) for _ in range(5)]
        try:
            for ws in fast:
                await recv_json(ws)
            await joined(server, "flood", 6)
            blob = "x" * 32000
            started = time.monotonic()
            # 12.8 MB: more than the stalled client's buffer plus what the kernel buffers hold.
            for n in range(400):
                await server.feeds.publish("flood", {"n": n, "blob": blob})
                await asyncio.sleep(0)  # the fast clients live in this event loop too
            for ws in fast:
                got = [(await recv_json(ws, timeout=10))["data"]["n"] for _ in range(400)]
                assert got == list(range(400))
            assert time.monotonic() - started < 10

            cut = [s for s in server.node.sessions.values() if s.close_code is not None]
            assert [s.close_code for s in cut] == [CloseCode.SLOW_CONSUMER]
            assert cut[0].outbound.high_water <= limit
            assert all(s.outbound.high_water <= limit for s in server.node.sessions.values())
            # Reading now, the client finds the close frame: code 4001, reason "slow consumer".
            data = await stalled.read_all(timeout=10)
            assert data.endswith(b"\x88\x0f\x0f\xa1slow consumer")
            await joined(server, "flood", 5)
        finally:
            stalled.close()
            for ws in fast:
                await ws.close()


async def test_stalled_client_is_dropped_after_close_timeout(broker_url: str) -> None:
    """A client that never reads again is dropped once close_timeout passes; it stops costing."""
    async with local_server(
        broker=broker_url, join_leave=False, client_buffer=256 * 1024, close_timeout=0.5
    ) as server:
        stalled = await StalledClient.connect(server.port, "/feed/flood")
        try:
            await joined(server, "flood", 1)
            for n in range(400):  # 12.8 MB, more than any kernel buffer holds
                await server.feeds.publish("flood", {"n": n, "blob": "y" * 32000})
                await asyncio.sleep(0)
            await joined(server, "flood", 0)

            def gone() -> bool:
                return not server.node.sessions

            await eventually(gone, timeout=10)
        finally:
            stalled.close()


async def test_joins_and_leaves_during_a_broadcast(
    broker_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Members joining and leaving while messages fan out break nothing; steady members get all."""
    async with local_server(broker=broker_url, join_leave=True) as server:
        async with connect(server.ws_url("busy"), max_queue=None) as steady:
            await recv_json(steady)

            async def churn() -> None:
                for _ in range(15):
                    async with connect(server.ws_url("busy"), max_queue=None) as ws:
                        await recv_json(ws)

            async def flood() -> None:
                for n in range(1000):
                    await server.feeds.publish("busy", n)
                    if n % 50 == 0:
                        await asyncio.sleep(0)

            await asyncio.gather(churn(), churn(), flood())
            seen: list[int] = []
            while len(seen) < 1000:
                msg = await recv_json(steady, timeout=10)
                if msg["type"] == "data":
                    seen.append(msg["data"])
            assert seen == list(range(1000))
        assert errors_logged(caplog) == []


async def test_clients_vanishing_mid_broadcast_do_not_stop_delivery(broker_url: str) -> None:
    """Clients dropping their TCP connection during a flood do not hurt the reader or others."""
    async with local_server(broker=broker_url, join_leave=False) as server:
        async with connect(server.ws_url("rough"), max_queue=None) as steady:
            await recv_json(steady)
            doomed: list[ClientConnection] = [
                await connect(server.ws_url("rough")) for _ in range(10)
            ]
            for ws in doomed:
                await recv_json(ws)

            async def flood() -> None:
                for n in range(600):
                    await server.feeds.publish("rough", n)
                    if n % 20 == 0:
                        await asyncio.sleep(0)

            async def vanish() -> None:
                for ws in doomed:
                    ws.transport.abort()
                    await asyncio.sleep(0.001)

            await asyncio.gather(flood(), vanish())
            got = [(await recv_json(steady, timeout=10))["data"] for _ in range(600)]
            assert got == list(range(600))
            healthy, _ = await server.node.health()
            assert healthy


async def test_delivery_resumes_after_redis_restart(
    redis_server: RedisServer, redis_url: str
) -> None:
    """After Redis restarts, the server re-subscribes its channels and delivery resumes."""
    async with local_server(broker=redis_url, join_leave=False) as server:
        async with connect(server.ws_url("survivor")) as ws:
            await recv_json(ws)
            redis_server.restart()

            async def delivered() -> bool:
                try:
                    await server.feeds.publish("survivor", "after restart")
                except Exception:
                    return False
                try:
                    msg = await recv_until(ws, lambda m: m["type"] == "data", timeout=0.5)
                except TimeoutError:
                    return False
                return bool(msg["data"] == "after restart")

            await eventually(delivered, timeout=20, interval=0.2)
            await ws.send(orjson.dumps({"type": "ping"}).decode())
            await recv_until(ws, lambda m: m["type"] == "pong")


def publish_calls(redis_server: RedisServer) -> int:
    """PUBLISH commands Redis has run since the last CONFIG RESETSTAT."""
    info = redis_server.command("INFO", "commandstats").decode()
    for line in info.splitlines():
        if line.startswith("cmdstat_publish:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


async def test_join_and_leave_notices_cost_one_publish_each_not_one_per_member(
    redis_server: RedisServer, redis_url: str
) -> None:
    """N members joining and leaving: 2N notices through Redis, fanned out on the node (the
    seeds published per member)."""
    members = 30
    async with local_server(
        broker=redis_url, join_leave=True, broker_probe_interval=600, broker_probe_timeout=600
    ) as server:
        assert redis_server.command("CONFIG", "RESETSTAT") == b"+OK\r\n"
        clients = []
        for _ in range(members):
            ws = await connect(server.ws_url("crowd"), max_queue=None)
            await recv_json(ws)
            clients.append(ws)
        # Each join's notice reaches every member already there: about members^2 / 2 deliveries.
        notices = members * (members - 1) // 2
        await eventually(lambda: server.node.hub.deliveries >= notices, timeout=5)
        assert publish_calls(redis_server) <= members + 1
        for ws in clients:
            await ws.close()
        await eventually(lambda: not server.node.sessions, timeout=10)
        publishes = publish_calls(redis_server)
        assert 2 * members <= publishes <= 2 * members + 2, publishes
