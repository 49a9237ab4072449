"""The ``/connection/websocket`` route: Centrifugo's SDKs connect here (Sanic glue).

The socket is handed over like a ``/feed/`` one (``FeedsWebSocketProtocol``: the lean
``FeedSocket``), admitted by the same instance limits, and served by a
:class:`~sanic_feeds.centrifugo_session.CentrifugoSession`. Authentication happens in the
protocol's ``connect`` command, not in the upgrade request. Only the JSON encoding is spoken: a
client asking for ``centrifuge-protobuf`` gets it in the handshake (so its WebSocket opens) and
is then closed with 3506 "inappropriate protocol", which SDKs do not retry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sanic import Request

from .auth import Authenticator, offered_subprotocols
from .centrifugo_auth import CentrifugoTokens
from .centrifugo_protocol import Disconnect
from .centrifugo_session import CentrifugoSession
from .centrifugo_state import Settings
from .config import FeedsConfig
from .connection import Connection, Handoff
from .node import Node
from .protocol import CloseCode
from .rpc import ClientHandlers
from .websocket_protocol import SanicSocket

log = logging.getLogger(__name__)

PROTOBUF_SUBPROTOCOL = "centrifuge-protobuf"


class CentrifugoRoute:
    """The handler of ``/connection/websocket`` for one ``Feeds``."""

    def __init__(
        self,
        config: FeedsConfig,
        authenticator: Authenticator,
        node: Callable[[], Node],
        handlers: ClientHandlers,
    ) -> None:
        self._node = node
        self.handlers = handlers
        self.tokens = CentrifugoTokens(authenticator, insecure=config.insecure)
        self.settings = Settings(
            ping_interval=round(config.ping_interval),
            tokens=self.tokens,
        )
        """What every Centrifugo connection of this server is held to, whatever its transport."""

    async def socket(self, request: Request, ws: Any) -> None:
        conn: Connection
        if isinstance(ws, Handoff):
            conn = ws.socket
        else:
            sanic_socket = SanicSocket.of(ws)
            if sanic_socket is None:
                return
            conn = sanic_socket
        node = self._node()
        refused = node.admission_refused()
        if refused is not None:
            conn.close(CloseCode.TRY_AGAIN_LATER, refused)
            await conn.serve()
            return
        if PROTOBUF_SUBPROTOCOL in offered_subprotocols(request.headers):
            log.info("refused a protobuf client (peer %s): JSON only", request.client_ip)
            conn.close(Disconnect.INAPPROPRIATE_PROTOCOL, "protobuf is not supported, use JSON")
            await conn.serve()
            return
        session = CentrifugoSession(
            node,
            conn,
            tokens=self.tokens,
            handlers=self.handlers,
            settings=self.settings,
            peer=request.client_ip,
        )
        session.start()
        await conn.serve()
