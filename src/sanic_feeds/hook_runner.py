"""Calling the application's hooks: bounded in time, and never trusted to behave.

Every hook call of every protocol goes through :meth:`HookRunner.call`: it waits at most
``hook_timeout`` (then the request is refused as :class:`~sanic_feeds.hooks.Unavailable`),
turns a raised :class:`~sanic_feeds.hooks.Denial` into the answer, and turns anything else a
hook raises or returns into :class:`~sanic_feeds.hooks.HookFailed`, with the traceback in the
log. A hook's failure refuses only the request it was asked about; other connections never
see it. What a denial means to the client is decided by ``hook_replies.py`` (pure).

Failures are logged at most once per second per kind, so a backend that is down does not fill
the log with a line per connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .hooks import (
    ConnectedEvent,
    ConnectRequest,
    ConnectResult,
    Denial,
    DisconnectEvent,
    HookFailed,
    Hooks,
    PublishRequest,
    PublishResult,
    RefreshRequest,
    RefreshResult,
    Refuse,
    SubRefreshRequest,
    SubscribeRequest,
    SubscribeResult,
    Unavailable,
)
from .rpc import RpcError

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Res = TypeVar("Res")

DEFAULT_TIMEOUT = 5.0


class HookRunner:
    """The hooks of one ``Feeds`` and how they are called."""

    __slots__ = ("_logged", "hooks", "timeout")

    def __init__(self, hooks: Hooks | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.hooks = hooks if hooks is not None else Hooks()
        self.timeout = timeout
        self._logged: dict[str, float] = {}

    async def call(
        self,
        hook: Callable[[Req], Awaitable[object]],
        request: Req,
        expected: type[Res],
        what: str,
    ) -> Res | Denial | None:
        """``hook(request)``: its answer if it is a ``expected`` (or None), else a denial."""
        try:
            async with asyncio.timeout(self.timeout):
                answer = await hook(request)
        except TimeoutError:
            self._warn(what, f"{what} hook: no answer in {self.timeout:g}s; refused")
            return Unavailable("backend timeout")
        except Denial as denial:
            if isinstance(denial, Unavailable):
                self._warn(what, f"{what} hook: {denial.message}; refused")
            return denial
        except RpcError as exc:  # an RPC handler's error, raised from a hook
            return Refuse(exc.code, exc.message)
        except Exception:
            if self._due(what):
                log.exception("%s hook failed; the request was refused", what)
            return HookFailed()
        if answer is None or isinstance(answer, expected | Denial):
            return answer
        self._warn(what, f"{what} hook answered {type(answer).__name__}, not {expected.__name__}")
        return HookFailed()

    # -- the hooks by name (None: no hook, or allowed without changes) -------------------------

    async def connect(self, request: ConnectRequest) -> ConnectResult | Denial | None:
        hook = self.hooks.connect
        if hook is None:
            return None
        return await self.call(hook, request, ConnectResult, "connect")

    async def subscribe(self, request: SubscribeRequest) -> SubscribeResult | Denial | None:
        hook = self.hooks.subscribe
        if hook is None:
            return None
        return await self.call(hook, request, SubscribeResult, "subscribe")

    async def publish(self, request: PublishRequest) -> PublishResult | Denial | None:
        hook = self.hooks.publish
        if hook is None:
            return None
        return await self.call(hook, request, PublishResult, "publish")

    async def refresh(self, request: RefreshRequest) -> RefreshResult | Denial | None:
        hook = self.hooks.refresh
        if hook is None:
            return None
        return await self.call(hook, request, RefreshResult, "refresh")

    async def sub_refresh(self, request: SubRefreshRequest) -> RefreshResult | Denial | None:
        hook = self.hooks.sub_refresh
        if hook is None:
            return None
        return await self.call(hook, request, RefreshResult, "sub_refresh")

    def tell(self, event: DisconnectEvent) -> asyncio.Future[None]:
        """Tell every disconnect hook, in a task of its own; failures are logged, no more."""
        return asyncio.ensure_future(self._disconnected(event))

    async def _disconnected(self, event: DisconnectEvent) -> None:
        for hook in list(self.hooks.disconnect):
            await self.call(hook, event, type(None), "disconnect")

    def tell_connected(self, event: ConnectedEvent) -> asyncio.Future[None]:
        """Tell every connected hook, in a task of its own."""
        return asyncio.ensure_future(self._connected(event))

    async def _connected(self, event: ConnectedEvent) -> None:
        for hook in list(self.hooks.connected):
            await self.call(hook, event, type(None), "connected")

    # -- the log ---------------------------------------------------------------------------------

    def _due(self, what: str) -> bool:
        now = time.monotonic()
        if now - self._logged.get(what, -2.0) < 1.0:
            return False
        self._logged[what] = now
        return True

    def _warn(self, what: str, text: str) -> None:
        if self._due(what):
            log.warning("%s", text)


NO_HOOKS = HookRunner()
"""For sessions made without a ``Feeds`` (tests, tools): no hook is ever called."""
