"""The Python client: typed messages, sending, and resuming without gaps after a restart."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from sanic_feeds.brokers import create_broker
from sanic_feeds.client import (
    Chat,
    Data,
    FeedClient,
    FeedClosed,
    Message,
    PresenceList,
    Recovered,
    Welcome,
)
from support.local_server import local_server
from support.redis_server import RedisServer
from support.server_process import ServerProcess


async def next_of(feed: FeedClient, kind: type[Message]) -> Message:
    async with asyncio.timeout(10):
        async for message in feed:
            if isinstance(message, kind):
                return message
    raise AssertionError("feed ended")


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
    """sanic-feeds tail prints each message of the channel as a line."""
    async with local_server(join_leave=False) as server:
        tail = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sanic_feeds",
            "tail",
            "alerts",
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
