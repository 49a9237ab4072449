"""Sanic's WebSocket protocol, with two fixes a public server needs.

1. Invalid UTF-8 in a text frame. Sanic decodes text frames itself and lets the decoding error
   escape from its frame processing: the connection is then neither closed nor read any more.
   Here such a connection is failed at once with close code 1007, as RFC 6455 asks.

2. Subprotocol negotiation that suits browsers and plain clients alike.

Browsers cannot set an ``Authorization`` header on a WebSocket, so some send the token as a
subprotocol entry: ``new WebSocket(url, ["sanic-feeds", "bearer.<token>"])``. A browser that
offers subprotocols fails the connection unless the server picks one of them; but a route that
declares subprotocols makes the handshake fail (HTTP 400) for clients that offer none. This
protocol class picks ``sanic-feeds`` when offered (else the first entry offered), and negotiates
nothing with clients that offer nothing. Use it with ``app.run(protocol=...)``; the standalone
server does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sanic.server.protocols.websocket_protocol import WebSocketProtocol
from sanic.server.websockets.impl import WebsocketImplProtocol
from websockets.protocol import Event

from .auth import SUBPROTOCOL, offered_subprotocols

log = logging.getLogger("sanic_feeds.connection")


class FeedsWebSocketProtocol(WebSocketProtocol):
    async def websocket_handshake(
        self, request: Any, subprotocols: Sequence[str] | None = None
    ) -> Any:
        offered = offered_subprotocols(request.headers)
        if offered and not subprotocols:
            subprotocols = [SUBPROTOCOL] if SUBPROTOCOL in offered else offered[:1]
        ws = await super().websocket_handshake(request, subprotocols)
        _fail_on_invalid_utf8(ws)
        return ws


def _fail_on_invalid_utf8(ws: WebsocketImplProtocol) -> None:
    process_events = ws.process_events

    async def guarded(events: Sequence[Event]) -> None:
        try:
            await process_events(events)
        except UnicodeDecodeError:
            log.info("closing a connection that sent invalid UTF-8 (1007)")
            ws.fail_connection(1007, "invalid UTF-8 in a text frame")

    ws.process_events = guarded  # type: ignore[method-assign]  # per-connection wrapper
