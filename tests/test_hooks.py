"""In-process hooks (``@feeds.on_connect`` and the rest) on both protocols: ``/feed/`` with a
plain WebSocket client, Centrifugo's with its own SDK (centrifuge-python).

One server for the module (hooks are looked up per request, so each test sets its own and the
fixture clears them); each test uses its own channels.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from centrifuge import Client, ClientState
from httpx_sse import aconnect_sse
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from sanic_feeds import FeedsConfig
from sanic_feeds.hooks import (
    ConnectRequest,
    ConnectResult,
    Disconnect,
    DisconnectEvent,
    Hooks,
    PublishRequest,
    PublishResult,
    RefreshRequest,
    RefreshResult,
    Refuse,
    SubRefreshRequest,
    SubscribeRequest,
    SubscribeResult,
    Unavailable,
)
from support.centrifugo_sdk import refused_then_published
from support.local_server import LocalServer, local_server
from support.ws import recv_json, recv_until

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[LocalServer]:
    async with local_server(FeedsConfig(hook_timeout=0.3, ping_interval=1)) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def hooks(server: LocalServer) -> AsyncIterator[Hooks]:
    yield server.feeds.hooks
    fresh = Hooks()
    for name in ("connect", "subscribe", "publish", "refresh", "sub_refresh", "disconnect"):
        setattr(server.feeds.hooks, name, getattr(fresh, name))


def centrifugo_url(server: LocalServer) -> str:
    return f"ws://127.0.0.1:{server.port}/connection/websocket"


def is_type(kind: str) -> Any:
    return lambda message: message.get("type") == kind


async def close_of(ws: Any) -> tuple[int | None, str | None]:
    """Read until the server closes; its close code and reason."""
    try:
        async with asyncio.timeout(5):
            while True:
                await ws.recv()
    except ConnectionClosed:
        return ws.close_code, ws.close_reason
    raise AssertionError("unreachable")  # pragma: no cover


# -- /feed/ ------------------------------------------------------------------------------------


async def test_connect_hook_names_the_user_from_a_cookie(server: LocalServer, hooks: Hooks) -> None:
    """The user the hook names is the member's user; its channels are joined as the server's,
    on a socket and on an event stream alike (the stream's event ids then name them too); a
    refusal closes with the hook's code and reason."""
    seen: list[ConnectRequest] = []

    @server.feeds.on_connect
    async def who(request: ConnectRequest) -> ConnectResult | Disconnect:
        seen.append(request)
        if request.headers.get("cookie") != "sid=good":
            return Disconnect(4501, "unauthorized")
        return ConnectResult(user="user-42", channels=("hook-side",))

    async with connect(server.ws_url("hook-a"), additional_headers={"cookie": "sid=good"}) as ws:
        welcome = await recv_json(ws)
        assert welcome["user"] == "user-42"
        side = await recv_until(ws, is_type("subscribed"))
        assert side == {"type": "subscribed", "channel": "hook-side", "server": True}
    assert seen[0].channels == ("hook-a",) and seen[0].protocol == "feed"
    async with (
        httpx.AsyncClient(timeout=5, headers={"cookie": "sid=good"}) as http,
        aconnect_sse(http, "GET", f"{server.http_url}/sse/hook-a") as source,
        asyncio.timeout(5),
    ):
        events = (e async for e in source.aiter_sse() if e.data)
        welcome = orjson.loads((await anext(events)).data)
        assert (welcome["type"], welcome["user"]) == ("system", "user-42")
        side = orjson.loads((await anext(events)).data)
        assert side == {"type": "subscribed", "channel": "hook-side", "server": True}
        await server.feeds.publish("hook-side", {"n": 1})
        event = await anext(events)
        assert orjson.loads(event.data)["data"] == {"n": 1}
        assert event.id.startswith("hook-side=")  # a reconnect's Last-Event-ID recovers it
    assert seen[-1].transport == "sse"
    async with connect(server.ws_url("hook-a"), additional_headers={"cookie": "sid=bad"}) as ws:
        assert await close_of(ws) == (4501, "unauthorized")


async def test_subscribe_and_publish_hooks(server: LocalServer, hooks: Hooks) -> None:
    """A refused subscribe is an ``error`` with code ``refused`` and the hook's code; the URL's
    channel refused closes with 1008; a publish hook's data is what every member gets."""

    @server.feeds.on_subscribe
    async def gate(request: SubscribeRequest) -> None:
        if request.channel.startswith("hook-secret"):
            raise Refuse(403, "not yours")

    @server.feeds.on_publish
    async def clean(request: PublishRequest) -> PublishResult:
        if request.data == "forbidden":
            raise Refuse(1001, "watch your language")
        return PublishResult(data={"clean": request.data, "by": request.user})

    async with connect(server.ws_url("hook-b", user="ann")) as ws:
        await recv_until(ws, is_type("system"))
        await ws.send('{"type": "subscribe", "channel": "hook-secret-1"}')
        error = await recv_until(ws, is_type("error"))
        assert error["code"] == "refused" and error["refusal"] == 403
        assert error["message"] == "not yours" and error["channel"] == "hook-secret-1"
        await ws.send('{"type": "chat", "message": "hello"}')
        chat = await recv_until(ws, is_type("chat"))
        assert chat["message"] == {"clean": "hello", "by": "ann"}
        await ws.send('{"type": "chat", "message": "forbidden"}')
        error = await recv_until(ws, is_type("error"))
        assert error["code"] == "refused" and error["refusal"] == 1001
    async with connect(server.ws_url("hook-secret-2")) as ws:
        assert await close_of(ws) == (1008, "forbidden: this channel")


async def test_a_failing_or_slow_hook_refuses_only_that_request(
    server: LocalServer, hooks: Hooks
) -> None:
    """A hook that raises gives ``internal_error``, one slower than ``hook_timeout`` gives
    ``backend_unavailable``; the connection and the others go on."""

    @server.feeds.on_subscribe
    async def flaky(request: SubscribeRequest) -> None:
        if request.channel == "hook-boom":
            raise RuntimeError("bug")
        if request.channel == "hook-slow":
            await asyncio.sleep(5)
        if request.channel == "hook-down":
            raise Unavailable()

    async with connect(server.ws_url("hook-c")) as ws:
        await recv_until(ws, is_type("system"))
        for channel, code in [
            ("hook-boom", "internal_error"),
            ("hook-slow", "backend_unavailable"),
            ("hook-down", "backend_unavailable"),
        ]:
            await ws.send(f'{{"type": "subscribe", "channel": "{channel}"}}')
            error = await recv_until(ws, is_type("error"))
            assert (error["code"], error["channel"]) == (code, channel)
        await ws.send('{"type": "subscribe", "channel": "hook-fine"}')
        assert (await recv_until(ws, is_type("subscribed")))["channel"] == "hook-fine"


async def test_disconnect_hook_is_told(server: LocalServer, hooks: Hooks) -> None:
    """Every connection's end reaches the disconnect hooks, with its close code."""
    ended: asyncio.Queue[DisconnectEvent] = asyncio.Queue()

    @server.feeds.on_disconnect
    async def gone(event: DisconnectEvent) -> None:
        await ended.put(event)

    async with connect(server.ws_url("hook-d", user="zed")) as ws:
        await recv_until(ws, is_type("system"))
    event = await asyncio.wait_for(ended.get(), 5)
    assert (event.user, event.protocol, event.code) == ("zed", "feed", 1000)


async def test_refresh_hook_prolongs_then_ends(server: LocalServer, hooks: Hooks) -> None:
    """At the expiry a connect hook set, the refresh hook is asked: a new ``expire_at`` keeps
    the connection, ``expired`` closes it with 4401."""
    asked: list[RefreshRequest] = []

    @server.feeds.on_connect
    async def short(request: ConnectRequest) -> ConnectResult:
        return ConnectResult(user="ref", expire_at=time.time() + 0.3)

    @server.feeds.on_refresh
    async def refresh(request: RefreshRequest) -> RefreshResult:
        asked.append(request)
        if len(asked) == 1:
            return RefreshResult(expire_at=time.time() + 0.3)
        return RefreshResult(expired=True)

    async with connect(server.ws_url("hook-r")) as ws:
        await recv_until(ws, is_type("system"))
        assert await close_of(ws) == (4401, "token expired")
    assert [r.user for r in asked] == ["ref", "ref"]


# -- Centrifugo's protocol: the same hooks -------------------------------------------------------


async def test_the_same_hooks_on_centrifugo_protocol(server: LocalServer, hooks: Hooks) -> None:
    """Connect names the user (no token needed), subscribe refuses with the hook's code (the
    SDK gives up: unsubscribed with it), publish data is rewritten for every subscriber. The
    connect hook's ``info`` and the subscribe hook's are the client's ``conn_info`` and
    ``chan_info`` in its publications and in presence. The subscribe hook is given the
    subscribe command's ``data`` and the transport's name."""

    @server.feeds.on_connect
    async def who(request: ConnectRequest) -> ConnectResult:
        assert request.protocol == "centrifugo" and request.data == {"hello": 1}
        return ConnectResult(user="cf-7", info={"role": "tester"})

    @server.feeds.on_subscribe
    async def gate(request: SubscribeRequest) -> SubscribeResult:
        assert request.user == "cf-7"
        if request.channel == "hook-cf-secret":
            raise Refuse(403, "permission denied")
        assert (request.data, request.transport) == ({"row": 3}, "websocket")
        return SubscribeResult(info={"seat": request.channel})

    @server.feeds.on_publish
    async def upper(request: PublishRequest) -> PublishResult:
        return PublishResult(data={"text": str(request.data).upper()})

    sdk = Client(centrifugo_url(server), data={"hello": 1})
    try:
        await sdk.connect()
        await sdk.ready(5)
        assert sdk.state == ClientState.CONNECTED
        publication = await refused_then_published(
            sdk, "hook-cf-secret", "hook-cf-room", "hi", subscribe_data={"row": 3}
        )
        assert publication.pub.data == {"text": "HI"}
        info = publication.pub.info
        assert (info.user, info.conn_info, info.chan_info) == (
            "cf-7",
            {"role": "tester"},
            {"seat": "hook-cf-room"},
        )
        presence = await sdk.presence("hook-cf-room")
        listed = presence.clients[sdk.client_id]
        assert (listed.conn_info, listed.chan_info) == (
            {"role": "tester"},
            {"seat": "hook-cf-room"},
        )
    finally:
        await sdk.disconnect()


async def test_centrifugo_server_side_refresh(server: LocalServer, hooks: Hooks) -> None:
    """With refresh hooks the server refreshes: the connect and subscribe replies carry no
    ttl (the client has nothing to do), the hooks are asked at the expiry, and an ended
    subscription closes with 3006."""
    asked: list[str] = []

    @server.feeds.on_connect
    async def short(request: ConnectRequest) -> ConnectResult:
        return ConnectResult(user="cfr", expire_at=time.time() + 0.3, data={"motd": "hi"})

    @server.feeds.on_refresh
    async def refresh(request: RefreshRequest) -> RefreshResult:
        asked.append(f"refresh {request.user}")
        return RefreshResult(expire_at=time.time() + 3600)

    @server.feeds.on_subscribe
    async def expiring(request: SubscribeRequest) -> SubscribeResult:
        return SubscribeResult(expire_at=time.time() + 0.3, data={"welcome": request.channel})

    @server.feeds.on_sub_refresh
    async def sub_refresh(request: SubRefreshRequest) -> RefreshResult:
        asked.append(f"sub_refresh {request.channel}")
        if asked.count(f"sub_refresh {request.channel}") == 1:
            return RefreshResult(expire_at=time.time() + 0.3)
        return RefreshResult(expired=True)

    async with connect(centrifugo_url(server)) as ws:
        await ws.send('{"id": 1, "connect": {}}')
        reply = await recv_json(ws)
        assert "expires" not in reply["connect"] and reply["connect"]["data"] == {"motd": "hi"}
        await ws.send('{"id": 2, "subscribe": {"channel": "hook-cfr"}}')
        reply = await recv_until(ws, lambda m: m.get("id") == 2)
        assert "expires" not in reply["subscribe"]
        assert reply["subscribe"]["data"] == {"welcome": "hook-cfr"}
        assert await close_of(ws) == (3006, "subscription expired")
    assert asked == ["refresh cfr", "sub_refresh hook-cfr", "sub_refresh hook-cfr"]
