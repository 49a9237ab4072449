"""At most one log line per period for a repeated event (refusals, unreadable payloads).

An outage or a misbehaving peer repeats the same event thousands of times a second; logging
each would flood the log and cost more than the event. Pure code: no I/O, no logging itself.
"""

from __future__ import annotations

import math
import time


class LogEvery:
    """Says when the next line about an event is due: at most once per ``seconds``."""

    __slots__ = ("_last", "seconds")

    def __init__(self, seconds: float = 10.0) -> None:
        self.seconds = seconds
        self._last = -math.inf

    def due(self, now: float | None = None) -> bool:
        """True (and the period starts again) when a line may be written now."""
        now = time.monotonic() if now is None else now
        if now - self._last < self.seconds:
            return False
        self._last = now
        return True
