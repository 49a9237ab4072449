"""Centrifugo's JavaScript SDK in a real headless Chromium: its browser bundle (npm
``centrifuge``'s ``dist/centrifuge.js``) on a page of the server's origin connects with a token
over WebSocket, HTTP streaming and SSE (the browser's own fetch and EventSource, the default
relative ``/emulation``), subscribes, receives a ``/feed/`` chat and publishes to ``/feed/``
members. Skipped without chromium or without ``npm ci`` in tests/js.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import jwt
import orjson
import pytest
from playwright.async_api import Browser, Route, async_playwright
from websockets.asyncio.client import connect

from sanic_feeds import FeedsConfig
from support.browser import ARGS, CHROMIUM, needs_chromium
from support.local_server import local_server

BUNDLE = Path(__file__).parent / "js" / "node_modules" / "centrifuge" / "dist" / "centrifuge.js"
SECRET = "centrifugo-browser-test-secret-32b"
PAGE = b'<!doctype html><title>sdk</title><script src="centrifuge.js"></script>'
TRANSPORTS = ["websocket", "http_stream", "sse"]

pytestmark = [
    needs_chromium,
    pytest.mark.skipif(not BUNDLE.is_file(), reason="needs `npm ci` in tests/js"),
]

CONNECT_ALL = """
async ({ base, token }) => {
  const ws = base.replace('http', 'ws') + '/connection/websocket';
  const emulated = (t) => [{ transport: t, endpoint: base + '/connection/' + t }];
  const clients = {
    websocket: new Centrifuge(ws, { token }),
    http_stream: new Centrifuge(emulated('http_stream'), { token }),
    sse: new Centrifuge(emulated('sse'), { token }),
  };
  window.got = {};
  window.subs = {};
  const used = {};
  await Promise.all(Object.entries(clients).map(async ([name, client]) => {
    const connected = new Promise((resolve) => client.once('connected', resolve));
    client.connect();
    used[name] = (await connected).transport;
    const sub = client.newSubscription('lobby');
    window.got[name] = [];
    sub.on('publication', (ctx) => window.got[name].push([ctx.data, ctx.info && ctx.info.user]));
    const subscribed = new Promise((resolve) => sub.once('subscribed', resolve));
    sub.subscribe();
    await subscribed;
    window.subs[name] = sub;
  }));
  return used;
}
"""


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Headless Chromium that lets a page served by interception (its address space is then
    unknown to Chromium) open a WebSocket to the loopback server."""
    async with async_playwright() as playwright:
        args = [*ARGS, "--disable-features=LocalNetworkAccessChecks"]
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield browser
        finally:
            await browser.close()


def token(sub: str, **claims: object) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + 300), **claims}, SECRET)


async def test_the_browser_bundle_on_every_transport() -> None:
    """The SDK's browser bundle connects, subscribes, and chats with /feed/ on each transport."""
    config = FeedsConfig(auth="jwt", jwt_secret=SECRET)
    async with local_server(config) as server, chromium() as browser:

        async def serve(route: Route) -> None:
            if route.request.url.endswith("/centrifuge.js"):
                await route.fulfill(body=BUNDLE.read_bytes(), content_type="text/javascript")
            else:
                await route.fulfill(body=PAGE, content_type="text/html")

        page = await browser.new_page()
        await page.route("**/sdk-page/**", serve)
        await page.goto(server.http_url + "/sdk-page/index.html")
        args = {"base": server.http_url, "token": token("ann")}
        used = await page.evaluate(CONNECT_ALL, args)
        assert used == {name: name for name in TRANSPORTS}

        async with connect(server.ws_url("lobby", token=token("zoe", name="Zoe"))) as zoe:
            while orjson.loads(await zoe.recv())["type"] != "system":
                pass
            await zoe.send(orjson.dumps({"type": "chat", "message": {"n": 1}}).decode())
            await page.wait_for_function(
                "() => Object.values(window.got).every((g) => g.length > 0)", timeout=10_000
            )
            got = await page.evaluate("window.got")
            assert got == {name: [[{"n": 1}, "Zoe"]] for name in TRANSPORTS}

            await page.evaluate(
                "Promise.all(Object.entries(window.subs).map(([n, s]) => s.publish(n)))"
            )
            said: set[str] = set()
            while len(said) < len(TRANSPORTS):
                message = orjson.loads(await zoe.recv())
                if message["type"] == "chat" and message["user"] == "ann":
                    said.add(message["message"])
            assert said == set(TRANSPORTS)
