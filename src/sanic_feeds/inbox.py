"""The inbox of a session driver: client messages waiting to be handled, and its backpressure.

Both drivers (``session.Session`` for ``/feed/`` and ``/sse/``, ``centrifugo_session.
CentrifugoSession``) handle a connection's messages one at a time, in order, in a task that
exists only while some are waiting, and stop reading the socket while too many wait. How many
is "too many", when reading resumes, and how the last messages are given their chance when the
connection ends must be the same for both protocols: a client is throttled alike whichever it
speaks. What a message means, and when the loop stops, stays with each driver.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Generic, TypeVar

from .connection import Connection
from .tasks import cancel_and_wait

__all__ = ["INBOX_LIMIT", "InboxDriver"]

INBOX_LIMIT = 32
"""Client messages waiting to be handled before the connection stops reading."""

M = TypeVar("M")


class InboxDriver(Generic[M]):
    """The inbox, its task and its backpressure, for a driver that has a ``conn``.

    Reading pauses when ``INBOX_LIMIT`` messages wait (a client sending faster than it is served
    waits in TCP, not in memory) and resumes once half of them are handled, so a busy client
    does not flip the socket on and off at every message.
    """

    __slots__ = ("_inbox", "_paused", "_task")

    conn: Connection

    def __init__(self, inbox: deque[M] | None) -> None:
        self._inbox = inbox
        """Messages waiting for the task; a driver may make it only when the first comes."""
        self._paused = False
        self._task: asyncio.Task[None] | None = None
        """The task handling the inbox (or opening the session); None while idle."""

    def _queue(self, message: M, work: Callable[[], Coroutine[object, object, None]]) -> None:
        """Add a message; start ``work`` if no task runs, else pause reading past the limit."""
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append(message)
        if self._task is None:
            self._task = asyncio.ensure_future(work())
        elif len(inbox) >= INBOX_LIMIT and not self._paused:
            self._paused = True
            self.conn.pause_reading()

    def _take(self, inbox: deque[M]) -> M:
        """The next message to handle; reading resumes once half the inbox is handled."""
        message = inbox.popleft()
        if self._paused and len(inbox) <= INBOX_LIMIT // 2:
            self._paused = False
            self.conn.resume_reading()
        return message

    async def _let_inbox_finish(self, grace: float) -> bool:
        """Give the task ``grace`` seconds to handle what the client sent before it left.

        A chat sent just before a close is still published. Past that the task is cancelled;
        returns True then (the driver may say so), False when it finished in time.
        """
        task = self._task
        if task is None:
            return False
        _, pending = await asyncio.wait({task}, timeout=grace)
        if not pending:
            return False
        await cancel_and_wait(task)
        return True
