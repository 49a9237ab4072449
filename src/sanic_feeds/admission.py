"""Whether a new connection may open on this instance: the connection cap and the connect rate.

Checked before authentication, so that a flood of handshakes costs as little as possible.
"""

from __future__ import annotations

import time

from .ratelimit import Rate, TokenBucket


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
