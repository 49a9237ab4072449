"""Sanic's WebSocket protocol class, with the lean path for /feed/ sockets.

Pass it to ``app.run(protocol=FeedsWebSocketProtocol)`` (the standalone server does):

1. Feed sockets (routes whose context carries ``feeds_config``) skip Sanic's WebSocket
   implementation. Sanic still parses the request, runs middleware and routes it; the
   handshake is then completed here (``handshake.accept``), the TCP transport is handed to a
   :class:`~sanic_feeds.connection.FeedSocket`, and this Sanic protocol object lets go of it.
   Sanic's per-connection request, tasks, frame assembler and keepalive task are then freed:
   an idle connection costs a few KiB instead of about 30 (docs/benchmarks.md).

2. Subprotocol negotiation that suits browsers and plain clients alike. Browsers cannot set an
   ``Authorization`` header on a WebSocket, so some send the token as a subprotocol entry:
   ``new WebSocket(url, ["sanic-feeds", "bearer.<token>"])``. A browser that offers
   subprotocols fails the connection unless the server picks one of them; but a route that
   declares subprotocols makes the handshake fail (HTTP 400) for clients that offer none. This
   class picks ``sanic-feeds`` when offered (else the first entry offered), and negotiates
   nothing with clients that offer nothing.

3. On the app's other WebSocket routes (Sanic's implementation), invalid UTF-8 in a text frame:
   Sanic lets the decoding error escape from its frame processing and the connection is then
   neither closed nor read any more. Here it is failed at once with close code 1007.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sanic.exceptions import SanicException
from sanic.server.protocols.websocket_protocol import WebSocketProtocol
from sanic.server.websockets.impl import WebsocketImplProtocol
from websockets.protocol import Event

from . import handshake
from .auth import SUBPROTOCOL, offered_subprotocols
from .config import FeedsConfig
from .connection import FeedSocket, Handoff

log = logging.getLogger("sanic_feeds.connection")


class FeedsWebSocketProtocol(WebSocketProtocol):
    __slots__ = ("detached",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.detached = False

    async def websocket_handshake(
        self, request: Any, subprotocols: Sequence[str] | None = None
    ) -> Any:
        chosen = handshake.choose_subprotocol(offered_subprotocols(request.headers), SUBPROTOCOL)
        feeds_config = getattr(getattr(request.route, "ctx", None), "feeds_config", None)
        if feeds_config is not None:
            return self._feed_handshake(request, chosen, feeds_config)
        if chosen is not None and not subprotocols:
            subprotocols = [chosen]
        ws = await super().websocket_handshake(request, subprotocols)
        _fail_on_invalid_utf8(ws)
        return ws

    def _feed_handshake(
        self, request: Any, subprotocol: str | None, config: FeedsConfig
    ) -> Handoff:
        try:
            response = handshake.accept(request.headers, subprotocol)
        except handshake.HandshakeError as exc:
            raise SanicException(exc.message, status_code=exc.status) from None
        transport = self.transport
        if transport is None or transport.is_closing():
            raise SanicException("connection closed during the handshake", status_code=400)
        transport.write(response)
        socket = FeedSocket(
            transport, max_size=config.max_message_size, close_timeout=config.close_timeout
        )
        transport.set_protocol(socket)
        # Bytes the client sent right after its request (pipelined frames) belong to the socket.
        leftover = bytes(self.recv_buffer)
        self.recv_buffer.clear()
        # Let go: Sanic must neither close this transport when its handler returns nor count
        # it among the connections it closes at shutdown (the node drains feed sockets itself).
        self.detached = True
        self.connections.discard(self)
        self.transport = None
        if leftover:
            socket.data_received(leftover)
        return Handoff(socket)


def _fail_on_invalid_utf8(ws: WebsocketImplProtocol) -> None:
    process_events = ws.process_events

    async def guarded(events: Sequence[Event]) -> None:
        try:
            await process_events(events)
        except UnicodeDecodeError:
            log.info("closing a connection that sent invalid UTF-8 (1007)")
            ws.fail_connection(1007, "invalid UTF-8 in a text frame")

    ws.process_events = guarded  # type: ignore[method-assign]  # per-connection wrapper
