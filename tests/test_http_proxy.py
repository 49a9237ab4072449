"""The HTTP proxies against a real backend: a small Sanic app on a free port that answers in
Centrifugo's proxy format. Allow, refuse, rewrite, slow, down and malformed, each with its
documented effect, on ``/feed/`` (websockets) and on Centrifugo's protocol (centrifuge-python).

One backend and one feeds server for the module; a second feeds server points at a port where
nothing listens (the backend is down).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import pytest_asyncio
from centrifuge import Client, ClientState
from sanic import Request, Sanic
from sanic.response import HTTPResponse, json, text
from websockets.asyncio.client import connect

from sanic_feeds import FeedsConfig
from sanic_feeds.proxy_config import ProxyEndpoint
from support.centrifugo_sdk import refused_then_published
from support.local_server import LocalServer, local_server
from support.ports import free_port
from support.ws import recv_json, recv_until
from test_hooks import close_of, is_type

pytestmark = pytest.mark.asyncio(loop_scope="module")

_apps = itertools.count(1)


@dataclass
class Backend:
    port: int
    requests: list[tuple[str, dict[str, Any], dict[str, str]]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/centrifugo/{path}"


def backend_app(backend: Backend) -> Sanic[Any, Any]:
    """A Centrifugo-style proxy backend: authenticates by the ``sid`` cookie."""
    app: Sanic[Any, Any] = Sanic(f"proxy_backend_{next(_apps)}")
    app.config.MOTD = False
    app.config.TOUCHUP = False

    async def answer(request: Request, event: str) -> HTTPResponse:
        body: dict[str, Any] = orjson.loads(request.body)
        backend.requests.append((event, body, dict(request.headers)))
        sid = str(request.cookies.get("sid") or "")
        if event == "connect":
            if sid == "slow":
                await asyncio.sleep(3)
            if sid == "junk":
                return text("<html>oops</html>")
            if sid == "refuse":
                return json({"error": {"code": 1403, "message": "come back later"}})
            if sid == "expiring":
                return json({"result": {"user": "exp", "expire_at": int(time.time()) + 1}})
            if sid == "user-cf":  # and a server-side subscription with its channel info
                server_side = {"px-cf-server": {"info": {"seat": "server"}}}
                return json(
                    {"result": {"user": "cf", "info": {"via": "cookie"}, "subs": server_side}}
                )
            if sid.startswith("user-"):
                return json({"result": {"user": sid[5:], "info": {"via": "cookie"}}})
            return json({"disconnect": {"code": 4501, "reason": "unauthorized"}})
        if event == "subscribe":
            channel = body["channel"]
            if channel.startswith("px-secret"):
                return json({"error": {"code": 403, "message": "permission denied"}})
            if channel.startswith("px-slow"):
                await asyncio.sleep(3)
            if channel.startswith("px-junk"):
                return json({"result": 5})
            if channel.startswith("px-5xx"):
                return text("no", status=500)
            if channel.startswith("px-exp"):
                return json({"result": {"expire_at": int(time.time()) + 1}})
            if channel.startswith("px-cf"):
                return json({"result": {"info": {"seat": channel}}})
            return json({"result": {}})
        if event in ("refresh", "sub_refresh"):
            return json({"result": {"expired": True}})
        if event == "publish":
            if body["data"] == "bad":
                return json({"error": {"code": 1001, "message": "not allowed"}})
            return json(
                {"result": {"data": {"text": str(body["data"]).upper(), "by": body["user"]}}}
            )
        if body["method"] == "refuse":
            return json({"error": {"code": 1002, "message": "no rpc for you"}})
        return json({"result": {"data": {"user": body["user"], "method": body["method"]}}})

    for event in ("connect", "subscribe", "publish", "rpc", "refresh", "sub_refresh"):

        async def handler(request: Request, event: str = event) -> HTTPResponse:
            return await answer(request, event)

        app.add_route(handler, f"/centrifugo/{event}", methods=["POST"], name=event)
    return app


EVENTS = ("connect", "subscribe", "publish", "rpc", "refresh", "sub_refresh")


def proxies(url: Any, timeout: float = 0.5) -> tuple[ProxyEndpoint, ...]:
    return tuple(
        ProxyEndpoint(event, url(event), timeout, ("Cookie", "X-Request-Id")) for event in EVENTS
    )


@dataclass
class World:
    backend: Backend
    server: LocalServer
    down: LocalServer


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world() -> AsyncIterator[World]:
    backend = Backend(free_port())
    app = backend_app(backend)
    http = await app.create_server(
        host="127.0.0.1", port=backend.port, return_asyncio_server=True, access_log=False
    )
    assert http is not None
    await http.startup()
    await http.start_serving()
    dead = free_port()
    config = FeedsConfig(
        proxy_endpoints=proxies(backend.url),
        subscribe_proxy_enabled=True,
        publish_proxy_enabled=True,
        sub_refresh_proxy_enabled=True,
        ping_interval=1,
    )
    down_config = FeedsConfig(
        proxy_endpoints=proxies(lambda event: f"http://127.0.0.1:{dead}/{event}"),
        subscribe_proxy_enabled=True,
    )
    try:
        async with local_server(config) as server, local_server(down_config) as down:
            yield World(backend, server, down)
    finally:
        await http.close()


def cf_url(server: LocalServer) -> str:
    return f"ws://127.0.0.1:{server.port}/connection/websocket"


# -- /feed/ ------------------------------------------------------------------------------------


async def test_connect_by_cookie(world: World) -> None:
    """The backend's user is the member's user; only allow-listed headers go to it; its
    disconnect closes with its code; a refusal closes 1008; slow or malformed closes 4504."""
    cookie = {"cookie": "sid=user-56", "x-request-id": "r1", "x-secret": "no"}
    async with connect(world.server.ws_url("px-a"), additional_headers=cookie) as ws:
        assert (await recv_json(ws))["user"] == "56"
    _, body, headers = next(r for r in world.backend.requests if r[0] == "connect")
    assert body["transport"] == "websocket"
    assert body["protocol"] == "json" and body["encoding"] == "json" and body["client"]
    assert headers["cookie"] == "sid=user-56" and headers["x-request-id"] == "r1"
    assert "x-secret" not in headers
    expected = {
        "sid=nobody": (4501, "unauthorized"),
        "sid=refuse": (1008, "come back later"),
        "sid=slow": (4504, "backend unavailable, try again"),
        "sid=junk": (4504, "backend unavailable, try again"),
    }
    for value, close in expected.items():
        async with connect(world.server.ws_url("px-a"), additional_headers={"cookie": value}) as ws:
            assert await close_of(ws) == close, value


async def test_subscribe_and_publish(world: World) -> None:
    """Refused, slow, malformed and failing subscribes each get their documented error; the
    backend's publish data is what every member gets."""
    headers = {"cookie": "sid=user-ann"}
    async with (
        connect(world.server.ws_url("px-room"), additional_headers=headers) as ann,
        connect(world.server.ws_url("px-room"), additional_headers={"cookie": "sid=user-bo"}) as bo,
    ):
        await recv_until(ann, is_type("system"))
        await recv_until(bo, is_type("system"))
        for channel, code in [
            ("px-secret", "refused"),
            ("px-slow", "backend_unavailable"),
            ("px-junk", "backend_unavailable"),
            ("px-5xx", "backend_unavailable"),
        ]:
            await ann.send(f'{{"type": "subscribe", "channel": "{channel}"}}')
            error = await recv_until(ann, is_type("error"), timeout=3)
            assert (error["code"], error["channel"]) == (code, channel)
            if code == "refused":
                assert error["refusal"] == 403 and error["message"] == "permission denied"
        await ann.send('{"type": "chat", "message": "hello"}')
        chat = await recv_until(bo, is_type("chat"))
        assert chat["message"] == {"text": "HELLO", "by": "ann"} and chat["user"] == "ann"
        await ann.send('{"type": "chat", "message": "bad"}')
        error = await recv_until(ann, is_type("error"))
        assert error["code"] == "refused" and error["refusal"] == 1001


async def test_backend_down(world: World) -> None:
    """Connection refused by the backend: never let in, closed 4504 (retry with backoff)."""
    cookie = {"cookie": "sid=user-56"}
    async with connect(world.down.ws_url("px-d"), additional_headers=cookie) as ws:
        assert await close_of(ws) == (4504, "backend unavailable, try again")


# -- Centrifugo's protocol: the same proxies ----------------------------------------------------


async def test_centrifugo_sdk_through_the_proxies(world: World) -> None:
    """Connect by cookie (no token), a refused subscribe is unsubscribed with the backend's
    code, publish data rewritten, RPC answered by the backend. The connect result's ``info``
    and the subscribe result's are the client's ``conn_info`` and ``chan_info``; the connect
    result's ``subs`` make a server-side subscription with its own channel info."""
    sdk = Client(cf_url(world.server), headers={"Cookie": "sid=user-cf"})
    try:
        await sdk.connect()
        await sdk.ready(5)
        assert sdk.state == ClientState.CONNECTED
        publication = await refused_then_published(sdk, "px-secret-cf", "px-cf-room", "hi")
        assert publication.pub.data == {"text": "HI", "by": "cf"}
        info = publication.pub.info
        assert (info.conn_info, info.chan_info) == ({"via": "cookie"}, {"seat": "px-cf-room"})
        listed = (await sdk.presence("px-cf-room")).clients[sdk.client_id]
        assert (listed.conn_info, listed.chan_info) == ({"via": "cookie"}, {"seat": "px-cf-room"})
        server_side = (await sdk.presence("px-cf-server")).clients[sdk.client_id]
        assert server_side.chan_info == {"seat": "server"}
        reply = await sdk.rpc("whoami", {})
        assert reply.data == {"user": "cf", "method": "whoami"}
    finally:
        await sdk.disconnect()


async def test_centrifugo_refusals_raw(world: World) -> None:
    """The frames themselves: a disconnect from the backend closes with its code; a backend
    that is down answers the connect with error 100, temporary (SDKs retry)."""
    frame = '{"id": 1, "connect": {}}'
    async with connect(cf_url(world.server), additional_headers={"cookie": "sid=x"}) as ws:
        await ws.send(frame)
        assert await close_of(ws) == (4501, "unauthorized")
    async with connect(cf_url(world.down), additional_headers={"cookie": "sid=user-1"}) as ws:
        await ws.send(frame)
        reply = await recv_json(ws, timeout=3)
        assert reply["error"] == {
            "code": 100,
            "message": "internal server error",
            "temporary": True,
        }


async def test_refresh_proxies_and_a_refused_rpc(world: World) -> None:
    """The refresh proxy ends a /feed/ connection at the expiry the connect proxy set (4401);
    the sub_refresh proxy ends a Centrifugo subscription (3006); an RPC refused by the backend
    answers with its code."""
    expiring = {"cookie": "sid=expiring"}
    async with connect(world.server.ws_url("px-r"), additional_headers=expiring) as ws:
        assert (await recv_json(ws))["user"] == "exp"
        assert await close_of(ws) == (4401, "token expired")
    cookie = {"cookie": "sid=user-r"}
    async with connect(cf_url(world.server), additional_headers=cookie) as ws:
        await ws.send('{"id": 1, "connect": {}}')
        await recv_json(ws)
        await ws.send('{"id": 2, "rpc": {"method": "refuse", "data": {}}}')
        reply = await recv_until(ws, lambda m: m.get("id") == 2)
        assert reply["error"] == {"code": 1002, "message": "no rpc for you"}
        await ws.send('{"id": 3, "subscribe": {"channel": "px-exp-1"}}')
        reply = await recv_until(ws, lambda m: m.get("id") == 3)
        assert "expires" not in reply["subscribe"]
        assert await close_of(ws) == (3006, "subscription expired")
    events = [event for event, _, _ in world.backend.requests]
    assert "refresh" in events and "sub_refresh" in events


async def test_a_centrifugo_file_with_proxies_works_as_it_is() -> None:
    """Centrifugo v6's proxy keys become ``proxy_endpoints`` and the namespace switches;
    what is not implemented goes to the warning; a GRPC endpoint is an error naming its key."""
    from sanic_feeds.config import load_config
    from sanic_feeds.config_file import settings_from_document
    from sanic_feeds.errors import ConfigError

    document = {
        "client": {
            "proxy": {
                "connect": {
                    "enabled": True,
                    "endpoint": "http://app/connect",
                    "timeout": "2s",
                    "http_headers": ["Cookie"],
                    "emulated_headers": ["Authorization"],
                },
                "refresh": {"enabled": False, "endpoint": "http://app/refresh"},
            }
        },
        "channel": {
            "proxy": {"subscribe": {"endpoint": "http://app/subscribe"}},
            "without_namespace": {"subscribe_proxy_enabled": True},
            "namespaces": [{"name": "chat", "publish_proxy_enabled": True}],
        },
        "rpc": {
            "proxy": {"endpoint": "http://app/rpc"},
            "namespaces": [{"name": "api", "proxy_enabled": True}],
        },
    }
    settings = settings_from_document(document, "c.json")
    config = load_config(None, {}, file_values=settings.values, file_keys=settings.keys)
    assert {e.event: e for e in config.proxy_endpoints} == {
        "connect": ProxyEndpoint("connect", "http://app/connect", 2.0, ("Cookie",)),
        "subscribe": ProxyEndpoint("subscribe", "http://app/subscribe"),
        "rpc": ProxyEndpoint("rpc", "http://app/rpc", rpc_namespaces=("api",)),
    }
    assert config.subscribe_proxy_enabled
    assert config.channel_namespaces.options("chat:x").publish_proxy_enabled
    assert "client.proxy.connect.emulated_headers" in settings.unimplemented
    assert "client.proxy.refresh.endpoint" in settings.unimplemented
    grpc = {"channel": {"proxy": {"publish": {"endpoint": "grpc://app:9000"}}}}
    with pytest.raises(ConfigError, match=r"channel\.proxy\.publish\.endpoint.*GRPC"):
        settings_from_document(grpc, "c.json")
