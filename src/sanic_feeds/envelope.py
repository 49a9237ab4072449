"""How a message travels through the broker.

Pure code. A broker carries opaque bytes per channel; we put one short header line in front of
the client-ready JSON so that receiving nodes never decode the JSON again::

    [<excluded client id>] [" " <publish time, Unix microseconds>] "\\n" <the JSON members receive>

The excluded client is the member that must not get this message (the joiner of its own
``user_joined`` notice). The publish time feeds the publish-to-deliver latency metric. Client ids
are hex, so they never contain a space or a newline, and orjson never emits a raw newline, so
splitting at the first newline is exact.
"""

from __future__ import annotations

import time
from typing import NamedTuple

_SEP = b"\n"


class Envelope(NamedTuple):
    """A decoded broker payload."""

    body: bytes
    """The JSON text every member receives, already encoded."""
    exclude: str
    """Client id that must not receive ``body``; empty when everyone does."""
    sent_at: float | None = None
    """When it was published (Unix seconds), if the publisher said."""


def now_us() -> int:
    """The publish time as the envelope carries it."""
    return time.time_ns() // 1000


def seal(body: bytes, exclude: str = "", sent_at_us: int | None = None) -> bytes:
    """Wrap ``body`` for the broker, stamped with the publish time (now, unless given)."""
    stamp = now_us() if sent_at_us is None else sent_at_us
    return b"%s %d\n%s" % (exclude.encode(), stamp, body)


def open_envelope(payload: bytes) -> Envelope:
    """Unwrap a broker payload. Raises ValueError when the payload is not an envelope."""
    head, sep, body = payload.partition(_SEP)
    if not sep:
        raise ValueError("broker payload has no envelope header")
    if not head:
        return Envelope(body, "")
    exclude, _, stamp = head.partition(b" ")
    sent_at = int(stamp) / 1e6 if stamp.isdigit() else None
    return Envelope(body, exclude.decode("ascii"), sent_at)
