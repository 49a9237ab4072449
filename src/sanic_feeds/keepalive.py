"""The node-wide keepalive sweep: one task for all connections, not a task per connection.

An idle feed connection has no task of its own (see docs/architecture.md); a keepalive timer
per connection would undo that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from .host import Attached


async def keep_alive(
    sessions: Mapping[str, Attached], interval: float, ping_timeout: float
) -> None:
    """Every ``interval``: ping the connections silent since the last sweep, and close those
    that left a ping unanswered for ``ping_timeout`` (checked at these sweeps). Runs until
    cancelled (the node cancels it when it stops)."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval)
        now = loop.time()
        for session in list(sessions.values()):
            session.keepalive(now, ping_timeout)
