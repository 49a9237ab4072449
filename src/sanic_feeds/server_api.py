"""The server API over HTTP: ``POST /api/<method>``, Centrifugo's shape (docs/server-api.md).

A request is a JSON object; the answer is ``{"result": {...}}`` or ``{"error": {"code",
"message"}}`` with HTTP 200, as Centrifugo answers, so its API clients work unchanged. Only what
is no API call at all gets another status: a missing or wrong key (401), a body that is not a
JSON object (400), an unknown method (404), a body over the limit (413); each still carries an
``error`` with its code.

The key is ``FeedsConfig.api_key``, sent as ``X-API-Key: <key>``, ``Authorization: apikey
<key>`` or ``?api_key=<key>``. With no key configured the API is open, as the publish endpoint
always was: fine on a laptop or a private network, not on a public port (the server logs this
once at start).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

import orjson
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, raw

from .config import FeedsConfig
from .node import Node
from .server_methods import ServerMethods
from .server_requests import ApiCode, ApiError

log = logging.getLogger(__name__)

MAX_BODY_FACTOR = 16
"""A request body may be this many times ``max_publish_size`` (a batch or broadcast carries
several messages); the data of one publish is limited to ``max_publish_size`` itself."""


def answer(body: dict[str, object], status: int = 200) -> HTTPResponse:
    return raw(orjson.dumps(body), status=status, content_type="application/json")


def refused(status: int, error: ApiError) -> HTTPResponse:
    return answer({"error": error.to_json()}, status)


class ServerApi:
    """The ``/api/<method>`` route of one ``Feeds``: the key, the JSON, the methods."""

    def __init__(self, config: FeedsConfig, node: Callable[[], Node]) -> None:
        self._key = config.api_key.encode()
        self._max_body = config.max_publish_size * MAX_BODY_FACTOR
        self.methods = ServerMethods(node, config.max_publish_size)

    def register(self, bp: Blueprint) -> None:
        bp.add_route(self.call, "/api/<method:str>", methods=["POST"], name="server_api")
        if not self._key:
            log.warning("the server API (POST /api/<method>) is open: no api_key is set")

    def _authorized(self, request: Request) -> bool:
        if not self._key:
            return True
        given = request.headers.get("x-api-key")
        if given is None:
            scheme, _, rest = (request.headers.get("authorization") or "").partition(" ")
            given = rest.strip() if scheme.lower() == "apikey" else request.args.get("api_key")
        return given is not None and hmac.compare_digest(given.encode(), self._key)

    async def call(self, request: Request, method: str) -> HTTPResponse:
        if not self._authorized(request):
            return refused(401, ApiError(ApiCode.UNAUTHORIZED))
        if method != "batch" and method not in self.methods.methods:
            return refused(404, ApiError(ApiCode.METHOD_NOT_FOUND, repr(method[:40])))
        body = request.body or b"{}"
        if len(body) > self._max_body:
            return refused(413, ApiError(ApiCode.LIMIT_EXCEEDED, f"body over {self._max_body}"))
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return refused(400, ApiError(ApiCode.BAD_REQUEST, "the body is not JSON"))
        if not isinstance(data, dict):
            return refused(400, ApiError(ApiCode.BAD_REQUEST, "the body must be a JSON object"))
        try:
            if method == "batch":
                return answer({"replies": await self.methods.batch(data)})
            return answer({"result": await self.methods.call(method, data)})
        except ApiError as exc:
            return answer({"error": exc.to_json()})
