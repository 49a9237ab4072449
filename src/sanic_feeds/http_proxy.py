"""The HTTP proxies: hooks that ask your backend, in Centrifugo's proxy format.

:class:`HttpProxy` implements the connect, refresh, subscribe and publish hooks and an RPC
handler (``hooks.py``, ``rpc.py``) by POSTing Centrifugo's proxy JSON
(``proxy_payloads.py``) to the endpoints of ``proxy_endpoints``, so both client protocols get
them through the one hook runner. One ``httpx.AsyncClient`` per node keeps the connections to
the backend open between requests (a pool of at most ``MAX_CONNECTIONS``).

Each request is bounded by its endpoint's ``timeout``. A backend that is down, slow, answers
anything but HTTP 200 or a malformed body raises :class:`~sanic_feeds.hooks.Unavailable`: the
client gets the documented temporary error, never a way in.

Which channels are asked is the namespaces' business (``subscribe_proxy_enabled``,
``publish_proxy_enabled``); the connect proxy is not asked about a connection whose token was
verified (as in Centrifugo). Never logs a header's value (cookies are credentials).
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx
import orjson

from . import proxy_payloads as payloads
from .errors import FeedsError
from .hooks import (
    ConnectRequest,
    ConnectResult,
    Denial,
    Hooks,
    PublishRequest,
    PublishResult,
    RefreshRequest,
    RefreshResult,
    SubRefreshRequest,
    SubscribeRequest,
    SubscribeResult,
    Unavailable,
)
from .namespaces import Namespaces, UnknownNamespace
from .proxy_config import ProxyEndpoint
from .rpc import ClientCall, ClientHandlers, RpcError

MAX_CONNECTIONS = 100
"""Connections open to the backends at most, per node (requests past it wait their turn)."""


class HttpProxy:
    """The proxies of one node."""

    __slots__ = ("_client", "_endpoints", "_namespaces")

    def __init__(self, endpoints: tuple[ProxyEndpoint, ...], namespaces: Namespaces) -> None:
        self._endpoints = {endpoint.event: endpoint for endpoint in endpoints}
        self._namespaces = namespaces
        self._client: httpx.AsyncClient | None = None

    def install(self, hooks: Hooks, handlers: ClientHandlers) -> None:
        """Become the hooks of the configured events (an application's own hook set later
        replaces the proxy of its event)."""
        events = self._endpoints
        if "connect" in events:
            hooks.connect = self.connect
        if "refresh" in events:
            hooks.refresh = self.refresh
        if "sub_refresh" in events:
            hooks.sub_refresh = self.sub_refresh
        if "subscribe" in events:
            hooks.subscribe = self.subscribe
        if "publish" in events:
            hooks.publish = self.publish
        if "rpc" in events:
            handlers.fallback = self.rpc

    def open(self) -> None:
        limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=20)
        self._client = httpx.AsyncClient(limits=limits, trust_env=False)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- the hooks -------------------------------------------------------------------------------

    async def connect(self, request: ConnectRequest) -> ConnectResult | Denial | None:
        if request.credential is not None:
            return None  # a verified token: the backend is not asked (Centrifugo's rule)
        endpoint = self._endpoints["connect"]
        answer = await self._post(endpoint, payloads.connect_request(request), request.headers)
        return payloads.connect_answer(answer)

    async def refresh(self, request: RefreshRequest) -> RefreshResult | Denial:
        endpoint = self._endpoints["refresh"]
        answer = await self._post(endpoint, payloads.refresh_request(request), request.headers)
        return payloads.refresh_answer(answer)

    async def sub_refresh(self, request: SubRefreshRequest) -> RefreshResult | Denial | None:
        if not self._enabled(request.channel, "sub_refresh_proxy_enabled"):
            return None
        endpoint = self._endpoints["sub_refresh"]
        payload = payloads.sub_refresh_request(request)
        return payloads.refresh_answer(await self._post(endpoint, payload, request.headers))

    async def subscribe(self, request: SubscribeRequest) -> SubscribeResult | Denial | None:
        if not self._enabled(request.channel, "subscribe_proxy_enabled"):
            return None
        endpoint = self._endpoints["subscribe"]
        answer = await self._post(endpoint, payloads.subscribe_request(request), request.headers)
        return payloads.subscribe_answer(answer)

    async def publish(self, request: PublishRequest) -> PublishResult | Denial | None:
        if not self._enabled(request.channel, "publish_proxy_enabled"):
            return None
        endpoint = self._endpoints["publish"]
        answer = await self._post(endpoint, payloads.publish_request(request), request.headers)
        return payloads.publish_answer(answer)

    async def rpc(self, call: ClientCall) -> object:
        endpoint = self._endpoints["rpc"]
        if not endpoint.answers_rpc(call.method):
            raise RpcError(104, "method not found")
        payload = payloads.rpc_request(
            call.client, call.user, call.method, call.data, call.transport
        )
        return payloads.rpc_answer(await self._post(endpoint, payload, call.headers))

    # -- HTTP ------------------------------------------------------------------------------------

    def _enabled(self, channel: str, option: str) -> bool:
        try:
            options = self._namespaces.options(channel)
        except UnknownNamespace:
            return False
        enabled: bool = getattr(options, option)
        return enabled

    async def _post(
        self, endpoint: ProxyEndpoint, payload: dict[str, object], headers: Mapping[str, str]
    ) -> object:
        client = self._client
        if client is None:
            raise FeedsError("the HTTP proxies are not open: the server has not started")
        sent = payloads.forwarded(headers, endpoint.http_headers)
        sent["content-type"] = "application/json"
        try:
            response = await client.post(
                endpoint.endpoint,
                content=orjson.dumps(payload),
                headers=sent,
                timeout=endpoint.timeout,
            )
        except httpx.TimeoutException:
            raise Unavailable("backend timeout") from None
        except httpx.HTTPError:
            raise Unavailable("backend unreachable") from None
        if response.status_code != 200:
            raise Unavailable(f"backend answered HTTP {response.status_code}")
        try:
            answer: object = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise Unavailable(payloads.MALFORMED) from None
        return answer
