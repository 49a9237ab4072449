"""The ``/connection/websocket`` route: Centrifugo's SDKs connect here (Sanic glue).

The socket is handed over like a ``/feed/`` one (``FeedsWebSocketProtocol``: the lean
``FeedSocket``), admitted by the same instance limits, and served by a
:class:`~sanic_feeds.centrifugo_session.CentrifugoSession`. Authentication happens in the
protocol's ``connect`` command, not in the upgrade request. A client that offers the
``centrifuge-protobuf`` subprotocol gets it in the handshake and speaks the Protobuf encoding
(binary frames, ``centrifugo_protobuf.py``); the others JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sanic import Request

from .auth import Authenticator, offered_subprotocols
from .centrifugo_auth import CentrifugoTokens
from .centrifugo_session import CentrifugoSession
from .centrifugo_state import Settings
from .centrifugo_wire import PROTOBUF_FRAMING, WEBSOCKET_FRAMING
from .config import FeedsConfig
from .connection import Connection, Handoff
from .hook_replies import headers_of
from .hook_runner import NO_HOOKS, HookRunner
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
        hooks: HookRunner = NO_HOOKS,
    ) -> None:
        self._node = node
        self.hooks = hooks
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
        protobuf = PROTOBUF_SUBPROTOCOL in offered_subprotocols(request.headers)
        session = CentrifugoSession(
            node,
            conn,
            tokens=self.tokens,
            handlers=self.handlers,
            settings=self.settings,
            peer=request.client_ip,
            hooks=self.hooks,
            headers=headers_of(request.headers),
            framing=PROTOBUF_FRAMING if protobuf else WEBSOCKET_FRAMING,
        )
        session.start()
        await conn.serve()
