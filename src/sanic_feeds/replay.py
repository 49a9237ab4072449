"""Holding a recovering member's live messages while its missed messages are replayed.

A client that reconnects with ``since`` must get every message after that id exactly once, in
order, before any newer live message. The session joins the channel first (so nothing published
from then on can be missed), parks live frames here while it reads and sends the history, then
forwards the parked frames that the history did not already contain, and only then lets live
frames flow straight to the client. Pure code: no I/O.
"""

from __future__ import annotations

from .history import position_of
from .wire import WEBSOCKET, Wire


class ReplayBuffer:
    """Stands in for a member's outbound buffer during a replay; bounded in bytes like it."""

    __slots__ = ("frames", "limit", "overflowed", "size", "wire")

    def __init__(self, limit: int, wire: Wire = WEBSOCKET) -> None:
        self.frames: list[bytes] = []
        self.size = 0
        self.limit = limit
        self.overflowed = False
        self.wire = wire
        """How the parked frames are framed (to read their bodies back)."""

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
        body_of = self.wire.body_of
        return [f for f in self.frames if not _replayed(body_of(f), epoch, last)]

    def next_stored(self, epoch: str, last: int) -> int | None:
        """The id of the first parked stored message of ``epoch`` after ``last``, or None."""
        body_of = self.wire.body_of
        for frame in self.frames:
            position = position_of(body_of(frame))
            if position is not None and position[0] == epoch and position[1] > last:
                return position[1]
        return None


def _replayed(payload: bytes, epoch: str, last: int) -> bool:
    position = position_of(payload)  # None for messages not stored (notices): always forwarded
    return position is not None and position[0] == epoch and position[1] <= last
