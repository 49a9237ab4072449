"""Routes for Server-Sent Events: admission, then a session on an event stream.

Everything that refuses the client for good (bad channel, credential, Last-Event-ID) is an HTTP
error before the stream starts: EventSource does not retry those. What the client should retry
later (server full, shutting down, broker down) is a stream that ends with a close event.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable
from urllib.parse import unquote

from sanic import Blueprint, Request
from sanic.exceptions import RequestCancelled
from sanic.response import HTTPResponse

from .auth import Authenticator, AuthError, Handshake, Identity
from .channels import CHANNEL_RULES, is_valid_channel
from .config import FeedsConfig
from .event_stream import EventStream
from .feed_connect import ConnectRefused, identify
from .hook_replies import headers_of
from .hook_runner import NO_HOOKS, HookRunner
from .http_api import problem
from .node import Node
from .permissions import Refusal
from .protocol import CloseCode
from .session import Session, clean_user_name
from .sse import SSE, BadEventId, Position, StreamCursor, parse_last_event_id, retry_event
from .websocket_protocol import stream_transport

log = logging.getLogger(__name__)

SSE_RETRY_MS = 1000
"""How long EventSource waits before reconnecting by itself after a stream ended."""


class EventStreamRoutes:
    """``GET /sse/<channel>`` and ``GET /sse?channel=a&channel=b``, for one ``Feeds``."""

    def __init__(
        self,
        config: FeedsConfig,
        authenticator: Authenticator,
        node: Callable[[], Node],
        hooks: HookRunner = NO_HOOKS,
    ) -> None:
        self.config = config
        self.authenticator = authenticator
        self._node = node
        self._hooks = hooks

    def register(self, bp: Blueprint) -> None:
        bp.add_route(self.stream, "/sse", methods=["GET"], name="sse")
        bp.add_route(self.stream, "/sse/<channel:str>", methods=["GET"], name="sse_channel")

    async def stream(self, request: Request, channel: str | None = None) -> None:
        """A Server-Sent Events stream of one or more channels, on the same sessions as sockets.

        Everything that refuses the client for good (bad channel, credential, Last-Event-ID)
        is an HTTP error before the stream starts: EventSource does not retry those. What the
        client should retry later (server full, shutting down, broker down) is a stream that
        ends with a close event: EventSource reconnects by itself.
        """
        refusal, channels, identity, positions, server_side = await self._admit(request, channel)
        if refusal is not None:
            await request.respond(refusal)
            return
        raw, restore = stream_transport(request)
        if raw is None or identity is None:  # identity: _admit_stream gives one when it admits
            restore()
            message = "event streams need Sanic's own server (not ASGI)"
            await request.respond(problem(501, "not_supported", message))
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
        node = self._node()
        followed = [*channels, *server_side]
        cursor = StreamCursor(followed, positions) if len(followed) > 1 else None
        stream = EventStream(raw, close_timeout=self.config.close_timeout, cursor=cursor)
        session: Session | None = None
        try:
            refused = node.admission_refused()
            slot = None if refused is not None else await node.user_slots.acquire(identity.subject)
            if refused is not None:
                stream.close(CloseCode.TRY_AGAIN_LATER, refused)
            elif slot is not None:
                stream.close(*slot)
            else:
                user = identity.user if self.authenticator.verifies_user else identity.user or None
                session = Session(
                    node,
                    stream,
                    user=clean_user_name(user),
                    peer=request.client_ip,
                    identity=identity,
                    wire=SSE,
                    hooks=self._hooks,
                    client=request.ctx.feeds_client,
                    headers=headers_of(request.headers),
                )
                if node.user_slots.limited and identity.subject:
                    finished = session.wait_finished()
                    node.track(node.user_slots.release_when_finished(identity.subject, finished))
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
                session.join_for_server(
                    [
                        (c, p.offset, p.epoch) if (p := positions.get(c)) else (c, None, None)
                        for c in server_side
                    ]
                )
            await stream.serve()
            with contextlib.suppress(RequestCancelled):  # the client went away first
                await response.eof()
        finally:
            stream.finished()
            restore()
        if session is not None:
            await session.wait_finished()

    async def _admit(
        self, request: Request, channel: str | None
    ) -> tuple[HTTPResponse | None, list[str], Identity | None, dict[str, Position], list[str]]:
        """Check an event-stream request: (refusal, channels, identity, recovery positions,
        the connect hook's server-side channels that are not among the channels). Those are
        part of the stream too: its event ids name them, so a reconnect recovers them."""
        wanted = [unquote(channel)] if channel is not None else []
        wanted += request.args.getlist("channel", [])
        channels = list(dict.fromkeys(wanted))
        none: tuple[None, list[str], None, dict[str, Position], list[str]] = (
            None,
            [],
            None,
            {},
            [],
        )
        if not channels:
            return problem(
                400, "missing_field", "name a channel: /sse/<channel> or ?channel="
            ), *none[1:]
        for name in channels:
            if not is_valid_channel(name):
                return problem(400, "invalid_channel", f"channel names are {CHANNEL_RULES}"), *none[
                    1:
                ]
        if len(channels) > self.config.max_channels:
            too_many = problem(
                400,
                "too_many_channels",
                f"a stream may follow at most {self.config.max_channels} channels",
            )
            return too_many, *none[1:]
        origin = request.headers.get("origin")
        allowed = self.config.allowed_origins
        if allowed and origin is not None and origin not in allowed:
            log.info("refused a stream from origin %r (peer %s)", origin, request.client_ip)
            return problem(403, "forbidden_origin", "this origin may not open streams here"), *none[
                1:
            ]
        handshake = Handshake(
            headers=request.headers, query={key: request.args.get(key) for key in request.args}
        )
        request.ctx.feeds_client = client = secrets.token_hex(8)
        try:
            admitted = await identify(
                self.authenticator,
                self._hooks,
                handshake,
                client=client,
                channel=channels[0],
                transport="sse",
            )
        except AuthError as exc:
            log.info("refused a stream: %s (peer %s)", exc.reason, request.client_ip)
            return problem(401, "unauthorized", exc.reason), *none[1:]
        except ConnectRefused as exc:
            log.info("connect hook refused a stream: %d (peer %s)", exc.code, request.client_ip)
            status = 503 if exc.code in (CloseCode.BACKEND_UNAVAILABLE, 1011) else 403
            return problem(status, "refused", exc.reason), *none[1:]
        identity = admitted.identity
        permissions = self._node().limits.permissions
        for name in channels:
            verdict = permissions.subscribe(identity, name)
            if isinstance(verdict, Refusal):
                status = 403 if verdict.code == "forbidden" else 400
                return problem(status, verdict.code, f"{verdict.message}: {name}"), *none[1:]
        last_id = request.headers.get("last-event-id") or request.args.get("lastEventId") or ""
        server_side = [c for c in dict.fromkeys(admitted.server_channels) if c not in channels]
        try:
            positions = parse_last_event_id(last_id, [*channels, *server_side])
        except BadEventId as exc:
            return problem(400, "invalid_request", str(exc)), *none[1:]
        return None, channels, identity, positions, server_side

    def _cors_headers(self, request: Request) -> dict[str, str]:
        """Let pages of the allowed origins read the stream (EventSource obeys CORS)."""
        origin = request.headers.get("origin")
        if origin is None or origin not in self.config.allowed_origins:
            return {}
        return {"access-control-allow-origin": origin, "vary": "Origin"}
