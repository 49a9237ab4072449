"""Mounting feeds on a Sanic app: routes, listeners and the public ``Feeds`` object.

This is the thin Sanic glue. Users who already have an app write::

    feeds = Feeds(broker="redis://127.0.0.1:6379/0")
    feeds.install(app)
    ...
    await feeds.publish("prices", {"AAPL": 187.2})

The standalone server (``sanic-feeds serve``) is built on exactly this.
"""

from __future__ import annotations

import contextlib
import hmac
import itertools
import logging
from importlib import resources
from typing import Any
from urllib.parse import unquote

import orjson
from sanic import Blueprint, Request, Sanic
from sanic.exceptions import RequestCancelled
from sanic.response import HTTPResponse, html, json, raw

from . import protocol
from .auth import (
    Authenticator,
    AuthError,
    Handshake,
    Identity,
    authenticator_for,
    offered_subprotocols,
)
from .brokers import MemoryBus
from .channels import CHANNEL_RULES, is_valid_channel
from .config import FeedsConfig
from .connection import Connection, Handoff
from .errors import BrokerUnavailable, FeedsError, ProtocolError
from .event_stream import EventStream
from .metrics import CONTENT_TYPE, Metrics
from .node import Node
from .protocol import CloseCode
from .session import Session, clean_user_name
from .sse import SSE, BadEventId, Position, StreamCursor, parse_last_event_id, retry_event
from .websocket_protocol import SanicSocket, stream_transport

log = logging.getLogger(__name__)

_instances = itertools.count(1)

SSE_RETRY_MS = 1000
"""How long EventSource waits before reconnecting by itself after a stream ended."""


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
        self._page: str | None = None
        self.metrics = Metrics()

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

    # -- Sanic wiring ----------------------------------------------------------------------------

    def install(self, app: Sanic[Any, Any]) -> Blueprint:
        """Add the routes and listeners to ``app``; return the blueprint holding the routes."""
        config = self.config
        bp = Blueprint(f"sanic_feeds_{next(_instances)}", url_prefix=self.url_prefix or None)
        # The route context tells FeedsWebSocketProtocol to serve these sockets itself.
        bp.add_websocket_route(
            self._feed_socket, "/feed/<channel:str>", name="feed", ctx_feeds_config=config
        )
        bp.add_route(self._event_stream, "/sse", methods=["GET"], name="sse")
        bp.add_route(self._event_stream, "/sse/<channel:str>", methods=["GET"], name="sse_channel")
        bp.add_route(self._rooms, "/api/rooms", methods=["GET"], name="rooms")
        bp.add_route(self._health, "/health", methods=["GET"], name="health")
        bp.add_route(self._metrics, "/metrics", methods=["GET"], name="metrics")
        bp.add_route(
            self._publish,
            "/api/channels/<channel:str>/publish",
            methods=["POST"],
            name="publish",
        )
        bp.add_route(
            self._presence,
            "/api/channels/<channel:str>/presence",
            methods=["GET"],
            name="presence",
        )
        bp.add_route(
            self._history,
            "/api/channels/<channel:str>/history",
            methods=["GET"],
            name="history",
        )
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
        self._node = node

    async def _drain(self, app: Sanic[Any, Any]) -> None:
        if self._node is not None:
            await self._node.drain()

    async def _stop(self, app: Sanic[Any, Any]) -> None:
        node, self._node = self._node, None
        self.metrics.detach()
        if node is not None:
            await node.stop()

    # -- handlers --------------------------------------------------------------------------------

    async def _check_origin(self, request: Request) -> HTTPResponse | None:
        """Refuse WebSocket upgrades from origins not on the list, before any handler runs."""
        if request.headers.get("upgrade", "").lower() != "websocket":
            return None
        if not request.path.startswith(f"{self.url_prefix}/feed/"):
            return None  # another of the app's sockets: not ours to police
        origin = request.headers.get("origin")
        if origin is not None and origin not in self.config.allowed_origins:
            log.info("refused a socket from origin %r (peer %s)", origin, request.client_ip)
            return _problem(403, "forbidden_origin", "this origin may not open sockets here")
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
        try:
            identity = await self.authenticator.authenticate(handshake)
        except AuthError as exc:
            log.info("refused a socket: %s (peer %s)", exc.reason, request.client_ip)
            conn.close(CloseCode.POLICY_VIOLATION, exc.reason)
            await conn.serve()
            return
        user = identity.user if self.authenticator.verifies_user else identity.user or None
        session = Session(
            node, conn, user=clean_user_name(user), peer=request.client_ip, identity=identity
        )
        session.start(unquote(channel), request.args.get("since"), request.args.get("epoch"))
        await conn.serve()

    async def _event_stream(self, request: Request, channel: str | None = None) -> None:
        """A Server-Sent Events stream of one or more channels, on the same sessions as sockets.

        Everything that refuses the client for good (bad channel, credential, Last-Event-ID)
        is an HTTP error before the stream starts: EventSource does not retry those. What the
        client should retry later (server full, shutting down, broker down) is a stream that
        ends with a close event: EventSource reconnects by itself.
        """
        refusal, channels, identity, positions = await self._admit_stream(request, channel)
        if refusal is not None:
            await request.respond(refusal)
            return
        raw, restore = stream_transport(request)
        if raw is None or identity is None:  # identity: _admit_stream gives one when it admits
            restore()
            message = "event streams need Sanic's own server (not ASGI)"
            await request.respond(_problem(501, "not_supported", message))
            return
        response = await request.respond(
            content_type="text/event-stream; charset=utf-8",
            headers={
                "cache-control": "no-cache",
                "x-accel-buffering": "no",  # nginx: pass events on at once
                **self._cors_headers(request),
            },
        )
        # The head goes out with the first chunk (chunked: no length is known).
        await response.send(retry_event(SSE_RETRY_MS))
        node = self.node
        cursor = StreamCursor(channels, positions) if len(channels) > 1 else None
        stream = EventStream(raw, close_timeout=self.config.close_timeout, cursor=cursor)
        session: Session | None = None
        try:
            refused = node.admission_refused()
            if refused is not None:
                stream.close(CloseCode.TRY_AGAIN_LATER, refused)
            else:
                user = identity.user if self.authenticator.verifies_user else identity.user or None
                session = Session(
                    node,
                    stream,
                    user=clean_user_name(user),
                    peer=request.client_ip,
                    identity=identity,
                    wire=SSE,
                )
                first, *others = channels
                start = positions.get(first)
                also = [
                    (c, p.offset, p.epoch) if (p := positions.get(c)) else (c, None, None)
                    for c in others
                ]
                session.start(
                    first,
                    None if start is None else start.offset,
                    None if start is None else start.epoch,
                    also=also,
                )
            await stream.serve()
            with contextlib.suppress(RequestCancelled):  # the client went away first
                await response.eof()
        finally:
            stream.finished()
            restore()
        if session is not None:
            await session.wait_finished()

    async def _admit_stream(
        self, request: Request, channel: str | None
    ) -> tuple[HTTPResponse | None, list[str], Identity | None, dict[str, Position]]:
        """Check an event-stream request: (refusal, channels, identity, recovery positions)."""
        wanted = [unquote(channel)] if channel is not None else []
        wanted += request.args.getlist("channel", [])
        channels = list(dict.fromkeys(wanted))
        none: tuple[None, list[str], None, dict[str, Position]] = (None, [], None, {})
        if not channels:
            return _problem(
                400, "missing_field", "name a channel: /sse/<channel> or ?channel="
            ), *none[1:]
        for name in channels:
            if not is_valid_channel(name):
                return _problem(
                    400, "invalid_channel", f"channel names are {CHANNEL_RULES}"
                ), *none[1:]
        if len(channels) > self.config.max_channels:
            problem = _problem(
                400,
                "too_many_channels",
                f"a stream may follow at most {self.config.max_channels} channels",
            )
            return problem, *none[1:]
        origin = request.headers.get("origin")
        allowed = self.config.allowed_origins
        if allowed and origin is not None and origin not in allowed:
            log.info("refused a stream from origin %r (peer %s)", origin, request.client_ip)
            return _problem(
                403, "forbidden_origin", "this origin may not open streams here"
            ), *none[1:]
        handshake = Handshake(
            headers=request.headers, query={key: request.args.get(key) for key in request.args}
        )
        try:
            identity = await self.authenticator.authenticate(handshake)
        except AuthError as exc:
            log.info("refused a stream: %s (peer %s)", exc.reason, request.client_ip)
            return _problem(401, "unauthorized", exc.reason), *none[1:]
        for name in channels:
            if not identity.may_join(name):
                return _problem(403, "forbidden", f"forbidden: channel {name}"), *none[1:]
        last_id = request.headers.get("last-event-id") or request.args.get("lastEventId") or ""
        try:
            positions = parse_last_event_id(last_id, channels)
        except BadEventId as exc:
            return _problem(400, "invalid_request", str(exc)), *none[1:]
        return None, channels, identity, positions

    def _cors_headers(self, request: Request) -> dict[str, str]:
        """Let pages of the allowed origins read the stream (EventSource obeys CORS)."""
        origin = request.headers.get("origin")
        if origin is None or origin not in self.config.allowed_origins:
            return {}
        return {"access-control-allow-origin": origin, "vary": "Origin"}

    async def _rooms(self, request: Request) -> HTTPResponse:
        try:
            totals = await self.node.cluster_rooms()
        except BrokerUnavailable as exc:
            return json({"error": "broker_unavailable", "message": str(exc)}, status=503)
        return json(
            {"rooms": sorted(totals.rooms), "total_clients": totals.clients, "counts": totals.rooms}
        )

    async def _publish(self, request: Request, channel: str) -> HTTPResponse:
        """Publish the JSON body as ``{"type": "data", ...}`` to every member, on every instance."""
        denied = self._check_api_key(request)
        if denied is not None:
            return denied
        channel = unquote(channel)
        if not is_valid_channel(channel):
            return _problem(400, "invalid_channel", f"channel names are {CHANNEL_RULES}")
        body = request.body or b""
        if len(body) > self.config.max_publish_size:
            return _problem(413, "too_large", f"body over {self.config.max_publish_size} bytes")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _problem(400, "invalid_json", "the body must be JSON")
        key = request.headers.get("idempotency-key")
        if key is not None and not (0 < len(key) <= 128 and key.isprintable()):
            return _problem(400, "invalid_request", "Idempotency-Key: 1-128 printable characters")
        try:
            await self.node.publish(channel, data, key)
        except BrokerUnavailable as exc:
            return _problem(503, "broker_unavailable", str(exc))
        return json({"ok": True, "channel": channel})

    def _check_api_key(self, request: Request) -> HTTPResponse | None:
        expected = self.config.api_key
        if not expected:
            return None
        scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return _problem(401, "unauthorized", "send 'Authorization: Bearer <api key>'")
        if not hmac.compare_digest(given.strip().encode(), expected.encode()):
            return _problem(403, "forbidden", "wrong API key")
        return None

    async def _presence(self, request: Request, channel: str) -> HTTPResponse:
        """Who is in a channel now, over the whole cluster."""
        channel = unquote(channel)
        if not is_valid_channel(channel):
            return _problem(400, "invalid_channel", f"channel names are {CHANNEL_RULES}")
        try:
            members = await self.node.channel_members(channel)
        except BrokerUnavailable as exc:
            return _problem(503, "broker_unavailable", str(exc))
        clients = [m.public() for m in members]
        return json({"channel": channel, "clients": clients, "total": len(clients)})

    async def _history(self, request: Request, channel: str) -> HTTPResponse:
        """Stored messages of a channel, oldest first: the latest ``limit``, or after ``since``."""
        channel = unquote(channel)
        if not is_valid_channel(channel):
            return _problem(400, "invalid_channel", f"channel names are {CHANNEL_RULES}")
        size = self.config.history_size
        try:
            since = protocol.parse_since(request.args.get("since"))
            epoch = protocol.parse_epoch(request.args.get("epoch"))
        except ProtocolError as exc:
            return _problem(400, "invalid_request", exc.message.replace("Field", "Parameter"))
        limit_text = request.args.get("limit")
        if limit_text is None:
            limit = 100
        elif limit_text.isascii() and limit_text.isdigit() and 0 < len(limit_text) <= 9:
            limit = int(limit_text)
        else:
            limit = 0
        if limit < 1:
            return _problem(400, "invalid_request", "Parameter 'limit' must be a positive integer")
        limit = min(limit, max(size, 1))
        try:
            page = await self.node.broker.history(channel, since, epoch, limit)
        except BrokerUnavailable as exc:
            return _problem(503, "broker_unavailable", str(exc))
        head = orjson.dumps(
            {"channel": channel, "epoch": page.epoch, "top": page.top, "complete": page.complete}
        )
        # The stored texts are already JSON: splice them in instead of decoding and re-encoding.
        body = head[:-1] + b',"messages":[' + b",".join(page.messages) + b"]}"
        return raw(body, content_type="application/json")

    async def _metrics(self, request: Request) -> HTTPResponse:
        return raw(self.metrics.render(), content_type=CONTENT_TYPE)

    async def _health(self, request: Request) -> HTTPResponse:
        ok, body = await self.node.health()
        return json(body, status=200 if ok else 503)

    async def _index(self, request: Request) -> HTTPResponse:
        if self._page is None:
            self._page = resources.files("sanic_feeds").joinpath("static/index.html").read_text()
        return html(self._page)


def _problem(status: int, code: str, message: str) -> HTTPResponse:
    """An HTTP API error: ``{"error": <code>, "message": <text>}``."""
    return json({"error": code, "message": message}, status=status)
