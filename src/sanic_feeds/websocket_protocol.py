"""The adapter to Sanic's server internals: its WebSocket protocol class and its WebSocket.

Everything sanic-feeds needs from Sanic beyond its documented API is here and nowhere else:
the protocol's receive buffer, connection set and transport, the ``websocket_handshake`` hook,
and the ``ws_proto``/``io_proto`` of Sanic's WebSocket. These are not part of Sanic's public API,
so ``pyproject.toml`` pins the Sanic releases they are tested with; check this module first
when moving to a new Sanic release.

Pass :class:`FeedsWebSocketProtocol` to ``app.run(protocol=FeedsWebSocketProtocol)`` (the
standalone server does):

1. Feed sockets (routes whose context carries ``feeds_config``) skip Sanic's WebSocket
   implementation. Sanic still parses the request, runs middleware and routes it; the
   handshake is then completed here (``handshake.accept``), the TCP transport is handed to a
   :class:`~sanic_feeds.connection.FeedSocket`, and this Sanic protocol object lets go of it.
   Sanic's per-connection request, tasks, frame assembler and keepalive task are then freed:
   an idle connection costs a few KiB instead of about 30 (docs/benchmarks.md).

2. Subprotocols: a feed socket gets ``sanic-feeds`` when the client offered it and no
   subprotocol otherwise. Browsers cannot set an ``Authorization`` header on a WebSocket, so
   some send the token as a subprotocol entry: ``new WebSocket(url, ["sanic-feeds",
   "bearer.<token>"])``; such an entry is a credential and is never echoed back, and no
   subprotocol we do not speak is accepted. Clients that offer nothing get nothing (a route
   that declared subprotocols would make Sanic refuse them with HTTP 400).

3. A bad upgrade request (to any WebSocket route) is answered with its HTTP status, with
   ``Sec-WebSocket-Version: 13`` on a 426, and logged as one line at INFO: it is the client's
   fault, not a server error with a traceback.

4. On the app's other WebSocket routes (Sanic's implementation), invalid UTF-8 in a text frame:
   Sanic lets the decoding error escape from its frame processing and the connection is then
   neither closed nor read any more. Here it is failed at once with close code 1007.

:class:`SanicSocket` adapts Sanic's own WebSocket to the session's
:class:`~sanic_feeds.connection.Connection`, for apps that keep Sanic's default protocol class.

:func:`stream_transport` gives a Server-Sent Events stream the connection's TCP transport, and
lifts Sanic's response timeout for it: its events are written to the transport directly
(``event_stream.py``), so they never reset the timer Sanic keeps for ``RESPONSE_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from sanic import Request
from sanic.exceptions import SanicException
from sanic.server.protocols.http_protocol import HttpProtocol
from sanic.server.protocols.websocket_protocol import WebSocketProtocol
from sanic.server.websockets.impl import WebsocketImplProtocol
from websockets.exceptions import ConnectionClosed
from websockets.protocol import Event, State

from . import handshake
from .auth import SUBPROTOCOL, offered_subprotocols
from .config import FeedsConfig
from .connection import FeedSocket, Handoff, Listener
from .event_stream import RawTransport

log = logging.getLogger(__name__)


class FeedsWebSocketProtocol(WebSocketProtocol):
    __slots__ = ("detached",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.detached = False

    async def websocket_handshake(
        self, request: Any, subprotocols: Sequence[str] | None = None
    ) -> Any:
        try:
            key = handshake.check(request.headers)
        except handshake.HandshakeError as exc:
            log.info(
                "refused a WebSocket upgrade: %s (HTTP %d, peer %s)",
                exc.message,
                exc.status,
                request.client_ip,
            )
            raise SanicException(
                exc.message, status_code=exc.status, headers=exc.headers, quiet=True
            ) from None
        feeds_config = getattr(getattr(request.route, "ctx", None), "feeds_config", None)
        if feeds_config is not None:
            spoken = getattr(request.route.ctx, "feeds_subprotocol", SUBPROTOCOL)
            chosen = handshake.choose_subprotocol(offered_subprotocols(request.headers), spoken)
            return self._feed_handshake(key, chosen, feeds_config)
        # Another of the app's WebSocket routes: Sanic negotiates what that route declares.
        ws = await super().websocket_handshake(request, subprotocols)
        _fail_on_invalid_utf8(ws)
        return ws

    def _feed_handshake(self, key: str, subprotocol: str | None, config: FeedsConfig) -> Handoff:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise SanicException("connection closed during the handshake", status_code=400)
        transport.write(handshake.response(key, subprotocol))
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


class SanicSocket:
    """A :class:`~sanic_feeds.connection.Connection` over Sanic's WebSocket implementation."""

    __slots__ = ("_listener", "_ready", "transport", "ws")

    def __init__(self, ws: WebsocketImplProtocol, transport: asyncio.WriteTransport) -> None:
        self.ws = ws
        self.transport = transport
        self._listener: Listener | None = None
        self._ready = asyncio.Event()
        self._ready.set()

    @classmethod
    def of(cls, ws: WebsocketImplProtocol) -> SanicSocket | None:
        """The adapter for the WebSocket a handler received; None if its transport is gone."""
        io_proto = ws.io_proto
        transport = io_proto.transport if io_proto is not None else None
        return None if transport is None else cls(ws, transport)

    @property
    def close_received(self) -> int | None:
        received = self.ws.ws_proto.close_rcvd
        return None if received is None else int(received.code)

    def attach(self, listener: Listener) -> None:
        self._listener = listener

    def close(self, code: int, reason: str) -> None:
        ws_proto = self.ws.ws_proto
        transport = self.transport
        self._ready.set()  # read on, to see the client's close frame
        if ws_proto.state is State.OPEN and not transport.is_closing():
            ws_proto.send_close(code, reason)
            for chunk in ws_proto.data_to_send():
                if chunk:
                    transport.write(chunk)
            asyncio.get_running_loop().call_later(self.ws.close_timeout or 10, _abort, transport)

    def pause_reading(self) -> None:
        self._ready.clear()

    def resume_reading(self) -> None:
        self._ready.set()

    def keepalive(self, now: float, timeout: float) -> None:
        """Sanic pings its WebSockets itself."""

    async def serve(self) -> None:
        """Read messages until the connection ends, then tell the listener."""
        try:
            while True:
                await self._ready.wait()
                message = await self.ws.recv()
                if message is None:
                    break
                if self._listener is not None:
                    self._listener.receive(message)
        except ConnectionClosed:
            pass
        finally:
            if self._listener is not None:
                self._listener.connection_lost()


def _abort(transport: asyncio.WriteTransport) -> None:
    if not transport.is_closing():
        transport.abort()


def stream_transport(request: Request) -> tuple[RawTransport | None, Callable[[], None]]:
    """The TCP transport of ``request``'s connection, for writing a streamed response's body.

    Also stops Sanic from timing the response out: Sanic cancels a handler whose connection
    has not sent anything through Sanic for ``RESPONSE_TIMEOUT`` seconds (default 60),
    streaming or not, and an event stream writes straight to the transport (the fan-out must
    not await). Returns the transport (None when the connection is not Sanic's own HTTP
    protocol, as under ASGI) and the function that puts the timeout back, for the next
    request on the connection.
    """
    protocol = request.transport.get_protocol()
    if not isinstance(protocol, HttpProtocol) or protocol.transport is None:
        return None, _nothing
    transport: RawTransport = protocol.transport
    saved = protocol.response_timeout
    protocol.response_timeout = float("inf")

    def restore() -> None:
        protocol.response_timeout = saved

    return transport, restore


def _nothing() -> None:
    """Nothing to restore."""
