"""Real Sanic servers inside the test's own event loop, on free ports.

In-process servers start in milliseconds and let a test look inside the node (hub members, broker
subscriptions) while real WebSocket clients talk to it over TCP. Tests that need separate processes
(two instances on one Redis, signals, the CLI) use ``server_process.ServerProcess`` instead.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from sanic import Sanic
from sanic.server.async_server import AsyncioServer
from sanic.server.protocols.websocket_protocol import WebSocketProtocol

from sanic_feeds import FeedsConfig
from sanic_feeds.brokers import MemoryBus
from sanic_feeds.extension import Feeds
from sanic_feeds.node import Node
from sanic_feeds.websocket_protocol import FeedsWebSocketProtocol

from .ports import free_port

_names = itertools.count(1)


@dataclass
class LocalServer:
    app: Sanic[Any, Any]
    feeds: Feeds
    port: int
    server: AsyncioServer

    @property
    def node(self) -> Node:
        return self.feeds.node

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, channel: str, **query: str) -> str:
        url = f"ws://127.0.0.1:{self.port}/feed/{channel}"
        return f"{url}?{urlencode(query)}" if query else url


@asynccontextmanager
async def local_server(
    config: FeedsConfig | None = None,
    *,
    bus: MemoryBus | None = None,
    protocol: type[WebSocketProtocol] = FeedsWebSocketProtocol,
    port: int | None = None,
    **settings: Any,
) -> AsyncIterator[LocalServer]:
    """Run a feeds server on a free port for the duration of the ``async with`` block.

    ``protocol``: the standalone server's class by default (feed sockets on the lean
    ``FeedSocket``); Sanic's own ``WebSocketProtocol`` for apps that keep Sanic's default.
    """
    app: Sanic[Any, Any] = Sanic(f"feeds_test_{next(_names)}")
    app.config.MOTD = False
    # Sanic's touch-up recompiles its HTTP methods per app; the second app in one process then
    # fails to start (KeyError 'read'). It is an optimisation only.
    app.config.TOUCHUP = False
    feeds = Feeds(config, bus=bus, **settings) if config else Feeds(bus=bus, **settings)
    feeds.install(app)
    port = port or free_port()  # a given port: an instance restarting where it was
    server = await app.create_server(
        host="127.0.0.1",
        port=port,
        return_asyncio_server=True,
        access_log=False,
        protocol=protocol,
    )
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    try:
        yield LocalServer(app, feeds, port, server)
    finally:
        await server.before_stop()
        await server.close()
        async with asyncio.timeout(15):  # every connection must have ended by now
            await server.wait_closed()
        await server.after_stop()
