"""Whether a new connection may open: the instance's cap and connect rate, the user's limit.

The instance checks come before authentication, so that a flood of handshakes costs as little
as possible; the per-user limit needs to know the user, so it comes right after.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from .errors import BrokerUnavailable
from .presence import Presence
from .protocol import CloseCode
from .ratelimit import Rate, TokenBucket

log = logging.getLogger(__name__)

MAX_UNCERTAIN = 100_000
"""Users kept to be set again at the next sweep after their count failed, at most: past it,
a user's count is set right by the user's next change here."""


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


def counter_of(user: str) -> str:
    """The presence counter of ``user``'s connections: the user id itself, except that one
    starting with ``#`` (where the counters of channels live, ``#room:<channel>``) is moved
    under ``#user:``, so no user id can share a channel's counter."""
    return f"#user:{user}" if user.startswith("#") else user


class UserSlots:
    """Connections per user over the cluster (``--user-connection-limit``).

    Counted in the presence backend (each node sets its own count of a user's connections;
    nodes that stopped reporting no longer count), so the limit holds however the load
    balancer spreads a user's connections. A connection is counted first and checked after:
    two connections of one user opening at the same moment on two instances can then both be
    refused, never both let in over the limit.

    The node's count of a user is set to what it holds (not added to), one change of a user
    at a time: so a count the cluster cleared while this node was cut off is right again with
    the user's next change here, or at once with :meth:`recount`, and a recount never races a
    change of the same user.
    """

    __slots__ = ("_changed", "_held", "_limit", "_locks", "_node_id", "_presence", "_uncertain")

    def __init__(
        self, presence: Presence, node_id: str, limit: int, changed: Callable[[], None]
    ) -> None:
        """``changed``: a count changed (backends that carry the counts in the node's report
        write the next report soon)."""
        self._presence = presence
        self._node_id = node_id
        self._limit = limit
        self._changed = changed
        self._held: dict[str, int] = {}
        """User -> the connections of the user this node holds counted: the local truth."""
        self._locks = KeyedLocks()
        self._uncertain: set[str] = set()
        """Users whose count failed: the backend may hold another value than ``_held`` (the
        count reached it and its answer was lost), so the next sweep sets them again."""

    @property
    def limited(self) -> bool:
        return self._limit > 0

    @property
    def holds_counts(self) -> bool:
        """Whether this node counts any user's connections."""
        return bool(self._held)

    async def acquire(self, user: str) -> tuple[int, str] | None:
        """Count a connection of ``user`` (anonymous ones are not counted): None when it may
        open, else the close code and reason."""
        if not self._limit or not user:
            return None
        async with self._locks.hold(user):
            held = self._held.get(user, 0) + 1
            try:
                total = await self._set(user, held)
            except BrokerUnavailable:
                # Not open, so not held; a count that reached the backend anyway is set right
                # by the next sweep (or the user's next change here).
                return CloseCode.BROKER_UNAVAILABLE, "broker unavailable, try again"
            self._held[user] = held
        if total > self._limit:
            await self.release(user)
            return CloseCode.CONNECTION_LIMIT, f"at most {self._limit} connections per user"
        return None

    async def release(self, user: str) -> None:
        """Uncount a connection of ``user`` (it closed, or was refused)."""
        async with self._locks.hold(user):
            held = self._held.pop(user, 0) - 1
            if held > 0:
                self._held[user] = held  # gone here, whatever the backend answers
            try:
                await self._set(user, held)
            except BrokerUnavailable as exc:  # set right by the next sweep
                log.warning("could not uncount a connection of a user: %s", exc)

    async def recount(self) -> None:
        """Set this node's count of each user it holds connections of again (its counts may
        have been cleared while it was cut off). Every user is tried, also after one failed
        (the first failure is raised at the end: the recount is then made again)."""
        failed: BrokerUnavailable | None = None
        for user in sorted(self._held):
            async with self._locks.hold(user):
                if held := self._held.get(user, 0):
                    try:
                        await self._set(user, held)
                    except BrokerUnavailable as exc:  # the others still get theirs
                        failed = failed or exc
        if failed is not None:
            raise failed

    async def settle(self) -> None:
        """Set again, to what this node holds, each user whose count failed since: one that
        fails again waits for the next sweep."""
        failed: BrokerUnavailable | None = None
        for user in sorted(self._uncertain):
            async with self._locks.hold(user):
                if user in self._uncertain:
                    try:
                        await self._set(user, self._held.get(user, 0))
                    except BrokerUnavailable as exc:
                        failed = failed or exc
        if failed is not None:
            raise failed

    async def _set(self, user: str, held: int) -> int:
        """Make ``held`` this node's count of ``user`` in the backend: the user's total."""
        try:
            count = await self._presence.set_count(counter_of(user), self._node_id, max(held, 0))
            total = count.total
        except BrokerUnavailable:
            if len(self._uncertain) < MAX_UNCERTAIN:
                self._uncertain.add(user)
            raise
        finally:
            self._changed()
        self._uncertain.discard(user)
        return total

    def release_when_finished(self, user: str, finished: Awaitable[None]) -> asyncio.Task[None]:
        """Uncount ``user``'s connection once ``finished`` (the session's end) is done. The
        caller keeps the task (``Host.track``: the node waits for it when it stops)."""

        async def wait_then_release() -> None:
            try:
                await finished
            finally:
                await self.release(user)

        return asyncio.create_task(wait_then_release(), name="sanic-feeds:user-slot")


class KeyedLocks:
    """One lock per key, kept only while someone holds or waits for it."""

    __slots__ = ("_locks",)

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        """Key -> its lock and how many hold or wait for it."""

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users > 1:
                self._locks[key] = (lock, users - 1)
            else:
                del self._locks[key]
