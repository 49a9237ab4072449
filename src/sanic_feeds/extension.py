"""Mounting feeds on a Sanic app: routes, listeners and the public ``Feeds`` object.

This is the thin Sanic glue. Users who already have an app write::

    feeds = Feeds(broker="redis://127.0.0.1:6379/0")
    feeds.install(app)
    ...
    await feeds.publish("prices", {"AAPL": 187.2})

The standalone server (``sanic-feeds serve``) is built on exactly this.
"""

from __future__ import annotations

import functools
import itertools
import logging
import secrets
from collections.abc import Callable
from importlib import resources
from typing import Any
from urllib.parse import unquote

from sanic import Blueprint, Request, Sanic
from sanic.response import HTTPResponse, html

from .auth import (
    Authenticator,
    AuthError,
    Handshake,
    authenticator_for,
    offered_subprotocols,
)
from .brokers import MemoryBus
from .centrifugo_route import PROTOBUF_SUBPROTOCOL, CentrifugoRoute
from .centrifugo_streams import CentrifugoStreams
from .config import FeedsConfig
from .connection import Connection, Handoff
from .control import MessageUser
from .errors import FeedsError
from .feed_connect import ConnectRefused, identify
from .hook_replies import headers_of
from .hook_wiring import HookWiring
from .http_api import HttpApi, problem
from .metrics import Metrics
from .node import Node
from .protocol import CloseCode
from .rpc import ClientHandlers, MessageHandler, RpcHandler
from .server_api import ServerApi
from .session import Session, clean_user_name
from .sse_routes import EventStreamRoutes
from .websocket_protocol import SanicSocket

log = logging.getLogger(__name__)

_instances = itertools.count(1)


class Feeds:
    """The feeds of one Sanic app: ``/feed/<channel>`` sockets, the HTTP API, ``publish()``.

    Pass a :class:`FeedsConfig`, or its fields as keyword arguments. ``bus`` lets several feeds in
    one process share a ``memory://`` broker, as if they were nodes of one cluster.
    """

    def __init__(
        self,
        config: FeedsConfig | None = None,
        *,
        url_prefix: str = "",
        bus: MemoryBus | None = None,
        authenticator: Authenticator | None = None,
        **settings: Any,
    ) -> None:
        if config is not None and settings:
            raise TypeError("pass either a FeedsConfig or settings, not both")
        self.config = config if config is not None else FeedsConfig(**settings)
        c = self.config
        self.authenticator = authenticator or authenticator_for(
            c.auth,
            tokens=c.tokens,
            jwt_secret=c.jwt_secret,
            jwt_public_key=c.jwt_public_key,
            jwt_algorithms=c.jwt_algorithms,
            jwt_audience=c.jwt_audience,
            jwt_issuer=c.jwt_issuer,
        )
        self.url_prefix = url_prefix.rstrip("/")
        self._bus = bus
        self._node: Node | None = None
        self.metrics = Metrics()
        self._api = HttpApi(self.config, lambda: self.node, self.metrics)
        self._server_api = ServerApi(self.config, lambda: self.node)
        self.client_handlers = ClientHandlers()
        """RPC and message handlers for Centrifugo clients (see :meth:`rpc`)."""
        self._wiring = HookWiring(c, self.client_handlers)
        self.hooks = self._wiring.hooks
        """The application's hooks (docs/hooks.md)."""
        self.hook_runner = self._wiring.runner
        # Decorators: ``@feeds.on_subscribe`` and the like (hooks.py says what each answers).
        self.on_connect = self.hooks.on_connect
        self.on_subscribe = self.hooks.on_subscribe
        self.on_publish = self.hooks.on_publish
        self.on_refresh = self.hooks.on_refresh
        self.on_sub_refresh = self.hooks.on_sub_refresh
        self.on_disconnect = self.hooks.on_disconnect
        self._streams = EventStreamRoutes(
            self.config, self.authenticator, lambda: self.node, self.hook_runner
        )
        self._centrifugo = CentrifugoRoute(
            self.config,
            self.authenticator,
            lambda: self.node,
            self.client_handlers,
            self.hook_runner,
        )
        self._centrifugo_streams = CentrifugoStreams(
            self.config, self._centrifugo, lambda: self.node
        )

    @property
    def node(self) -> Node:
        """The running node (available between server start and stop)."""
        if self._node is None:
            raise FeedsError("feeds are not running: the Sanic server has not started")
        return self._node

    async def publish(
        self, channel: str, data: object, *, idempotency_key: str | None = None
    ) -> None:
        """Send ``{"type": "data", "channel", "data"}`` to every member, on every instance.

        Raises ``ValueError`` for an invalid channel name and
        :class:`~sanic_feeds.errors.BrokerUnavailable` when the broker cannot take the message.
        Retrying with the same ``idempotency_key`` never delivers a message twice.
        """
        await self.node.publish(channel, data, idempotency_key)

    async def send_message(self, user: str, data: object, *, client: str = "") -> None:
        """``data`` to ``user``'s connections (or ``client``) on every instance, at most once:
        ``{"type": "message", "data"}``, or Centrifugo's ``message`` push (docs/protocol.md)."""
        await self.node.control.send(MessageUser(user, data, client))

    def rpc(self, method: str) -> Callable[[RpcHandler], RpcHandler]:
        """Decorator: answer Centrifugo clients' ``rpc`` calls of ``method``::

        @feeds.rpc("whoami")
        async def whoami(call: ClientCall) -> object:
            return {"user": call.user}
        """

        def register(handler: RpcHandler) -> RpcHandler:
            self.add_rpc_handler(method, handler)
            return handler

        return register

    def add_rpc_handler(self, method: str, handler: RpcHandler) -> None:
        """Answer ``rpc`` calls of ``method`` with ``handler`` (replacing any before it)."""
        self.client_handlers.rpc[method] = handler

    def on_message(self, handler: MessageHandler) -> MessageHandler:
        """Decorator: receive what Centrifugo clients ``send`` (asynchronous, no reply)."""
        self.client_handlers.on_message = handler
        return handler

    # -- Sanic wiring ----------------------------------------------------------------------------

    def install(self, app: Sanic[Any, Any]) -> Blueprint:
        """Add the routes and listeners to ``app``; return the blueprint holding the routes."""
        config = self.config
        bp = Blueprint(f"sanic_feeds_{next(_instances)}", url_prefix=self.url_prefix or None)
        # The route context tells FeedsWebSocketProtocol to serve these sockets itself.
        bp.add_websocket_route(
            self._feed_socket, "/feed/<channel:str>", name="feed", ctx_feeds_config=config
        )
        bp.add_websocket_route(
            self._centrifugo.socket,
            "/connection/websocket",
            name="centrifugo",
            ctx_feeds_config=config,
            ctx_feeds_subprotocol=PROTOBUF_SUBPROTOCOL,
        )
        self._streams.register(bp)
        self._centrifugo_streams.register(bp)
        self._api.register(bp)
        self._server_api.register(bp)
        if config.page:
            bp.add_route(self._index, "/", methods=["GET"], name="page")
        app.blueprint(bp)
        if config.allowed_origins:
            app.register_middleware(self._check_origin, "request")
        app.config.WEBSOCKET_MAX_SIZE = config.max_message_size
        app.config.WEBSOCKET_PING_INTERVAL = config.ping_interval
        app.config.WEBSOCKET_PING_TIMEOUT = config.ping_timeout
        app.before_server_start(self._start)
        app.before_server_stop(self._drain)
        app.after_server_stop(self._stop)
        return bp

    async def _start(self, app: Sanic[Any, Any]) -> None:
        node = Node(self.config, bus=self._bus)
        await node.start()
        self.metrics.attach(node)
        self._wiring.start(node, self.metrics)
        self._node = node

    async def _drain(self, app: Sanic[Any, Any]) -> None:
        if self._node is not None:
            await self._node.drain()

    async def _stop(self, app: Sanic[Any, Any]) -> None:
        node, self._node = self._node, None
        self.metrics.detach()
        await self._wiring.before_node_stop(self.metrics)
        if node is not None:
            await node.stop()
        await self._wiring.after_node_stop()

    # -- handlers --------------------------------------------------------------------------------

    async def _check_origin(self, request: Request) -> HTTPResponse | None:
        """Refuse WebSocket upgrades from origins not on the list, before any handler runs."""
        if request.headers.get("upgrade", "").lower() != "websocket":
            return None
        ours = (f"{self.url_prefix}/feed/", f"{self.url_prefix}/connection/")
        if not request.path.startswith(ours):
            return None  # another of the app's sockets: not ours to police
        origin = request.headers.get("origin")
        if origin is not None and origin not in self.config.allowed_origins:
            log.info("refused a socket from origin %r (peer %s)", origin, request.client_ip)
            return problem(403, "forbidden_origin", "this origin may not open sockets here")
        return None

    async def _feed_socket(self, request: Request, ws: Any, channel: str) -> None:
        """A /feed/ socket: admission, authentication, then a session.

        With ``FeedsWebSocketProtocol`` ``ws`` hands over a :class:`FeedSocket` that runs on its
        own once the session has started, and this handler returns at once, freeing Sanic's
        request and tasks. With Sanic's default protocol class it is Sanic's WebSocket, and the
        handler reads from it until the connection ends.
        """
        conn: Connection
        if isinstance(ws, Handoff):
            conn = ws.socket
        else:
            sanic_socket = SanicSocket.of(ws)
            if sanic_socket is None:
                return
            conn = sanic_socket
        node = self.node
        refused = node.admission_refused()
        if refused is not None:
            conn.close(CloseCode.TRY_AGAIN_LATER, refused)
            await conn.serve()
            return
        handshake = Handshake(
            headers=request.headers,
            query={key: request.args.get(key) for key in request.args},
            subprotocols=offered_subprotocols(request.headers),
        )
        client = secrets.token_hex(8)
        try:
            admitted = await identify(
                self.authenticator,
                self.hook_runner,
                handshake,
                client=client,
                channel=unquote(channel),
                transport="websocket",
            )
        except AuthError as exc:
            log.info("refused a socket: %s (peer %s)", exc.reason, request.client_ip)
            conn.close(CloseCode.POLICY_VIOLATION, exc.reason)
            await conn.serve()
            return
        except ConnectRefused as exc:
            log.info("connect hook refused a socket: %d (peer %s)", exc.code, request.client_ip)
            conn.close(exc.code, exc.reason)
            await conn.serve()
            return
        identity = admitted.identity
        if node.user_slots.limited:
            slot = await node.user_slots.acquire(identity.subject)
            if slot is not None:
                conn.close(*slot)
                await conn.serve()
                return
        user = identity.user if self.authenticator.verifies_user else identity.user or None
        session = Session(
            node,
            conn,
            user=clean_user_name(user),
            peer=request.client_ip,
            identity=identity,
            hooks=self.hook_runner,
            client=client,
            headers=headers_of(request.headers),
        )
        if node.user_slots.limited and (subject := identity.subject):
            node.track(node.user_slots.release_when_finished(subject, session.wait_finished()))
        session.start(unquote(channel), request.args.get("since"), request.args.get("epoch"))
        session.join_for_server([(c, None, None) for c in admitted.server_channels])
        await conn.serve()

    async def _index(self, request: Request) -> HTTPResponse:
        return html(_page())


@functools.cache
def _page() -> str:
    """The chat page, read once."""
    return resources.files("sanic_feeds").joinpath("static/index.html").read_text()
