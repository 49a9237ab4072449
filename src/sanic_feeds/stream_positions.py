"""Where each channel's stream stands on this node, and the members who stand further on.

The node fans out the stored messages of a channel once each, in id order, and remembers the
newest (a gap refill starts from there). A member that went live after a replay holds every
stored message up to the replay's end, and that end can lie *beyond* the node's stream:

- the history read and the subscription are two connections with no order between them, so the
  reply to a read can arrive before the publish of a message the read already returned;
- a gap refill reads from the node's newest message, not from the member's.

Either way the node is about to fan out stored messages the member already has. So until the
node's stream passes a member's end, stored messages up to that end skip the member: it gets
each message once, whichever of its replay, the live stream and a refill delivers it first.

Pure code: no I/O. What it must never do: skip a member for a message it does not hold (one of
another epoch, or past its end), or keep skipping once the stream has passed its end.
"""

from __future__ import annotations

from collections.abc import Collection

from .history import position_of

Position = tuple[str, int]
"""(epoch, id) of a stored message."""

_STORED = b'{"id":'


class StreamPositions:
    """Per channel: the newest stored message fanned out here, and the members ahead of it."""

    __slots__ = ("_ahead", "last")

    def __init__(self) -> None:
        self.last: dict[str, Position] = {}
        """Channel -> (epoch, id) of the newest stored message this node fanned out."""
        self._ahead: dict[str, dict[str, Position]] = {}
        """Channel -> client id -> the position a member holds everything up to, for members
        whose position the stream has not reached yet (usually none)."""

    def hold(self, channel: str, client_id: str, end: Position | None) -> None:
        """The member holds every stored message of ``end``'s epoch up to ``end`` (None: it
        holds nothing the stream could repeat, as after a join without replay)."""
        self.forget(channel, client_id)
        if end is None or not end[0] or end[1] <= 0:
            return
        last = self.last.get(channel)
        if last is not None and last[0] == end[0] and last[1] >= end[1]:
            return  # the stream is there already: all it fans out from now on comes after end
        self._ahead.setdefault(channel, {})[client_id] = end

    def forget(self, channel: str, client_id: str) -> None:
        """The member left, or is about to be replayed again (its new end comes later)."""
        ahead = self._ahead.get(channel)
        if ahead is not None and ahead.pop(client_id, None) is not None and not ahead:
            del self._ahead[channel]

    def drop(self, channel: str) -> None:
        """The channel has no member here any more: its stream starts afresh at the next join."""
        self.last.pop(channel, None)
        self._ahead.pop(channel, None)

    def fanned_out(self, channel: str, body: bytes, exclude: str = "") -> Collection[str]:
        """Note that the node fans ``body`` out on ``channel``; return the members who must not
        get it: ``exclude`` (if any), and those who hold it already."""
        skip: Collection[str] = (exclude,) if exclude else ()
        if not body.startswith(_STORED):
            return skip
        position = position_of(body)
        if position is None:
            return skip
        last = self.last.get(channel)
        if last is None or last[0] != position[0] or position[1] > last[1]:
            # Only forward within an epoch: a message overtaken by a newer one (on NATS each
            # node sends its stored messages live on its own) must not move a refill back.
            self.last[channel] = position
        ahead = self._ahead.get(channel)
        if ahead is None:
            return skip
        epoch, offset = position
        holders = {c for c, end in ahead.items() if end[0] == epoch and end[1] >= offset}
        if len(holders) < len(ahead):
            # The stream has passed the others' ends (or left their epoch): everything it
            # fans out from now on is new to them.
            self._ahead[channel] = ahead = {c: ahead[c] for c in holders}
            if not ahead:
                del self._ahead[channel]
        if not holders:
            return skip
        return holders.union(skip)
