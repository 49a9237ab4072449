"""Holding a recovering member's live messages while its missed messages are replayed.

A client that reconnects with ``since`` must get every message after that id exactly once, in
order, before any newer live message. The session joins the channel first (so nothing published
from then on can be missed), parks live frames here while it reads and sends the history, then
forwards the parked frames that the history did not already contain, and only then lets live
frames flow straight to the client. Pure code: no I/O.
"""

from __future__ import annotations

import orjson

from .frames import payload_of


class ReplayBuffer:
    """Stands in for a member's outbound buffer during a replay; bounded like it."""

    __slots__ = ("frames", "limit", "overflowed", "size")

    def __init__(self, limit: int) -> None:
        self.frames: list[bytes] = []
        self.size = 0
        self.limit = limit
        self.overflowed = False

    def send(self, frame: bytes) -> None:
        if self.overflowed:
            return
        self.size += len(frame)
        if self.size > self.limit:
            self.overflowed = True
            self.frames.clear()
            return
        self.frames.append(frame)

    def unseen(self, epoch: str, last: int) -> list[bytes]:
        """The parked frames that were not part of the replay (history ids up to ``last``)."""
        return [f for f in self.frames if not _replayed(f, epoch, last)]


def _replayed(frame: bytes, epoch: str, last: int) -> bool:
    payload = payload_of(frame)
    if not payload.startswith(b'{"id":'):
        return False  # not a stored message (join/leave notices): always forwarded
    try:
        message = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return False
    offset = message.get("id")
    return message.get("epoch") == epoch and isinstance(offset, int) and offset <= last
