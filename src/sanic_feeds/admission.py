"""Whether a new connection may open: the instance's cap and connect rate, the user's limit.

The instance checks come before authentication, so that a flood of handshakes costs as little
as possible; the per-user limit needs to know the user, so it comes right after.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from .errors import BrokerUnavailable
from .presence import Presence
from .protocol import CloseCode
from .ratelimit import Rate, TokenBucket

log = logging.getLogger(__name__)


class Admission:
    """The instance-wide gate for new connections."""

    __slots__ = ("_bucket", "_cap")

    def __init__(self, max_connections: int, connect_rate: Rate | None) -> None:
        self._cap = max_connections
        self._bucket = TokenBucket(connect_rate, time.monotonic()) if connect_rate else None

    def refused(self, open_connections: int) -> str | None:
        """Why a new connection is turned away (cap or connection rate), or None."""
        if self._cap and open_connections >= self._cap:
            return "server full"
        if self._bucket is not None and self._bucket.take(time.monotonic()) > 0:
            return "too many new connections"
        return None


class UserSlots:
    """Connections per user over the cluster (``--user-connection-limit``).

    Counted in the presence backend (each node adds its own connections of a user; nodes that
    stopped reporting no longer count), so the limit holds however the load balancer spreads a
    user's connections. A connection is counted first and checked after: two connections of
    one user opening at the same moment on two instances can then both be refused, never both
    let in over the limit.
    """

    __slots__ = ("_changed", "_limit", "_node_id", "_presence")

    def __init__(
        self, presence: Presence, node_id: str, limit: int, changed: Callable[[], None]
    ) -> None:
        """``changed``: a count changed (backends that carry the counts in the node's report
        write the next report soon)."""
        self._presence = presence
        self._node_id = node_id
        self._limit = limit
        self._changed = changed

    @property
    def limited(self) -> bool:
        return self._limit > 0

    async def acquire(self, user: str) -> tuple[int, str] | None:
        """Count a connection of ``user`` (anonymous ones are not counted): None when it may
        open, else the close code and reason."""
        if not self._limit or not user:
            return None
        try:
            total = await self._presence.user_connections(user, self._node_id, 1)
            self._changed()
        except BrokerUnavailable:
            return CloseCode.BROKER_UNAVAILABLE, "broker unavailable, try again"
        if total > self._limit:
            await self.release(user)
            return CloseCode.CONNECTION_LIMIT, f"at most {self._limit} connections per user"
        return None

    async def release(self, user: str) -> None:
        """Uncount a connection of ``user`` (it closed, or was refused)."""
        try:
            await self._presence.user_connections(user, self._node_id, -1)
            self._changed()
        except BrokerUnavailable as exc:  # counts of this node vanish with its reports anyway
            log.warning("could not uncount a connection of a user: %s", exc)

    def release_when_finished(self, user: str, finished: Awaitable[None]) -> asyncio.Task[None]:
        """Uncount ``user``'s connection once ``finished`` (the session's end) is done. The
        caller keeps the task (``Host.track``: the node waits for it when it stops)."""

        async def wait_then_release() -> None:
            try:
                await finished
            finally:
                await self.release(user)

        return asyncio.create_task(wait_then_release(), name="sanic-feeds:user-slot")
