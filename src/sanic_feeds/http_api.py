"""The HTTP API next to the feeds: publish, rooms, presence, history, health and metrics.

Every error is ``{"error": <code>, "message": <text>}`` with a status that says whether to
retry (503) or not (4xx); see docs/protocol.md.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from urllib.parse import unquote

import orjson
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json, raw

from . import protocol
from .config import FeedsConfig
from .errors import BrokerUnavailable, ProtocolError
from .metrics import CONTENT_TYPE, Metrics
from .node import Node
from .permissions import Refusal, options_of


def problem(status: int, code: str, message: str) -> HTTPResponse:
    """An HTTP API error: ``{"error": <code>, "message": <text>}``."""
    return json({"error": code, "message": message}, status=status)


class HttpApi:
    """The API's handlers, for one ``Feeds``; ``node`` gives the running node."""

    def __init__(self, config: FeedsConfig, node: Callable[[], Node], metrics: Metrics) -> None:
        self.config = config
        self._node = node
        self._metrics = metrics

    def register(self, bp: Blueprint) -> None:
        bp.add_route(self.rooms, "/api/rooms", methods=["GET"], name="rooms")
        bp.add_route(self.health, "/health", methods=["GET"], name="health")
        bp.add_route(self.metrics, "/metrics", methods=["GET"], name="metrics")
        channel = "/api/channels/<channel:str>"
        bp.add_route(self.publish, f"{channel}/publish", methods=["POST"], name="publish")
        bp.add_route(self.presence, f"{channel}/presence", methods=["GET"], name="presence")
        bp.add_route(self.history, f"{channel}/history", methods=["GET"], name="history")

    async def rooms(self, request: Request) -> HTTPResponse:
        try:
            totals = await self._node().cluster_rooms()
        except BrokerUnavailable as exc:
            return json({"error": "broker_unavailable", "message": str(exc)}, status=503)
        return json(
            {"rooms": sorted(totals.rooms), "total_clients": totals.clients, "counts": totals.rooms}
        )

    async def publish(self, request: Request, channel: str) -> HTTPResponse:
        """Publish the JSON body as ``{"type": "data", ...}`` to every member, on every instance."""
        denied = self._check_api_key(request)
        if denied is not None:
            return denied
        channel = unquote(channel)
        refused = self._channel_problem(channel)
        if refused is not None:
            return refused
        body = request.body or b""
        if len(body) > self.config.max_publish_size:
            return problem(413, "too_large", f"body over {self.config.max_publish_size} bytes")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return problem(400, "invalid_json", "the body must be JSON")
        key = request.headers.get("idempotency-key")
        if key is not None and not (0 < len(key) <= 128 and key.isprintable()):
            return problem(400, "invalid_request", "Idempotency-Key: 1-128 printable characters")
        try:
            await self._node().publish(channel, data, key)
        except BrokerUnavailable as exc:
            return problem(503, "broker_unavailable", str(exc))
        return json({"ok": True, "channel": channel})

    def _channel_problem(self, channel: str, feature: str = "") -> HTTPResponse | None:
        """400 for a bad name or an unknown namespace; 404 when ``feature`` (``presence``,
        ``history``) is off in the channel's namespace."""
        options = options_of(self.config.channel_namespaces, channel)
        if isinstance(options, Refusal):
            return problem(400, options.code, options.message)
        if feature == "presence" and not options.presence:
            return problem(404, "not_available", "presence is off for this channel")
        if feature == "history" and not options.keeps_history:
            return problem(404, "not_available", "history is off for this channel")
        return None

    def _check_api_key(self, request: Request) -> HTTPResponse | None:
        expected = self.config.api_key
        if not expected:
            return None
        scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return problem(401, "unauthorized", "send 'Authorization: Bearer <api key>'")
        if not hmac.compare_digest(given.strip().encode(), expected.encode()):
            return problem(403, "forbidden", "wrong API key")
        return None

    async def presence(self, request: Request, channel: str) -> HTTPResponse:
        """Who is in a channel now, over the whole cluster."""
        channel = unquote(channel)
        refused = self._channel_problem(channel, "presence")
        if refused is not None:
            return refused
        try:
            members = await self._node().channel_members(channel)
        except BrokerUnavailable as exc:
            return problem(503, "broker_unavailable", str(exc))
        clients = [m.public() for m in members]
        return json({"channel": channel, "clients": clients, "total": len(clients)})

    async def history(self, request: Request, channel: str) -> HTTPResponse:
        """Stored messages of a channel, oldest first: the latest ``limit``, or after ``since``."""
        channel = unquote(channel)
        refused = self._channel_problem(channel, "history")
        if refused is not None:
            return refused
        size = self.config.channel_namespaces.options(channel).history.size
        try:
            since = protocol.parse_since(request.args.get("since"))
            epoch = protocol.parse_epoch(request.args.get("epoch"))
        except ProtocolError as exc:
            return problem(400, "invalid_request", exc.message.replace("Field", "Parameter"))
        limit_text = request.args.get("limit")
        if limit_text is None:
            limit = 100
        elif limit_text.isascii() and limit_text.isdigit() and 0 < len(limit_text) <= 9:
            limit = int(limit_text)
        else:
            limit = 0
        if limit < 1:
            return problem(400, "invalid_request", "Parameter 'limit' must be a positive integer")
        limit = min(limit, max(size, 1))
        try:
            page = await self._node().broker.history(channel, since, epoch, limit)
        except BrokerUnavailable as exc:
            return problem(503, "broker_unavailable", str(exc))
        head = orjson.dumps(
            {"channel": channel, "epoch": page.epoch, "top": page.top, "complete": page.complete}
        )
        # The stored texts are already JSON: splice them in instead of decoding and re-encoding.
        body = head[:-1] + b',"messages":[' + b",".join(page.messages) + b"]}"
        return raw(body, content_type="application/json")

    async def metrics(self, request: Request) -> HTTPResponse:
        return raw(self._metrics.render(), content_type=CONTENT_TYPE)

    async def health(self, request: Request) -> HTTPResponse:
        ok, body = await self._node().health()
        return json(body, status=200 if ok else 503)
