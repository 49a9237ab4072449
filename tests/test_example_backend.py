"""examples/cookie_backend.py with examples/cookie_backend.json: a browser-like client logs in,
gets a session cookie, and connects to /feed/ with nothing else; the backend names its user,
decides its channels, stamps its messages, and receives the signed event webhooks."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from sanic_feeds.config import load_config
from sanic_feeds.config_file import read_config_file
from support.local_server import local_server
from support.ports import free_port
from support.ws import recv_json, recv_until
from test_hooks import close_of, is_type

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

pytestmark = pytest.mark.asyncio


def example() -> Any:
    spec = importlib.util.spec_from_file_location("cookie_backend", EXAMPLES / "cookie_backend.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cookie_backend"] = module
    spec.loader.exec_module(module)
    return module


async def test_the_cookie_backend_example() -> None:
    """Log in, connect by cookie, chat (stamped by the backend), a forbidden inbox, a stranger
    without a cookie turned away, and the webhooks arriving signed at the backend."""
    app = example().create_backend("cookie_backend_test")
    app.config.TOUCHUP = False
    port = free_port()
    http = await app.create_server(
        host="127.0.0.1", port=port, return_asyncio_server=True, access_log=False
    )
    assert http is not None
    await http.startup()
    await http.start_serving()
    settings = read_config_file(str(EXAMPLES / "cookie_backend.json"))
    assert not settings.unimplemented
    config = load_config(None, {}, file_values=settings.values, file_keys=settings.keys)
    here = f"http://127.0.0.1:{port}"
    config = replace(
        config,
        proxy_endpoints=tuple(
            replace(e, endpoint=e.endpoint.replace("http://127.0.0.1:3000", here))
            for e in config.proxy_endpoints
        ),
        webhook_endpoint=f"{here}/events",
    )
    try:
        async with local_server(config) as feeds, httpx.AsyncClient(base_url=here) as web:
            login = await web.post("/login", json={"user": "alice"})
            cookie = {"cookie": f"session={login.cookies['session']}"}
            async with connect(feeds.ws_url("room"), additional_headers=cookie) as ws:
                assert (await recv_json(ws))["user"] == "alice"
                await ws.send('{"type": "chat", "message": "  hi all "}')
                chat = await recv_until(ws, is_type("chat"))
                assert chat["message"] == {"text": "hi all", "author": "alice"}
                await ws.send('{"type": "subscribe", "channel": "inbox-bob"}')
                error = await recv_until(ws, is_type("error"))
                assert (error["code"], error["refusal"]) == ("refused", 403)
                await ws.send('{"type": "subscribe", "channel": "inbox-alice"}')
                assert (await recv_until(ws, is_type("subscribed")))["channel"] == "inbox-alice"
            async with connect(feeds.ws_url("room")) as stranger:
                assert await close_of(stranger) == (4501, "unauthorized")
            async with asyncio.timeout(5):
                while not any(e["type"] == "channel.vacated" for e in app.ctx.events):
                    await asyncio.sleep(0.05)
            kinds = [e["type"] for e in app.ctx.events]
            assert kinds.count("channel.occupied") == 2 and "user.connected" in kinds
    finally:
        await http.close()
