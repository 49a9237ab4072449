"""Stopping background tasks reliably.

On Python 3.11 a cancellation that arrives just as an ``asyncio.timeout`` block hits its own
deadline can come out as ``TimeoutError`` (fixed in 3.12). A loop that treats ``TimeoutError``
as "nothing happened, go on" then never ends, and whoever awaits it after ``cancel()`` hangs:
a server that never finishes shutting down. Our loops also check a stop flag, and this helper
re-cancels until the task has really ended, within a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger(__name__)


async def cancel_and_wait(task: asyncio.Task[Any] | None, limit: float = 5.0) -> None:
    """Cancel ``task`` and wait until it is done (at most ``limit`` seconds)."""
    if task is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.warning("task %s did not stop within %.1f s", task.get_name(), limit)
            return
        task.cancel()
        await asyncio.wait({task}, timeout=min(0.2, remaining))
    with contextlib.suppress(asyncio.CancelledError):
        exc = task.exception()
        if exc is not None:
            log.warning("task %s ended with %r", task.get_name(), exc)
