"""What the Centrifugo protocol's state machine asks its driver to do.

Each action that needs the node (a join, a publish, a read) carries the ``id`` of the command
it answers, so the driver hands the node's answer back to the machine with it and the reply
goes out with the right id, whatever finished first. ``Send``, ``Close``, ``Leave`` and
``Tally`` are the feed protocol's own (``session_state``). Pure data: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from .session_state import Close, Leave, Send, Tally

__all__ = [
    "Action",
    "Authenticate",
    "CallRpc",
    "Close",
    "Deliver",
    "FinishConnect",
    "JoinChannel",
    "Leave",
    "PublishTo",
    "ReadHistory",
    "ReadPresence",
    "Send",
    "Tally",
]


@dataclass(frozen=True, slots=True)
class Authenticate:
    """Verify a connection token (``connect``, or ``refresh`` when ``refresh``)."""

    id: int
    token: str
    refresh: bool = False
    data: object = None
    """What the client sent with its ``connect`` (for the connect hook)."""


@dataclass(frozen=True, slots=True)
class JoinChannel:
    """Join ``channel``; the subscribe reply (or, ``server_side``, the connect reply's entry)
    is built from the position once the join holds."""

    id: int
    channel: str
    since: int | None = None
    epoch: str | None = None
    join_leave: bool = False
    """Push join/leave of others to this subscriber."""
    server_side: bool = False
    data: object = None
    """The subscribe command's ``data``, for the subscribe hook; for a server-side join after
    connect (the server API's subscribe), what its ``subscribe`` push carries."""


@dataclass(frozen=True, slots=True)
class FinishConnect:
    """Every server-side subscription is joined: send the connect reply, then let their live
    messages through."""

    id: int


@dataclass(frozen=True, slots=True)
class PublishTo:
    id: int
    channel: str
    body: bytes
    """The message as it travels through the broker (a feed ``chat``)."""
    user_key: str


@dataclass(frozen=True, slots=True)
class ReadPresence:
    id: int
    channel: str
    stats: bool
    """``presence_stats``: counts only."""


@dataclass(frozen=True, slots=True)
class ReadHistory:
    """Read up to ``limit`` stored messages (the channel's whole history at most) after
    ``since``, or the newest when None."""

    id: int
    channel: str
    since: int | None
    epoch: str | None
    limit: int
    reverse: bool
    request_limit: int
    """What the client asked: 0 only the position, -1 everything kept."""
    before: int | None = None
    """With ``reverse`` and a position: only what came before that offset."""


@dataclass(frozen=True, slots=True)
class CallRpc:
    id: int
    method: str
    data: object


@dataclass(frozen=True, slots=True)
class Deliver:
    """A ``send``: hand ``data`` to the application's message handler; no reply."""

    data: object


Action = (
    Send
    | Close
    | Leave
    | Tally
    | Authenticate
    | JoinChannel
    | FinishConnect
    | PublishTo
    | ReadPresence
    | ReadHistory
    | CallRpc
    | Deliver
)
