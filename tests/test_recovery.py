"""Lossless reconnect: ids, history replay with ``since``, and ``recovered``, on both brokers.

Two server instances share one medium (a MemoryBus, or the private Redis), as two nodes of a
cluster behind a load balancer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from sanic_feeds.brokers import MemoryBus
from support.local_server import LocalServer, local_server
from support.ws import eventually, recv_json, recv_until

Settings = dict[str, Any]


@pytest.fixture
async def two_nodes(broker_url: str) -> AsyncIterator[tuple[LocalServer, LocalServer]]:
    bus = MemoryBus()
    async with AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(
                local_server(broker=broker_url, bus=bus, join_leave=False)
            )
            for _ in range(2)
        ]
        yield servers[0], servers[1]


async def chat(ws: ClientConnection, message: object) -> None:
    await ws.send(orjson.dumps({"type": "chat", "message": message}).decode())


def carries(value: int) -> Callable[[dict[str, Any]], bool]:
    """The predicate for a chat or data message whose content is ``value``."""
    return lambda message: message.get("message", message.get("data")) == value


async def next_stored(ws: ClientConnection) -> dict[str, Any]:
    """The next chat or data message (skipping notices)."""
    return await recv_until(ws, lambda m: m["type"] in ("chat", "data", "recovered"), timeout=10)


async def test_reconnect_gets_exactly_the_missed_messages_then_live(
    two_nodes: tuple[LocalServer, LocalServer],
) -> None:
    """Disconnect, 100 messages (chat and data, through both instances), reconnect with since:
    exactly those 100 in order, then recovered, then live ones; nothing twice."""
    one, two = two_nodes
    async with connect(one.ws_url("room"), max_queue=None) as ws:
        await recv_json(ws)
        await one.feeds.publish("room", "before")
        seen = await next_stored(ws)
        last, epoch = seen["id"], seen["epoch"]

    async with connect(two.ws_url("room"), max_queue=None) as talker:
        await recv_json(talker)
        for i in range(100):
            if i % 3 == 0:
                await chat(talker, i)
            elif i % 3 == 1:
                await one.feeds.publish("room", i)
            else:
                await two.feeds.publish("room", i)
            await recv_until(talker, carries(i))

    async with connect(one.ws_url("room", since=str(last), epoch=epoch), max_queue=None) as back:
        assert (await recv_json(back))["type"] == "system"
        replayed = [await next_stored(back) for _ in range(100)]
        assert [m["id"] for m in replayed] == list(range(last + 1, last + 101))
        assert [m.get("message", m.get("data")) for m in replayed] == list(range(100))
        assert {m["epoch"] for m in replayed} == {epoch}
        done = await recv_json(back)
        assert done == {
            "type": "recovered",
            "channel": "room",
            "recovered": True,
            "count": 100,
            "epoch": epoch,
            "offset": last + 100,
        }
        await two.feeds.publish("room", "live")
        live = await next_stored(back)
        assert (live["id"], live["data"]) == (last + 101, "live")


async def test_publishes_racing_the_replay_are_neither_lost_nor_doubled(
    two_nodes: tuple[LocalServer, LocalServer],
) -> None:
    """Messages published while the replay runs arrive once, in order, after recovered."""
    one, two = two_nodes
    for i in range(50):
        await two.feeds.publish("race", i)
    total = 400

    async def keep_publishing() -> None:
        for i in range(50, total):
            await (one if i % 2 else two).feeds.publish("race", i)
            if i % 10 == 0:
                await asyncio.sleep(0)

    publisher = asyncio.create_task(keep_publishing())
    try:
        async with connect(two.ws_url("race", since="10"), max_queue=None) as ws:
            assert (await recv_json(ws))["type"] == "system"
            ids: list[int] = []
            recovered_at = -1
            while not ids or ids[-1] < total:
                msg = await recv_json(ws, timeout=10)
                if msg["type"] == "recovered":
                    assert msg["recovered"] is True
                    recovered_at = len(ids)
                    assert msg["offset"] == ids[-1]
                else:
                    assert msg["type"] == "data"
                    ids.append(msg["id"])
            assert ids == list(range(11, total + 1))
            assert recovered_at >= 40  # at least the 40 stored before we connected
    finally:
        await publisher


async def test_gap_larger_than_history_says_recovered_false(broker_url: str) -> None:
    """When the history no longer reaches back to since, recovered is false."""
    async with local_server(broker=broker_url, history_size=5, join_leave=False) as server:
        for i in range(300):
            await server.feeds.publish("busy", i)
        async with connect(server.ws_url("busy", since="1"), max_queue=None) as ws:
            await recv_json(ws)
            done = await recv_until(ws, lambda m: m["type"] == "recovered", timeout=10)
            assert done["recovered"] is False
            assert done["offset"] == 300


async def test_subscribe_with_since_over_the_socket(broker_url: str) -> None:
    """A subscribe frame with since/epoch recovers like the URL does."""
    async with local_server(broker=broker_url, join_leave=False) as server:
        for i in range(5):
            await server.feeds.publish("news", i)
        async with connect(server.ws_url("home"), max_queue=None) as ws:
            await recv_json(ws)
            await ws.send(
                orjson.dumps({"type": "subscribe", "channel": "news", "since": 2}).decode()
            )
            got = [await recv_json(ws) for _ in range(5)]
            assert [m["data"] for m in got[:3]] == [2, 3, 4]
            assert got[3]["type"] == "recovered"
            assert got[3]["recovered"] is True
            assert got[4] == {"type": "subscribed", "channel": "news"}


async def test_other_epoch_replays_everything_and_says_not_recovered(broker_url: str) -> None:
    """A since from a lost history (other epoch) gets what exists now, recovered false."""
    async with local_server(broker=broker_url, join_leave=False) as server:
        for i in range(3):
            await server.feeds.publish("e", i)
        async with connect(server.ws_url("e", since="2", epoch="deadbeef"), max_queue=None) as ws:
            await recv_json(ws)
            got = [await recv_json(ws) for _ in range(4)]
            assert [m.get("data") for m in got[:3]] == [0, 1, 2]
            assert (got[3]["type"], got[3]["recovered"]) == ("recovered", False)


async def test_invalid_since_is_an_error_not_a_disconnect() -> None:
    """A malformed since in the URL gets a documented error; the connection works live."""
    async with local_server(join_leave=False) as server:
        async with connect(server.ws_url("x", since="-3")) as ws:
            await recv_json(ws)
            err = await recv_json(ws)
            assert (err["type"], err["code"]) == ("error", "invalid_message")
            await server.feeds.publish("x", "live")
            assert (await recv_json(ws))["data"] == "live"


async def test_history_off_means_no_ids() -> None:
    """With history_size 0 messages carry no id, and recovery reports recovered false."""
    async with local_server(history_size=0, join_leave=False) as server:
        async with connect(server.ws_url("plain", since="3")) as ws:
            await recv_json(ws)
            assert (await recv_json(ws))["recovered"] is False
            await server.feeds.publish("plain", 1)
            assert await recv_json(ws) == {"type": "data", "channel": "plain", "data": 1}


async def test_history_http_api(broker_url: str) -> None:
    """GET /api/channels/<c>/history: latest or after since, with epoch/top/complete."""
    async with local_server(broker=broker_url) as server:
        for i in range(10):
            await server.feeds.publish("log", {"n": i})
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            latest = (await http.get("/api/channels/log/history", params={"limit": 3})).json()
            assert [m["data"]["n"] for m in latest["messages"]] == [7, 8, 9]
            assert latest["top"] == 10
            epoch = latest["epoch"]
            after = (
                await http.get("/api/channels/log/history", params={"since": 8, "epoch": epoch})
            ).json()
            assert [m["id"] for m in after["messages"]] == [9, 10]
            assert after["complete"] is True
            empty = (await http.get("/api/channels/nothing/history")).json()
            assert empty == {
                "channel": "nothing",
                "epoch": "",
                "top": 0,
                "complete": True,
                "messages": [],
            }
            bad = await http.get("/api/channels/log/history", params={"since": "x"})
            assert bad.status_code == 400
            assert bad.json()["error"] == "invalid_request"
            bad_channel = await http.get("/api/channels/no%20way/history")
            assert bad_channel.status_code == 400
            assert bad_channel.json()["error"] == "invalid_channel"


async def test_presence_across_instances_agrees_with_rooms(
    two_nodes: tuple[LocalServer, LocalServer],
) -> None:
    """presence over the socket and the HTTP API lists members of both instances; /api/rooms
    counts the same members."""
    one, two = two_nodes
    async with (
        connect(one.ws_url("team", user="ann")) as ann,
        connect(two.ws_url("team", user="bob")) as bob,
    ):
        ann_id = (await recv_json(ann))["client"]
        bob_id = (await recv_json(bob))["client"]

        async def both_listed() -> bool:
            await ann.send(orjson.dumps({"type": "presence"}).decode())
            reply = await recv_until(ann, lambda m: m["type"] == "presence")
            return {c["client"]: c["user"] for c in reply["clients"]} == {
                ann_id: "ann",
                bob_id: "bob",
            }

        await eventually(both_listed, timeout=10)
        async with httpx.AsyncClient() as http:
            for server in (one, two):
                listed = (await http.get(f"{server.http_url}/api/channels/team/presence")).json()
                assert listed["total"] == 2
                assert {c["user"] for c in listed["clients"]} == {"ann", "bob"}
                assert all(isinstance(c["joined_at"], float) for c in listed["clients"])
                rooms = (await http.get(f"{server.http_url}/api/rooms")).json()
                assert rooms["counts"]["team"] == listed["total"]

        await ann.send(orjson.dumps({"type": "presence", "channel": "elsewhere"}).decode())
        err = await recv_until(ann, lambda m: m["type"] == "error")
        assert err["code"] == "not_subscribed"

    async def gone() -> bool:
        async with httpx.AsyncClient() as http:
            listed = (await http.get(f"{one.http_url}/api/channels/team/presence")).json()
        return bool(listed["total"] == 0)

    await eventually(gone, timeout=10)
