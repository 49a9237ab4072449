"""Channel history rules shared by every broker: stamping ids, and judging what a reader missed.

Pure code. A stored message is the client-ready JSON object with ``"id"`` (its offset in the
channel, counting from 1) and ``"epoch"`` (which incarnation of the channel's history it belongs
to) put first. The Redis broker does the same stamping inside its Lua script.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Reversible, Sequence
from dataclasses import dataclass, field

from .channels import namespace_of


@dataclass(frozen=True)
class HistoryPolicy:
    """How much of each channel's past the broker keeps."""

    size: int = 1000
    """Most messages kept per channel (approximately, on Redis). 0 turns history off."""
    ttl: float = 600.0
    """Seconds a channel's history is kept after its last stored message."""


@dataclass(frozen=True)
class HistoryRules:
    """The history policy of each channel: its namespace's, else the top-level one.

    Brokers ask it per stored publish and per read. Channels of unknown namespaces never reach
    a broker (they are refused first), so they simply get the top-level policy here.
    """

    default: HistoryPolicy = HistoryPolicy()
    namespaces: Mapping[str, HistoryPolicy] = field(default_factory=dict)

    @classmethod
    def of(cls, given: HistoryPolicy | HistoryRules | None) -> HistoryRules:
        """Rules from a broker's ``history`` argument (one policy for every channel, or rules)."""
        if isinstance(given, HistoryRules):
            return given
        return cls(given or HistoryPolicy())

    def for_channel(self, channel: str) -> HistoryPolicy:
        namespace = namespace_of(channel)
        if namespace is None:
            return self.default
        return self.namespaces.get(namespace, self.default)

    @property
    def widest(self) -> HistoryPolicy:
        """The largest size and the longest ttl of any namespace (for store-wide limits)."""
        policies = [self.default, *self.namespaces.values()]
        return HistoryPolicy(max(p.size for p in policies), max(p.ttl for p in policies))


@dataclass(frozen=True)
class Stored:
    """Where a stored message landed in its channel's history."""

    offset: int
    epoch: str


@dataclass
class HistoryPage:
    """Messages read back from a channel's history, oldest first."""

    messages: list[bytes] = field(default_factory=list)
    """Client-ready JSON texts, each carrying its ``id`` and ``epoch``."""
    offsets: list[int] = field(default_factory=list)
    epoch: str = ""
    """The channel's current epoch ("" when it has no history)."""
    top: int = 0
    """Offset of the channel's latest stored message (0 when none)."""
    complete: bool = True
    """True when ``messages`` hold every message after the requested offset, in this epoch."""


def new_epoch() -> str:
    """A fresh epoch: short, random, safe inside JSON without escaping.

    Drawn from ``random`` (seeded from the OS at start, and again in a forked worker), not
    from ``secrets``: an epoch only has to differ from the channel's earlier ones. (Redis'
    script makes its own, from the nonce of the publish that starts the history.)
    """
    return f"{random.getrandbits(32):08x}"


def stamp(body: bytes, offset: int, epoch: str) -> bytes:
    """``{"type": ...}`` -> ``{"id": offset, "epoch": epoch, "type": ...}``.

    ``body`` must be a non-empty JSON object as the protocol encoders produce it.
    """
    if not body.startswith(b"{") or body == b"{}":
        raise ValueError("a stored message must be a non-empty JSON object")
    return b'{"id":%d,"epoch":"%s",%s' % (offset, epoch.encode(), body[1:])


def is_reset(since: int, wanted_epoch: str | None, epoch: str, top: int) -> bool:
    """Does a reader at ``since`` (of ``wanted_epoch``) belong to a history that was lost?

    True when its epoch is not the channel's, or its offset lies beyond the newest one (the
    history restarted): it then gets the whole current history, marked incomplete.
    """
    return (bool(wanted_epoch) and wanted_epoch != epoch) or since > top


def read_start(since: int | None, wanted_epoch: str | None, epoch: str, top: int) -> int:
    """The offset after which a reader's messages begin (0: from the oldest kept)."""
    if since is None or is_reset(since, wanted_epoch, epoch, top):
        return 0
    return since


def newest_after(
    entries: Reversible[tuple[int, bytes]], start: int, count: int
) -> list[tuple[int, bytes]]:
    """Up to ``count`` entries with an offset above ``start``, newest first.

    Walks from the newest end, so it costs what is returned, not the size of the history.
    """
    chosen: list[tuple[int, bytes]] = []
    if count <= 0:
        return chosen
    for entry in reversed(entries):
        if entry[0] <= start:
            break
        chosen.append(entry)
        if len(chosen) >= count:
            break
    return chosen


def page_from_newest(
    newest_first: Sequence[tuple[int, bytes]],
    *,
    since: int | None,
    wanted_epoch: str | None,
    epoch: str,
    top: int,
    limit: int,
) -> HistoryPage:
    """Judge what a reader gets, from the newest stored messages after its start.

    ``newest_first`` holds, newest first, the newest ``limit + 1`` messages (or all, if fewer)
    after ``read_start(...)``: the one beyond ``limit`` only tells that there were more. Both
    brokers read exactly that much (Redis with ``XREVRANGE ... COUNT``), so recovering costs
    what the reader missed, not the size of the history.
    """
    chosen = list(reversed(newest_first[:limit])) if limit > 0 else []
    if since is None:
        return _page(chosen, epoch, top, complete=True)
    reset = is_reset(since, wanted_epoch, epoch, top)
    start = 0 if reset else since
    # Over the limit, keep the newest: the reader's messages then run without a hole up to the
    # live ones, and ``complete=False`` tells it that older ones are missing.
    cut_short = len(newest_first) > len(chosen)
    reaches_back = start == top or (bool(newest_first) and newest_first[-1][0] == start + 1)
    return _page(chosen, epoch, top, complete=not reset and reaches_back and not cut_short)


def build_page(
    entries: Reversible[tuple[int, bytes]],
    *,
    since: int | None,
    wanted_epoch: str | None,
    epoch: str,
    top: int,
    limit: int,
) -> HistoryPage:
    """Pick what a reader gets from ``entries`` (stored messages, oldest first)."""
    start = read_start(since, wanted_epoch, epoch, top)
    count = limit if since is None else limit + 1
    return page_from_newest(
        newest_after(entries, start, count),
        since=since,
        wanted_epoch=wanted_epoch,
        epoch=epoch,
        top=top,
        limit=limit,
    )


def _page(chosen: list[tuple[int, bytes]], epoch: str, top: int, *, complete: bool) -> HistoryPage:
    return HistoryPage(
        messages=[b for _, b in chosen],
        offsets=[o for o, _ in chosen],
        epoch=epoch,
        top=top,
        complete=complete,
    )


_ID_PREFIX = b'{"id":'
_EPOCH_KEY = b',"epoch":"'


def position_of(body: bytes) -> tuple[str, int] | None:
    """``(epoch, id)`` of a stored message as :func:`stamp` wrote it, else None.

    Reads only the fixed prefix, so it costs next to nothing per message.
    """
    if not body.startswith(_ID_PREFIX):
        return None
    end = body.find(_EPOCH_KEY, 6, 40)
    if end < 0:
        return None
    offset = body[6:end]
    start = end + len(_EPOCH_KEY)
    close = body.find(b'"', start, start + 70)
    if close < 0 or not offset.isdigit():
        return None
    return body[start:close].decode("ascii", "replace"), int(offset)


@dataclass(frozen=True)
class JoinPosition:
    """Where a member stands in a channel's stream once its join holds (``Memberships.join_at``)."""

    history: bool
    """The channel keeps history (so ids, positions and recovery exist)."""
    epoch: str = ""
    offset: int = 0
    """The newest id the member holds everything up to (live messages come after it)."""
    recovering: bool = False
    recovered: bool = False
    """With ``recovering``: ``replayed`` holds every message after the asked position."""
    replayed: list[bytes] = field(default_factory=list)
    """The stored messages missed since the asked position (empty unless ``recovered``)."""
