"""Rate limits, connection caps and size limits, through real sockets."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sanic_feeds.protocol import CloseCode
from support.local_server import local_server
from support.ws import eventually, recv_json, recv_until


async def chat(ws: ClientConnection, message: object, channel: str | None = None) -> None:
    frame: dict[str, object] = {"type": "chat", "message": message}
    if channel:
        frame["channel"] = channel
    await ws.send(orjson.dumps(frame).decode())


async def test_connection_rate_limit_refuses_without_closing() -> None:
    """Over the bucket, messages are answered rate_limited and not delivered; the socket lives."""
    async with local_server(rate_limit="3/10", join_leave=False) as server:
        async with connect(server.ws_url("r"), max_queue=None) as ws:
            await recv_json(ws)
            for i in range(3):
                await chat(ws, i)
                assert (await recv_json(ws))["message"] == i
            await chat(ws, "over")
            err = await recv_json(ws)
            assert (err["type"], err["code"]) == ("error", "rate_limited")
            assert 0 < err["retry_after"] <= 10 / 3 + 0.01
            assert server.node.stats.rate_limited == 1
            assert not ws.close_code


async def test_repeated_violations_close_4429() -> None:
    """A client that keeps hammering is closed with 4429 after the configured violations."""
    async with local_server(rate_limit="2/60", rate_limit_violations=3) as server:
        async with connect(server.ws_url("r"), max_queue=None) as ws:
            await recv_json(ws)
            for i in range(10):
                try:
                    await chat(ws, i)
                except ConnectionClosed:
                    break
            await ws.wait_closed()
            assert ws.close_code == CloseCode.RATE_LIMITED


async def test_user_rate_limit_spans_connections_and_instances(broker_url: str) -> None:
    """One user's budget is shared by all of their connections, on every instance."""
    settings: dict[str, Any] = {"auth": "token", "tokens": ("t1=ann",), "user_rate_limit": "3/60"}
    async with AsyncExitStack() as stack:
        one = await stack.enter_async_context(local_server(broker=broker_url, **settings))
        two = await stack.enter_async_context(local_server(broker=broker_url, **settings))
        if broker_url == "memory://":
            two = one  # one process: the limit is per process
        a = await stack.enter_async_context(connect(one.ws_url("r", token="t1"), max_queue=None))
        b = await stack.enter_async_context(connect(two.ws_url("r", token="t1"), max_queue=None))
        await recv_json(a)
        await recv_json(b)
        outcomes = []
        for i, ws in enumerate([a, b, a, b]):
            await chat(ws, i)
            while True:  # skip notices; stop at this chat coming back, or at an error
                msg = await recv_json(ws)
                if msg["type"] == "error":
                    outcomes.append("error")
                    break
                if msg["type"] == "chat" and msg["message"] == i:
                    outcomes.append("ok")
                    break
        assert outcomes == ["ok", "ok", "ok", "error"]


async def test_connection_cap_and_connect_rate() -> None:
    """Over the cap or the connection rate, new sockets are closed with 1013."""
    async with local_server(max_connections=2) as server:
        async with connect(server.ws_url("a")) as one, connect(server.ws_url("a")) as two:
            await recv_json(one)
            await recv_json(two)
            async with connect(server.ws_url("a")) as three:
                await three.wait_closed()
                assert (three.close_code, three.close_reason) == (1013, "server full")
    async with local_server(connect_rate="2/60") as server:
        for _ in range(2):
            async with connect(server.ws_url("a")) as ws:
                await recv_json(ws)
        async with connect(server.ws_url("a")) as ws:
            await ws.wait_closed()
            assert ws.close_code == CloseCode.TRY_AGAIN_LATER


async def test_max_channels_per_connection() -> None:
    """Subscribing past --max-channels gets too_many_channels; the socket stays."""
    async with local_server(max_channels=2) as server, connect(server.ws_url("a")) as ws:
        await recv_json(ws)
        await ws.send(orjson.dumps({"type": "subscribe", "channel": "b"}).decode())
        assert (await recv_json(ws))["type"] == "subscribed"
        await ws.send(orjson.dumps({"type": "subscribe", "channel": "c"}).decode())
        err = await recv_json(ws)
        assert (err["code"], err["channel"]) == ("too_many_channels", "c")


async def test_oversized_message_closes_1009() -> None:
    """A message over --max-message-size closes the socket with 1009."""
    async with local_server(max_message_size=1024) as server:
        async with connect(server.ws_url("a")) as ws:
            await recv_json(ws)
            await chat(ws, "x" * 5000)
            await ws.wait_closed()
            assert ws.close_code == CloseCode.MESSAGE_TOO_BIG


async def test_invalid_utf8_text_frame_closes_1007() -> None:
    """A text frame that is not UTF-8 is refused by the WebSocket layer with 1007."""
    async with local_server() as server, connect(server.ws_url("a")) as ws:
        await recv_json(ws)
        await ws.send(b'{"type":"chat","message":"\xff\xfe"}', text=True)
        await ws.wait_closed()
        assert ws.close_code == CloseCode.INVALID_PAYLOAD


async def chat_round_trip(ws: ClientConnection, text: str) -> float:
    """Seconds from sending a chat to receiving it back (other messages skipped)."""
    started = time.perf_counter()
    await chat(ws, text)
    async with asyncio.timeout(10):
        while (await recv_json(ws)).get("message") != text:
            pass
    return time.perf_counter() - started


async def test_others_unaffected_by_a_limited_client() -> None:
    """A rate-limited client does not block anyone else: while the server is refusing a flood of
    30,000 messages from one client, another client's chat is served before the flood is
    through (not queued behind all of it) and comes back within 0.5 s of its quiet round trip.
    (Measured here: about 75 ms, the time to refuse the frames of the reads already taken.)"""
    flood = 30_000
    async with local_server(rate_limit="2/60", rate_limit_violations=0, join_leave=False) as server:
        async with (
            connect(server.ws_url("r"), max_queue=None) as noisy,
            connect(server.ws_url("r"), max_queue=None) as calm,
        ):
            await recv_json(noisy)
            await recv_json(calm)
            quiet = await chat_round_trip(calm, "quiet")
            await recv_until(noisy, lambda m: m.get("message") == "quiet")
            frame = orjson.dumps({"type": "chat", "message": "noise"}).decode()
            for _ in range(flood):  # written back to back; the server reads them in bulk
                await noisy.send(frame)
            refusals = 0
            while refusals == 0:  # the server is working through the flood
                message = await recv_json(noisy)
                refusals += message.get("code") == "rate_limited"
            busy = await chat_round_trip(calm, "busy")
            refused = server.node.stats.rate_limited
            assert refused < flood - 2, "calm was served only after the whole flood"
            assert busy < quiet + 0.5, f"calm: {busy:.3f} s in the flood, {quiet:.3f} s quiet"
            await eventually(lambda: server.node.stats.rate_limited == flood - 2, timeout=20)


async def test_user_connection_limit_spans_instances(backend_url: str) -> None:
    """--user-connection-limit counts a user's connections on every instance: one more is
    closed with 4403, anonymous ones are not counted, and a closed one frees its slot."""
    settings: dict[str, Any] = {
        "auth": "token",
        "tokens": ("t1=ann", "t2=bob"),
        "user_connection_limit": 2,
        "ping_interval": 60,
    }
    async with AsyncExitStack() as stack:
        one = await stack.enter_async_context(local_server(broker=backend_url, **settings))
        two = one
        if backend_url != "memory://":
            two = await stack.enter_async_context(local_server(broker=backend_url, **settings))
        a = await stack.enter_async_context(connect(one.ws_url("r", token="t1"), max_queue=None))
        b = await stack.enter_async_context(connect(two.ws_url("r", token="t1"), max_queue=None))
        await recv_json(a)
        await recv_json(b)

        async def counted() -> bool:
            presence = one.node.presence
            return await presence.user_connections("ann", one.node.id, 0) == 2

        await eventually(counted, timeout=5, description="ann's two connections counted on one")
        async with connect(one.ws_url("r", token="t1")) as third:
            await third.wait_closed()
            assert third.close_code == CloseCode.CONNECTION_LIMIT
            assert third.close_reason == "at most 2 connections per user"
        async with connect(one.ws_url("r", token="t2")) as other_user:
            assert (await recv_json(other_user))["user"] == "bob"
        await a.close()

        async def freed() -> bool:
            return await one.node.presence.user_connections("ann", one.node.id, 0) == 1

        await eventually(freed, timeout=5, description="the closed connection uncounted")
        async with connect(one.ws_url("r", token="t1")) as again:
            assert (await recv_json(again))["user"] == "ann"


async def test_user_connection_limit_on_centrifugos_protocol() -> None:
    """The same limit on /connection/websocket: a user's connection over it is closed with
    3504 (Centrifugo's "connection limit"), counted with their /feed/ ones."""
    import jwt

    secret = "limit-test-secret-of-32-bytes-long!"
    token = jwt.encode({"sub": "ann"}, secret)
    settings: dict[str, Any] = {"auth": "jwt", "jwt_secret": secret, "user_connection_limit": 1}
    async with local_server(ping_interval=60, **settings) as server:
        async with connect(server.ws_url("r", token=token)) as feed:
            await recv_json(feed)
            url = f"ws://127.0.0.1:{server.port}/connection/websocket"
            async with connect(url) as centrifugo:
                await centrifugo.send(orjson.dumps({"id": 1, "connect": {"token": token}}).decode())
                await centrifugo.wait_closed()
                assert centrifugo.close_code == 3504
        await eventually(lambda: not server.node.sessions, description="both closed")
        url = f"ws://127.0.0.1:{server.port}/connection/websocket"
        async with connect(url) as again:  # the slot is free again
            await again.send(orjson.dumps({"id": 1, "connect": {"token": token}}).decode())
            reply = orjson.loads(await again.recv())
            assert reply["id"] == 1 and "connect" in reply
