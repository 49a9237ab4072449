"""Server-Sent Events: the wire of ``/sse/`` streams, their event ids and ``Last-Event-ID``.

A stream carries the same server messages as a WebSocket, one per event, each as the
``data`` line of an unnamed event (EventSource's ``onmessage`` sees every one; the JSON
``type`` says what it is). Stored messages (``chat``, ``data``) get an ``id`` naming their
position, so that a client that reconnects (EventSource does so by itself, sending the last
id it saw as ``Last-Event-ID``) gets exactly what it missed:

- a stream of one channel: ``id: <epoch>:<offset>``, framed once per message for every
  member (:data:`SSE`);
- a stream of several channels: ``id: <channel>=<epoch>:<offset>,<channel>=...``, the position
  in *every* channel of the stream that the client holds (:class:`StreamCursor` writes it as
  the events leave, since it differs per stream).

Other messages carry no id (but ``recovered``, which names the position its replay ended at),
so the last id a client holds is always the last stored position it received. Orjson never
writes a raw newline, so a body is always one ``data`` line and an event always ends at the
first blank line.

Pure code: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from .channels import is_valid_channel
from .errors import FeedsError
from .history import position_of

__all__ = [
    "KEEPALIVE",
    "SSE",
    "BadEventId",
    "Position",
    "ServerSentEvents",
    "StreamCursor",
    "close_event",
    "parse_last_event_id",
    "retry_event",
]

KEEPALIVE = b": keepalive\n\n"
"""A comment line: keeps proxies from timing the stream out; EventSource ignores it."""

_DATA = b"data: "
_ID = b"id: "
_END = b"\n\n"
_RECOVERED = b'{"type":"recovered",'


class ServerSentEvents:
    """One ``text/event-stream`` event per message (the HTML standard's format)."""

    name = "sse"

    def frame(self, body: bytes) -> bytes:
        if body.startswith(b'{"id":'):
            position = position_of(body)
            if position is not None:
                epoch, offset = position
                return b"id: %s:%d\ndata: %s\n\n" % (epoch.encode(), offset, body)
        elif body.startswith(_RECOVERED):
            # The position a replay ends at: a client that reconnects before the next stored
            # message resumes from there (rare: one per recovery).
            report = orjson.loads(body)
            if report.get("epoch"):
                return b"id: %s:%d\ndata: %s\n\n" % (
                    str(report["epoch"]).encode(),
                    int(report["offset"]),
                    body,
                )
        return b"data: " + body + _END

    def body_of(self, frame: bytes) -> bytes:
        start = frame.find(_DATA)
        return frame[start + len(_DATA) : -len(_END)]


SSE = ServerSentEvents()
"""The wire of ``/sse/`` streams."""


def close_event(code: int, reason: str) -> bytes:
    """The last event of a stream: ``{"type":"close","code":..,"reason":..}``.

    The codes are those of WebSocket closes (docs/protocol.md): 1001 the server is going away,
    4001 slow consumer, and so on.
    """
    return b"data: " + orjson.dumps({"type": "close", "code": code, "reason": reason}) + _END


def retry_event(milliseconds: int) -> bytes:
    """Sets how long EventSource waits before it reconnects by itself."""
    return b"retry: %d\n\n" % milliseconds


@dataclass(frozen=True)
class Position:
    """Where a client stands in one channel's history."""

    epoch: str
    offset: int


class BadEventId(FeedsError):
    """A ``Last-Event-ID`` that this server never wrote."""


def parse_last_event_id(text: str, channels: Sequence[str]) -> dict[str, Position]:
    """The positions a ``Last-Event-ID`` names, for the channels of a stream.

    ``<epoch>:<offset>`` names the first channel; ``<channel>=<epoch>:<offset>,...`` names each
    channel (entries for channels not in the stream are ignored). Empty text names nothing.
    Raises :class:`BadEventId` for anything else.
    """
    text = text.strip()
    if not text:
        return {}
    if "=" not in text:
        if not channels:
            return {}
        return {channels[0]: _position(text)}
    positions: dict[str, Position] = {}
    for entry in text.split(","):
        channel, _, rest = entry.partition("=")
        if not is_valid_channel(channel):
            raise BadEventId("Last-Event-ID names an invalid channel")
        if channel in channels:
            positions[channel] = _position(rest)
    return positions


def _position(text: str) -> Position:
    epoch, sep, offset = text.rpartition(":")
    if (
        not sep
        or not (0 < len(epoch) <= 64)
        or not epoch.isascii()
        or not epoch.isalnum()
        or not (offset.isascii() and offset.isdigit() and len(offset) <= 18)
    ):
        raise BadEventId("Last-Event-ID must be <epoch>:<offset> as this server sent it")
    return Position(epoch, int(offset))


def _channel_of(body: bytes) -> str | None:
    """The ``channel`` of a stored chat or data body (its first ``"channel"`` key: the
    encoders write it before any client-supplied value)."""
    start = body.find(b',"channel":"')
    if start < 0:
        return None
    start += 12
    end = body.find(b'"', start)
    return body[start:end].decode("ascii", "replace") if end > 0 else None


class StreamCursor:
    """The positions a stream of several channels has sent, and its events' ids.

    :meth:`restamp` rewrites the ``id`` of each stored event as it leaves to name the
    position in every channel of the stream, so that whichever event a client saw last, its
    ``Last-Event-ID`` recovers all of them. Costs a scan of each write: only streams of
    several channels use it.
    """

    __slots__ = ("positions",)

    def __init__(self, channels: Sequence[str], start: dict[str, Position]) -> None:
        self.positions: dict[str, Position | None] = {c: start.get(c) for c in channels}
        """Per channel, in the stream's order, the last stored position sent (None: none)."""

    def restamp(self, data: bytes) -> bytes:
        """``data`` (whole events) with the id of each stored event naming every channel."""
        if _ID not in data:
            return data
        events = data.split(_END)
        for index, event in enumerate(events):
            if not event.startswith(_ID):
                continue
            line = event.find(b"\n")
            epoch, _, offset = event[len(_ID) : line].rpartition(b":")
            channel = _channel_of(event[line + 1 + len(_DATA) :])
            if channel is None or channel not in self.positions:
                continue
            self.positions[channel] = Position(epoch.decode("ascii"), int(offset))
            events[index] = _ID + self.event_id().encode("ascii") + event[line:]
        return _END.join(events)

    def event_id(self) -> str:
        """``<channel>=<epoch>:<offset>,...`` for every channel with a position."""
        return ",".join(
            f"{channel}={p.epoch}:{p.offset}"
            for channel, p in self.positions.items()
            if p is not None
        )
