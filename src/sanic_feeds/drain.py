"""Closing every connection of a stopping instance, spread over time.

Clients closed all at once reconnect all at once, to the instances still up: one batch every
:data:`DRAIN_STEP` seconds, evenly over ``drain_time``, turns that stampede into a trickle.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from .host import Attached

log = logging.getLogger(__name__)

DRAIN_STEP = 0.1
"""Seconds between two batches of closes during a shutdown."""


async def close_gradually(
    sessions: Sequence[Attached], code: int, reason: str, drain_time: float, close_timeout: float
) -> None:
    """Close ``sessions`` in batches over ``drain_time``, then wait (up to ``close_timeout``)
    for their handlers to finish leaving their channels."""
    if not sessions:
        return
    batches = max(1, min(len(sessions), int(drain_time / DRAIN_STEP)))
    size = -(-len(sessions) // batches)
    log.info("closing %d connections in %d batches over %.1f s", len(sessions), batches, drain_time)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for number, first in enumerate(range(0, len(sessions), size)):
        delay = started + number * drain_time / batches - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        for session in sessions[first : first + size]:
            session.close(code, reason)
    waiters = [asyncio.ensure_future(s.wait_finished()) for s in sessions]
    _, pending = await asyncio.wait(waiters, timeout=close_timeout)
    for waiter in pending:
        waiter.cancel()
    if pending:
        log.warning("%d connections did not finish closing in time", len(pending))
