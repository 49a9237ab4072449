"""The Python client: typed messages, sending, and resuming without gaps after a restart."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time

import pytest

from sanic_feeds.brokers import MemoryBus, create_broker
from sanic_feeds.client import (
    Chat,
    Data,
    FeedClient,
    FeedClosed,
    Message,
    PresenceList,
    Recovered,
    ServerRotation,
    Welcome,
)
from support.local_server import local_server
from support.ports import free_port
from support.redis_server import RedisServer
from support.server_process import ServerProcess


async def next_of(feed: FeedClient, kind: type[Message]) -> Message:
    async with asyncio.timeout(10):
        async for message in feed:
            if isinstance(message, kind):
                return message
    raise AssertionError("feed ended")


async def next_of_type(feed: FeedClient, kind: str) -> Message:
    async with asyncio.timeout(10):
        async for message in feed:
            if message.type == kind:
                return message
    raise AssertionError("feed ended")


def no_jitter(low: float, high: float) -> float:
    return high


def test_rotation_with_one_server_is_plain_backoff() -> None:
    """One URL: every failure waits, doubling up to max_backoff; a working connection resets."""
    servers = ServerRotation("ws://a/", min_backoff=0.5, max_backoff=3, jitter=no_jitter)
    assert servers.urls == ("ws://a",)
    assert [servers.advance(1001), servers.advance(None), servers.advance(None)] == [0.5, 1, 2]
    assert [servers.advance(None), servers.advance(None)] == [3, 3]
    assert servers.current == "ws://a"
    servers.connected()
    assert servers.advance(1006) == 0.5


def test_rotation_moves_on_at_once_then_backs_off_after_a_round() -> None:
    """Several URLs: after a 1001 the next server is tried at once, and so is the one after
    when that fails; once every server failed in a row the waits double, still rotating."""
    servers = ServerRotation(["ws://a", "ws://b", "ws://c"], max_backoff=60, jitter=no_jitter)
    assert servers.current == "ws://a"
    steps = [(servers.advance(code), servers.current) for code in (1001, None, None, None, None)]
    assert steps == [(0, "ws://b"), (0, "ws://c"), (0.5, "ws://a"), (1, "ws://b"), (2, "ws://c")]
    servers.connected()  # c works; later it goes away too
    assert (servers.advance(1001), servers.current) == (0, "ws://a")


def test_rotation_waits_after_closes_another_server_cannot_fix() -> None:
    """A slow-consumer or internal-error close moves to the next server, but after a backoff;
    a dropped connection (1006) or a full server (1013) moves at once."""
    servers = ServerRotation(["ws://a", "ws://b"], jitter=no_jitter)
    assert (servers.advance(4001), servers.current) == (0.5, "ws://b")
    servers.connected()
    assert (servers.advance(1011), servers.current) == (0.5, "ws://a")
    for code in (1006, 1012, 1013):
        servers.connected()
        assert servers.advance(code) == 0


def test_rotation_jitter_and_validation() -> None:
    """Backoffs are scaled by the jitter draw between 0.5 and 1; a skip costs no failure; an
    empty list is refused."""
    draws: list[tuple[float, float]] = []

    def half(low: float, high: float) -> float:
        draws.append((low, high))
        return low

    servers = ServerRotation(["ws://a", "ws://b"], min_backoff=2, jitter=half)
    servers.skip()
    assert (servers.failures, servers.current) == (0, "ws://b")
    assert servers.advance(1001) == 0
    assert servers.advance(None) == 1.0
    assert draws == [(0.5, 1.0)]
    with pytest.raises(ValueError, match="at least one"):
        ServerRotation([])


async def test_several_urls_connects_past_a_dead_server() -> None:
    """Given [dead, live], the client connects to the live server and stays there."""
    dead = f"ws://127.0.0.1:{free_port()}"
    async with local_server(join_leave=False) as server:
        live = f"ws://127.0.0.1:{server.port}"
        async with FeedClient([dead, live], "lobby", user="bot") as feed:
            assert feed.urls == (dead, live)
            welcome = await next_of(feed, Welcome)
            assert isinstance(welcome, Welcome)
            assert feed.url == live
            assert feed.reconnects == 0
        with pytest.raises(ConnectionRefusedError):
            await FeedClient([dead], "lobby").connect()


async def test_moves_to_the_next_server_at_once_when_its_server_drains() -> None:
    """Two instances on one bus; the client's instance shuts down (1001): the client is on the
    other one well before its first backoff would end, and resumes without loss or repeat."""
    bus = MemoryBus()
    seen: list[int] = []

    async def receive(feed: FeedClient, count: int) -> None:
        while len(seen) < count:
            message = await next_of(feed, Data)
            assert isinstance(message, Data)
            seen.append(message.data)

    async with (
        local_server(bus=bus, join_leave=False) as second,
        contextlib.AsyncExitStack() as first_running,
    ):
        first = await first_running.enter_async_context(local_server(bus=bus, join_leave=False))
        urls = [f"ws://127.0.0.1:{first.port}", f"ws://127.0.0.1:{second.port}"]
        # min_backoff=10: any backoff would take 5 s or more.
        async with FeedClient(urls, "ticks", min_backoff=10) as feed:
            await next_of(feed, Welcome)
            await feed.ping()  # the pong says the channel is joined
            await next_of_type(feed, "pong")
            for n in range(3):
                await second.feeds.publish("ticks", n)
            await receive(feed, 3)
            await first_running.aclose()  # the first instance drains and stops
            for n in range(3, 6):  # while the client moves
                await second.feeds.publish("ticks", n)
            started = time.monotonic()
            await next_of(feed, Welcome)
            assert time.monotonic() - started < 3
            assert (feed.url, feed.reconnects) == (urls[1], 1)
            await second.feeds.publish("ticks", 6)
            await receive(feed, 7)
            assert seen == list(range(7))  # nothing lost, nothing twice, in order


async def test_typed_messages_and_sending() -> None:
    """Welcome, chat, data, subscribe and presence arrive as typed objects."""
    async with local_server(join_leave=False) as server:
        base = f"ws://127.0.0.1:{server.port}"
        async with FeedClient(base, "lobby", user="bot") as feed:
            welcome = await next_of(feed, Welcome)
            assert isinstance(welcome, Welcome)
            assert welcome.user == "bot"
            await feed.chat({"hi": 1})
            chat = await next_of(feed, Chat)
            assert isinstance(chat, Chat)
            assert (chat.user, chat.message, chat.id) == ("bot", {"hi": 1}, 1)
            await feed.subscribe("news")
            async with asyncio.timeout(10):
                async for message in feed:
                    if message.type == "subscribed":
                        break
            await server.feeds.publish("news", [1, 2])
            data = await next_of(feed, Data)
            assert isinstance(data, Data)
            assert (data.channel, data.data) == ("news", [1, 2])
            await feed.request_presence()
            presence = await next_of(feed, PresenceList)
            assert isinstance(presence, PresenceList)
            assert [c["user"] for c in presence.clients] == ["bot"]


async def test_resumes_after_a_server_restart_without_gaps(
    redis_server: RedisServer, redis_url: str
) -> None:
    """The server goes away; messages are published meanwhile; the client comes back with
    since and sees every message exactly once, in order."""
    publisher = create_broker(redis_url)
    await publisher.open(None)
    first = ServerProcess(redis_url)
    first.start()
    port = first.port

    async def publish(n: int) -> None:
        body = b'{"type":"data","channel":"ticks","data":%d}' % n
        await publisher.publish_stored("ticks", body)

    try:
        async with FeedClient(f"ws://127.0.0.1:{port}", "ticks", min_backoff=0.1) as feed:
            seen: list[int] = []
            await next_of(feed, Welcome)
            for n in range(5):
                await publish(n)
            while len(seen) < 5:
                message = await next_of(feed, Data)
                assert isinstance(message, Data)
                seen.append(message.data)
            await asyncio.to_thread(first.stop)
            for n in range(5, 15):  # published while no instance is up
                await publish(n)
            second = ServerProcess(redis_url, port=port)
            await asyncio.to_thread(second.start)
            try:
                await publish(15)
                recovered: list[Recovered] = []
                async with asyncio.timeout(20):
                    async for message in feed:
                        if isinstance(message, Recovered):
                            recovered.append(message)
                        elif isinstance(message, Data):
                            seen.append(message.data)
                        if len(seen) >= 16 and recovered:
                            break
                assert seen == list(range(16))  # nothing lost, nothing twice, in order
                assert [r.recovered for r in recovered] == [True]
                assert feed.reconnects == 1
            finally:
                await asyncio.to_thread(second.stop)
    finally:
        await publisher.aclose()
        first.close()


async def test_final_close_raises() -> None:
    """A refused credential ends the iteration with FeedClosed (no reconnect loop)."""
    async with local_server(auth="token", tokens=("good=ann",)) as server:
        base = f"ws://127.0.0.1:{server.port}"
        async with FeedClient(base, "lobby", token="bad") as feed:
            with pytest.raises(FeedClosed) as closed:
                await next_of(feed, Welcome)
            assert closed.value.code == 1008
        async with FeedClient(base, "lobby", token="good") as feed:
            welcome = await next_of(feed, Welcome)
            assert isinstance(welcome, Welcome)
            assert welcome.user == "ann"


async def test_tail_command_prints_messages() -> None:
    """sanic-feeds tail prints each message of the channel as a line; given several --url, it
    follows the first one that answers."""
    async with local_server(join_leave=False) as server:
        tail = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sanic_feeds",
            "tail",
            "alerts",
            "--url",
            f"ws://127.0.0.1:{free_port()}",
            "--url",
            f"ws://127.0.0.1:{server.port}",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert tail.stdout is not None
            async with asyncio.timeout(20):
                first = await tail.stdout.readline()
                assert b"system" in first
                await server.feeds.publish("alerts", {"level": "high"})
                line = await tail.stdout.readline()
            assert line.decode().strip() == '[alerts] data: {"level":"high"}'
        finally:
            tail.terminate()
            await tail.wait()
