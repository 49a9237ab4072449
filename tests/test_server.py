"""End-to-end behaviour of one server through real WebSocket clients, on both brokers."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sanic_feeds.protocol import CloseCode
from support.local_server import local_server
from support.ws import eventually, expect_marker, is_data, is_pong, new_marker, recv_json


async def send(ws: ClientConnection, message: object) -> None:
    await ws.send(orjson.dumps(message).decode())


async def test_welcome_then_join_notice_to_others_only(broker_url: str) -> None:
    """The joiner gets the welcome; only the others get user_joined."""
    async with local_server(broker=broker_url) as server:
        async with connect(server.ws_url("lobby", user="ann")) as ann:
            welcome = await recv_json(ann)
            assert welcome["type"] == "system"
            assert welcome["channel"] == "lobby"
            assert welcome["user"] == "ann"
            assert isinstance(welcome["client"], str) and welcome["client"]
            # Once ann's ping is answered her join (and its notice) is done.
            await send(ann, {"type": "ping"})
            assert await recv_json(ann) == {"type": "pong"}
            async with connect(server.ws_url("lobby", user="bob")) as bob:
                bob_welcome = await recv_json(bob)
                joined = await recv_json(ann)
                assert joined == {
                    "type": "user_joined",
                    "channel": "lobby",
                    "client": bob_welcome["client"],
                    "user": "bob",
                }
                # The notice went out before this marker on the channel: bob did not get it.
                marker = new_marker()
                await server.feeds.publish("lobby", marker)
                await expect_marker(bob, is_data(marker))
                await expect_marker(ann, is_data(marker))
            left = await recv_json(ann)
            assert left["type"] == "user_left"
            assert left["client"] == bob_welcome["client"]


async def test_chat_reaches_every_member_including_sender(broker_url: str) -> None:
    async with local_server(broker=broker_url, join_leave=False) as server:
        async with (
            connect(server.ws_url("room", user="ann")) as ann,
            connect(server.ws_url("room", user="bob")) as bob,
        ):
            await recv_json(ann)
            bob_id = (await recv_json(bob))["client"]
            await send(bob, {"type": "chat", "message": {"text": "hi", "n": [1, 2]}})
            for ws in (ann, bob):
                got = await recv_json(ws)
                assert got.pop("id") == 1
                assert isinstance(got.pop("epoch"), str)
                assert got == {
                    "type": "chat",
                    "channel": "room",
                    "client": bob_id,
                    "user": "bob",
                    "message": {"text": "hi", "n": [1, 2]},
                }


async def test_messages_arrive_in_publish_order(broker_url: str) -> None:
    async with local_server(broker=broker_url, join_leave=False) as server:
        async with (
            connect(server.ws_url("seq"), max_queue=None) as sender,
            connect(server.ws_url("seq"), max_queue=None) as receiver,
        ):
            await recv_json(sender)
            await recv_json(receiver)
            for i in range(300):
                await send(sender, {"type": "chat", "message": i})
            got = [(await recv_json(receiver))["message"] for _ in range(300)]
            assert got == list(range(300))


async def test_backend_publish_delivers_data(broker_url: str) -> None:
    async with local_server(broker=broker_url) as server:
        async with connect(server.ws_url("prices")) as ws:
            await recv_json(ws)
            await server.feeds.publish("prices", {"AAPL": 187.25})
            got = await recv_json(ws)
            assert got.pop("id") == 1
            assert isinstance(got.pop("epoch"), str)
            assert got == {
                "type": "data",
                "channel": "prices",
                "data": {"AAPL": 187.25},
            }
        with pytest.raises(ValueError, match="invalid channel"):
            await server.feeds.publish("no spaces", 1)


async def test_subscribe_unsubscribe_and_chat_on_named_channel(broker_url: str) -> None:
    async with local_server(broker=broker_url, join_leave=False) as server:
        async with (
            connect(server.ws_url("home")) as multi,
            connect(server.ws_url("news")) as news_only,
        ):
            await recv_json(multi)
            await recv_json(news_only)
            await send(multi, {"type": "subscribe", "channel": "news"})
            assert await recv_json(multi) == {"type": "subscribed", "channel": "news"}
            await server.feeds.publish("news", "headline")
            assert (await recv_json(multi))["data"] == "headline"
            assert (await recv_json(news_only))["data"] == "headline"

            await send(multi, {"type": "chat", "channel": "news", "message": "on news"})
            for ws in (multi, news_only):
                got = await recv_json(ws)
                assert (got["channel"], got["message"]) == ("news", "on news")

            await send(multi, {"type": "unsubscribe", "channel": "news"})
            assert await recv_json(multi) == {"type": "unsubscribed", "channel": "news"}
            await server.feeds.publish("news", "second")
            assert (await recv_json(news_only))["data"] == "second"
            # "second" was fanned out to news' members at once; a pong follows anything queued.
            await send(multi, {"type": "ping"})
            await expect_marker(multi, is_pong)

            await send(multi, {"type": "chat", "channel": "news", "message": "x"})
            err = await recv_json(multi)
            assert (err["type"], err["code"], err["channel"]) == ("error", "not_subscribed", "news")
            await send(multi, {"type": "unsubscribe", "channel": "news"})
            assert (await recv_json(multi))["code"] == "not_subscribed"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_message"),
        ('{"message": "no type"}', "missing_field"),
        ('{"type": 5}', "invalid_message"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "chat"}', "missing_field"),
        ('{"type": "subscribe"}', "missing_field"),
        ('{"type": "subscribe", "channel": "bad name"}', "invalid_channel"),
        ('{"type": "subscribe", "channel": 7}', "invalid_channel"),
        ('{"type": "chat", "message": 1, "channel": "x/y"}', "invalid_channel"),
    ],
)
async def test_bad_input_gets_error_and_connection_survives(frame: str, code: str) -> None:
    async with local_server() as server, connect(server.ws_url("lobby")) as ws:
        await recv_json(ws)
        await ws.send(frame)
        err = await recv_json(ws)
        assert err["type"] == "error"
        assert err["code"] == code
        assert isinstance(err["message"], str) and err["message"]
        await send(ws, {"type": "ping"})
        assert await recv_json(ws) == {"type": "pong"}


async def test_invalid_json_message_text_matches_the_seed() -> None:
    async with local_server() as server, connect(server.ws_url("lobby")) as ws:
        await recv_json(ws)
        await ws.send("{oops")
        assert await recv_json(ws) == {
            "type": "error",
            "code": "invalid_json",
            "message": "Invalid JSON format",
        }


async def test_binary_frame_gets_error() -> None:
    async with local_server() as server, connect(server.ws_url("lobby")) as ws:
        await recv_json(ws)
        await ws.send(b"\x00\x01")
        assert (await recv_json(ws))["code"] == "binary_not_supported"


async def test_invalid_channel_in_url_closes_4400() -> None:
    async with local_server() as server, connect(server.ws_url("bad$name")) as ws:
        with pytest.raises(ConnectionClosed):
            await recv_json(ws)
        assert ws.close_code == CloseCode.INVALID_CHANNEL
        assert "invalid channel" in (ws.close_reason or "")


async def test_user_from_query_is_cleaned_else_generated() -> None:
    async with local_server() as server:
        async with connect(server.ws_url("lobby", user="  eve\x00\x07 ")) as ws:
            assert (await recv_json(ws))["user"] == "eve"
        async with connect(server.ws_url("lobby", user="x" * 500)) as ws:
            assert (await recv_json(ws))["user"] == "x" * 64
        async with connect(server.ws_url("lobby")) as ws:
            assert (await recv_json(ws))["user"].startswith("guest-")


async def test_join_leave_off_and_pattern_exceptions() -> None:
    async with local_server(join_leave=False, join_leave_except=("chat-*",)) as server:
        for channel, notices in (("ticker", False), ("chat-1", True)):
            async with connect(server.ws_url(channel)) as first:
                await recv_json(first)
                async with connect(server.ws_url(channel)) as second:
                    await recv_json(second)
                    # The pong means second's join, with any notice, is complete.
                    await send(second, {"type": "ping"})
                    await expect_marker(second, is_pong)
                    if notices:
                        assert (await recv_json(first))["type"] == "user_joined"
                    marker = new_marker()
                    await server.feeds.publish(channel, marker)
                    await expect_marker(first, is_data(marker))


async def test_rooms_and_health(broker_url: str) -> None:
    async with local_server(broker=broker_url) as server:
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            assert (await http.get("/api/rooms")).json()["total_clients"] == 0
            async with connect(server.ws_url("a")) as one, connect(server.ws_url("b")) as two:
                await recv_json(one)
                await recv_json(two)
                await send(two, {"type": "subscribe", "channel": "a"})
                await recv_json(two)
                body = (await http.get("/api/rooms")).json()
                assert body["rooms"] == ["a", "b"]
                assert body["total_clients"] == 2
                assert body["counts"] == {"a": 2, "b": 1}
            health = await http.get("/health")
            assert health.status_code == 200
            assert health.json()["status"] == "ok"
            assert health.json()["broker"]["ok"] is True

            async def rooms_empty() -> bool:
                body: object = (await http.get("/api/rooms")).json()
                return body == {
                    "rooms": [],
                    "total_clients": 0,
                    "counts": {},
                }

            await eventually(rooms_empty, timeout=5)


async def test_page_is_served() -> None:
    async with local_server() as server, httpx.AsyncClient(base_url=server.http_url) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert 'id="log"' in page.text


async def test_channel_unsubscribed_from_broker_after_last_member_leaves(broker_url: str) -> None:
    async with local_server(broker=broker_url) as server:
        async with connect(server.ws_url("short-lived")) as ws:
            await recv_json(ws)
            await send(ws, {"type": "ping"})
            assert await recv_json(ws) == {"type": "pong"}  # the join has completed
            assert "short-lived" in server.node.broker.subscriptions

        def gone() -> bool:
            return "short-lived" not in server.node.broker.subscriptions

        await eventually(gone, timeout=5)
        assert server.node.hub.rooms() == {}


async def test_shutdown_closes_clients_with_1001() -> None:
    async with local_server() as server:
        ws = await connect(server.ws_url("lobby"))
        await recv_json(ws)
        closing = asyncio.ensure_future(ws.wait_closed())
    await asyncio.wait_for(closing, 5)
    assert ws.close_code == CloseCode.GOING_AWAY


async def test_shutdown_spreads_closes_over_drain_time() -> None:
    """With drain_time 1 s, 20 clients are closed with 1001 in batches spread over about 1 s."""
    loop = asyncio.get_running_loop()
    closed_at: list[float] = []
    clients: list[ClientConnection] = []

    async def watch(ws: ClientConnection) -> None:
        await ws.wait_closed()
        closed_at.append(loop.time())

    async with local_server(drain_time=1.0, join_leave=False) as server:
        for _ in range(20):
            ws = await connect(server.ws_url("crowd"), max_queue=None)
            await recv_json(ws)
            clients.append(ws)
        watchers = [asyncio.ensure_future(watch(ws)) for ws in clients]
    await asyncio.wait_for(asyncio.gather(*watchers), 10)
    assert {ws.close_code for ws in clients} == {CloseCode.GOING_AWAY}
    spread = max(closed_at) - min(closed_at)
    assert 0.6 <= spread <= 2.0, spread
