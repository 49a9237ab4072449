"""Centrifugo's emulation transports: ``/connection/http_stream``, ``/connection/sse`` and
``/emulation`` (Sanic glue).

HTTP streaming and ``/emulation`` speak the Protobuf encoding too, for requests sent as
``application/octet-stream`` (centrifuge-js's protobuf build); SSE is JSON only, as in
Centrifugo.

The SDK (centrifuge-js) opens a stream with its ``connect`` command in it (the POST body of
``http_stream``, the ``cf_connect`` query parameter of ``sse``), reads the server's frames from
the response (one JSON frame per line, or per SSE event), and sends its further commands by
``POST /emulation`` with the ``session`` and ``node`` of the connect reply
(``centrifugo_emulation.py`` says how a request finds its connection on any node).

A stream is an :class:`~.event_stream.EventStream` (the chunked response written straight to
the transport, as ``/sse/`` does) driving a :class:`~.centrifugo_session.CentrifugoSession`
with the transport's framing: the same state machine, node, channels and limits as
``/connection/websocket``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from sanic import Blueprint, Request
from sanic.exceptions import RequestCancelled
from sanic.response import HTTPResponse, empty

from .centrifugo_emulation import (
    MAX_REQUEST_SIZE,
    BadEmulationRequest,
    EmulatedSessions,
    farewell,
    new_session_id,
    node_channel,
    parse_protobuf_request,
    parse_request,
)
from .centrifugo_route import CentrifugoRoute
from .centrifugo_session import CentrifugoSession
from .centrifugo_wire import (
    HTTP_STREAM_FRAMING,
    HTTP_STREAM_PROTOBUF_FRAMING,
    SSE_FRAMING,
    CentrifugoFraming,
)
from .config import FeedsConfig
from .errors import BrokerError
from .event_stream import EventStream
from .hook_replies import headers_of
from .http_api import problem
from .node import Node
from .protocol import CloseCode
from .sse import KEEPALIVE
from .websocket_protocol import stream_transport

log = logging.getLogger(__name__)

_KEEPALIVES = {
    SSE_FRAMING.name: KEEPALIVE,
    HTTP_STREAM_FRAMING.name: b"",
    HTTP_STREAM_PROTOBUF_FRAMING.name: b"",
}
"""What an idle stream gets at a sweep before it is connected (an SSE comment; an HTTP
stream has no way to say nothing, and the session's pings follow soon)."""


class CentrifugoStreams:
    """The emulation routes of one ``Feeds``, on the connections of its Centrifugo route."""

    def __init__(
        self, config: FeedsConfig, route: CentrifugoRoute, node: Callable[[], Node]
    ) -> None:
        self.config = config
        self._route = route
        self._node = node
        self.sessions = EmulatedSessions()
        """This server's emulated connections, by session id."""
        self._tapped: Node | None = None
        self._tapping = asyncio.Lock()

    def register(self, bp: Blueprint) -> None:
        bp.add_route(self.sse, "/connection/sse", methods=["GET"], name="centrifugo_sse")
        bp.add_route(
            self.http_stream, "/connection/http_stream", methods=["POST"], name="centrifugo_http"
        )
        bp.add_route(self.emulation, "/emulation", methods=["POST"], name="centrifugo_emulation")
        for path, name in (("/connection/http_stream", "http"), ("/emulation", "emulation")):
            bp.add_route(self.preflight, path, methods=["OPTIONS"], name=f"centrifugo_{name}_cors")

    # -- streams ----------------------------------------------------------------------------

    async def sse(self, request: Request) -> HTTPResponse | None:
        connect = request.args.get("cf_connect")
        if not connect:
            return problem(400, "missing_field", "the connect command goes in cf_connect")
        return await self._serve(request, connect, SSE_FRAMING, "text/event-stream; charset=utf-8")

    async def http_stream(self, request: Request) -> HTTPResponse | None:
        body = request.body
        if len(body) > MAX_REQUEST_SIZE:
            return problem(413, "too_large", f"at most {MAX_REQUEST_SIZE} bytes")
        if _is_protobuf(request):
            framing, content_type = HTTP_STREAM_PROTOBUF_FRAMING, "application/octet-stream"
            return await self._serve(request, body, framing, content_type)
        try:
            connect = body.decode()
        except UnicodeDecodeError:
            return problem(400, "invalid_request", "the connect command is not UTF-8")
        return await self._serve(request, connect, HTTP_STREAM_FRAMING, "application/json")

    async def _serve(
        self,
        request: Request,
        connect: str | bytes,
        framing: CentrifugoFraming,
        content_type: str,
    ) -> HTTPResponse | None:
        refused = self._origin_refused(request)
        if refused is not None:
            return refused
        raw, restore = stream_transport(request)
        if raw is None:
            restore()
            return problem(501, "not_supported", "streams need Sanic's own server (not ASGI)")
        node = self._node()
        await self._tap(node)
        response = await request.respond(
            content_type=content_type,
            headers={
                "cache-control": "no-cache",
                "x-accel-buffering": "no",  # nginx: pass frames on at once
                **self._cors_headers(request),
            },
        )
        await response.send(b"", end_stream=False)  # the head (chunked: no length is known)
        stream = EventStream(
            raw,
            close_timeout=self.config.close_timeout,
            farewell=farewell(framing),
            keepalive=_KEEPALIVES[framing.name],
        )
        session: CentrifugoSession | None = None
        session_id = new_session_id()
        try:
            refused_why = node.admission_refused()
            if refused_why is not None:
                stream.close(CloseCode.TRY_AGAIN_LATER, refused_why)
            else:
                route = self._route
                session = CentrifugoSession(
                    node,
                    stream,
                    tokens=route.tokens,
                    handlers=route.handlers,
                    settings=route.settings,
                    peer=request.client_ip,
                    framing=framing,
                    hooks=route.hooks,
                    headers=headers_of(request.headers),
                )
                session.state.emulation = {"session": session_id, "node": node.id}
                self.sessions.add(session_id, session)
                session.start()
                session.receive(connect)
            await stream.serve()
            with contextlib.suppress(RequestCancelled):  # the client went away first
                await response.eof()
        finally:
            self.sessions.remove(session_id)
            stream.finished()
            restore()
        if session is not None:
            await session.wait_finished()
        return None

    async def _tap(self, node: Node) -> None:
        """Receive the requests other nodes forward to this node's emulated connections."""
        if self._tapped is node:
            return
        async with self._tapping:
            if self._tapped is node:
                return
            channel = node_channel(node.id)
            node.hub.taps[channel] = self.sessions.forwarded
            try:
                await node.broker.subscribe(channel)
            except BrokerError as exc:  # requests sent to this node still work; retried later
                log.warning("cannot receive forwarded emulation requests yet: %s", exc)
                return
            self._tapped = node

    # -- commands ---------------------------------------------------------------------------

    async def emulation(self, request: Request) -> HTTPResponse:
        """Commands for an emulated connection, on this node or forwarded to its own."""
        refused = self._origin_refused(request)
        if refused is not None:
            return refused
        parse = parse_protobuf_request if _is_protobuf(request) else parse_request
        try:
            command = parse(request.body)
        except BadEmulationRequest as exc:
            return problem(400, "invalid_request", str(exc))
        node = self._node()
        headers = self._cors_headers(request)
        if command.node == node.id:
            if not self.sessions.deliver(command.session, command.data):
                return problem(404, "not_found", "no such session (it may have ended)")
            return empty(headers=headers)
        try:
            await node.broker.publish(node_channel(command.node), command.encode())
        except BrokerError:
            return problem(503, "broker_unavailable", "cannot reach the session's node now")
        return empty(headers=headers)

    async def preflight(self, request: Request) -> HTTPResponse:
        """CORS preflight of the POSTs (their ``Content-Type`` is JSON)."""
        headers = self._cors_headers(request)
        if headers:
            headers["access-control-allow-methods"] = "POST"
            headers["access-control-allow-headers"] = "content-type"
            headers["access-control-max-age"] = "600"
        return empty(headers=headers)

    def _origin_refused(self, request: Request) -> HTTPResponse | None:
        origin = request.headers.get("origin")
        allowed = self.config.allowed_origins
        if allowed and origin is not None and origin not in allowed:
            log.info("refused an emulation request from origin %r", origin)
            return problem(403, "forbidden_origin", "this origin may not connect here")
        return None

    def _cors_headers(self, request: Request) -> dict[str, str]:
        """Let pages of the allowed origins read the responses (fetch and EventSource obey
        CORS)."""
        origin = request.headers.get("origin")
        if origin is None or origin not in self.config.allowed_origins:
            return {}
        return {"access-control-allow-origin": origin, "vary": "Origin"}


def _is_protobuf(request: Request) -> bool:
    return "octet-stream" in request.headers.get("content-type", "")
