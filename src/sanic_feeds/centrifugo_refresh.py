"""Server-side refresh of a Centrifugo connection: the refresh and sub_refresh hooks.

Without these hooks a Centrifugo client refreshes its own credential (``refresh`` and
``sub_refresh`` commands with a new token). With a refresh hook the server asks it when the
connection's expiry comes, and the connect reply carries no ``expires``/``ttl`` (the client
has nothing to do); with a sub_refresh hook the same holds for the subscriptions whose expiry
the subscribe hook set. The hook's answer moves the expiry (``expire_at``), or ends the
connection (``expired``, or no answer: 3005 / 3006); a hook that does not answer is asked
again ``RETRY`` seconds later and the connection stays meanwhile (a backend that is down does
not disconnect everyone at once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

import orjson

from .centrifugo_actions import Close
from .centrifugo_protocol import Disconnect
from .centrifugo_state import CentrifugoState
from .hook_runner import HookRunner
from .hooks import Denial, RefreshRequest, RefreshResult, SubRefreshRequest
from .host import Host

RETRY = 10.0
"""Seconds before asking again a refresh hook that did not answer."""


class Refreshed(Protocol):
    def close(self, code: int, reason: str) -> None: ...

    def rearm(self) -> None: ...


class CentrifugoRefresher:
    """The hooks that refresh one connection, and what they refresh."""

    __slots__ = (
        "_busy",
        "_headers",
        "_hooks",
        "_host",
        "_session",
        "_state",
        "_transport",
        "server_channels",
    )

    def __init__(
        self,
        host: Host,
        state: CentrifugoState,
        session: Refreshed,
        hooks: HookRunner,
        headers: Mapping[str, str],
        transport: str = "websocket",
    ) -> None:
        self._transport = transport
        self._host = host
        self._state = state
        self._session = session
        self._hooks = hooks
        self._headers = headers
        self._busy = False
        self.server_channels: set[str] = set()
        """Subscriptions whose expiry the server refreshes (a subscribe hook set it)."""

    @property
    def refreshes_connection(self) -> bool:
        return self._hooks.hooks.refresh is not None

    @property
    def refreshes_subscriptions(self) -> bool:
        return self._hooks.hooks.sub_refresh is not None

    def due(self) -> float | None:
        """When the next hook is to be asked (Unix time), or None."""
        times: list[float] = []
        if self.refreshes_connection and self._state.expires_at is not None:
            times.append(self._state.expires_at)
        for channel in self.server_channels:
            sub = self._state.channels.channels.get(channel)
            if sub is not None and sub.expires_at is not None:
                times.append(sub.expires_at)
        return min(times) if times else None

    def start(self, now: float) -> bool:
        """Ask the hooks whose time came, in a task; True if one is (or was already) asking."""
        if self._busy:
            return True
        due = self.due()
        if due is None or due > now or self._state.closed is not None:
            return False
        self._busy = True
        self._host.track(asyncio.ensure_future(self._refresh(now)))
        return True

    async def _refresh(self, now: float) -> None:
        state = self._state
        try:
            at = state.expires_at
            if self.refreshes_connection and at is not None and at <= now:
                request = RefreshRequest(
                    state.client,
                    self._transport,
                    "centrifugo",
                    state.identity.subject,
                    self._headers,
                )
                ended, moved = self._moved(await self._hooks.refresh(request), now)
                if ended:
                    self._end(Disconnect.EXPIRED, "connection expired")
                    return
                state.expires_at = moved
            for channel in sorted(self.server_channels):
                sub = state.channels.channels.get(channel)
                if sub is None:
                    self.server_channels.discard(channel)
                    continue
                if sub.expires_at is None or sub.expires_at > now:
                    continue
                user = state.identity.subject
                request_sub = SubRefreshRequest(
                    state.client, self._transport, "centrifugo", user, channel, self._headers
                )
                ended, moved = self._moved(await self._hooks.sub_refresh(request_sub), now)
                if ended:
                    self._end(Disconnect.SUB_EXPIRED, "subscription expired")
                    return
                sub.expires_at = moved
        finally:
            self._busy = False
            if state.closed is None:
                self._session.rearm()

    def _end(self, code: int, reason: str) -> None:
        for action in self._state.close_with(code, reason):  # the machine knows it is closed
            if isinstance(action, Close):
                self._session.close(action.code, action.reason)

    @staticmethod
    def _moved(answer: RefreshResult | Denial | None, now: float) -> tuple[bool, float | None]:
        """Whether it ends, else the new expiry (None: never)."""
        if isinstance(answer, Denial):
            return False, now + RETRY
        if answer is None or answer.expired:
            return True, None
        return False, answer.expire_at


def without_ttl(reply: bytes | None, method: str) -> bytes | None:
    """A connect or subscribe reply without ``expires``/``ttl`` (the server refreshes)."""
    if reply is None:
        return None
    frame: dict[str, dict[str, object]] = orjson.loads(reply)
    result = frame.get(method)
    if result is None or "expires" not in result:
        return reply
    result.pop("expires", None)
    result.pop("ttl", None)
    return orjson.dumps(frame)
