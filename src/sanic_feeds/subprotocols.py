"""Subprotocol negotiation that suits browsers and plain clients alike.

Browsers cannot set an ``Authorization`` header on a WebSocket, so some send the token as a
subprotocol entry: ``new WebSocket(url, ["sanic-feeds", "bearer.<token>"])``. A browser that
offers subprotocols fails the connection unless the server picks one of them; but a route that
declares subprotocols makes the handshake fail (HTTP 400) for clients that offer none. This
protocol class picks ``sanic-feeds`` when offered (else the first entry offered), and negotiates
nothing with clients that offer nothing. Use it with ``app.run(protocol=...)``; the standalone
server does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sanic.server.protocols.websocket_protocol import WebSocketProtocol

from .auth import SUBPROTOCOL


class FeedsWebSocketProtocol(WebSocketProtocol):
    async def websocket_handshake(
        self, request: Any, subprotocols: Sequence[str] | None = None
    ) -> Any:
        offered = [
            entry.strip()
            for value in request.headers.getall("sec-websocket-protocol", [])
            for entry in value.split(",")
            if entry.strip()
        ]
        if offered and not subprotocols:
            subprotocols = [SUBPROTOCOL] if SUBPROTOCOL in offered else offered[:1]
        return await super().websocket_handshake(request, subprotocols)
