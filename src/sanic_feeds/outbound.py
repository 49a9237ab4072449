"""Per-connection outbound buffers, and the one writer that flushes them.

The fan-out path calls :meth:`Outbound.send` once per member: it appends already-framed bytes to a
list and returns. It never awaits, so a client that stops reading cannot delay anyone else (Sanic's
``ws.send`` would block forever on such a client). Once per event-loop turn the :class:`Flusher`
writes each connection's queued frames to its transport in one ``write`` call.

Every buffer is bounded: queued bytes plus what the transport still holds may not pass
``limit``. A connection that overflows is cut off (see ``on_overflow``) instead of growing without
bound. This module knows transports, not WebSockets or channels.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

URGENT_BYTES = 64 * 1024
"""Queued bytes on one connection that end the gathering interval early."""

BUSY_INTERVALS = 5
"""A flush this many intervals after the previous one or sooner counts as "busy"."""

SLICE_SECONDS = 0.001
"""Longest stretch one flush pass writes before letting the event loop run."""

SLICE_CHECK = 32
"""Writes between two looks at the clock during a pass."""

GATHERED = 1.25
"""Frames per write at or above which waiting for the interval is worth its latency."""

PROBE_EVERY = 32
"""Busy passes written without waiting before waiting is tried again."""


class Flusher:
    """Collects connections with queued frames and flushes them all, at most every ``interval``.

    A quiet server flushes on the next loop turn. A busy one (it flushed less than
    ``BUSY_INTERVALS`` intervals ago) waits one ``interval`` first, so the messages of that
    millisecond reach each connection in one write: far fewer system calls per delivery, for at
    most ``interval`` of added latency (measured in docs/benchmarks.md).

    A pass over many connections (a channel with thousands of members) is written in slices of
    about ``SLICE_SECONDS``, with the event loop running in between. Messages that arrive
    meanwhile join the frames of the connections the pass has not reached yet, so they share
    that connection's write; connections already written wait for the next pass. Besides
    gathering where one pass takes longer than the interval, this keeps reads, pings and other
    channels' fan-outs going during a long pass.

    Waiting only pays where messages meet connections: many messages to the same members. Where
    a busy server's messages go to different members each (many small channels), a waited pass
    still writes about one frame per connection, and the wait is pure latency. So a waited pass
    that gathered fewer than ``GATHERED`` frames per write turns waiting off; passes then run on
    the next loop turn, and waiting is turned back on when frames pile up on their own or, as a
    probe, every ``PROBE_EVERY`` busy passes.
    """

    __slots__ = (
        "_at",
        "_dirty",
        "_frames_at_start",
        "_interval",
        "_last",
        "_loop",
        "_pass",
        "_scheduled",
        "_skipped",
        "_timer",
        "_waited",
        "_writes_at_start",
        "bytes_sent",
        "frames",
        "waiting",
        "writes",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float = 0.0) -> None:
        self._loop = loop
        self._interval = interval
        self._last = 0.0
        self._dirty: list[Outbound] = []
        """Connections with frames queued for the next pass."""
        self._pass: list[Outbound] = []
        """The pass being written; ``_at`` is the next one to write."""
        self._at = 0
        self._scheduled = False
        """A pass is under way or scheduled: a mark only needs to join ``_dirty``."""
        self._timer: asyncio.TimerHandle | None = None
        self.bytes_sent = 0
        """Bytes handed to transports by the flusher (for metrics)."""
        self.writes = 0
        self.frames = 0
        """Frames written (counted by ``Outbound.flush``)."""
        self.waiting = True
        """Whether busy passes wait for the interval (see the class docstring)."""
        self._waited = False
        self._skipped = 0
        self._frames_at_start = 0
        self._writes_at_start = 0

    def mark(self, outbound: Outbound) -> None:
        self._dirty.append(outbound)
        if not self._scheduled:
            self._scheduled = True
            self._schedule()

    def urgent(self) -> None:
        """A connection has a lot queued: flush on the next loop turn instead of gathering."""
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None
            self._loop.call_soon(self._run)

    def _schedule(self) -> None:
        busy = self._interval and self._loop.time() - self._last < BUSY_INTERVALS * self._interval
        if busy and not self.waiting:
            self._skipped += 1
            if self._skipped >= PROBE_EVERY:
                self.waiting = True  # try again: the traffic may have changed
        # Busy (flushed within the last few intervals): gather for one interval.
        self._waited = bool(busy and self.waiting)
        if self._waited:
            self._timer = self._loop.call_later(self._interval, self._run)
        else:
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        self._timer = None
        if self._at >= len(self._pass):
            self._pass, self._dirty = self._dirty, []
            self._at = 0
            self._frames_at_start = self.frames
            self._writes_at_start = self.writes
        loop = self._loop
        work = self._pass
        deadline = loop.time() + SLICE_SECONDS
        at = self._at
        end = len(work)
        sent = 0
        while at < end:
            outbound = work[at]
            at += 1
            try:
                sent += outbound.flush()
            except Exception:  # one broken transport must not stop the others' flush
                log.exception("flushing a connection failed; dropping it")
                outbound.abort()
            if not at % SLICE_CHECK and at < end and loop.time() > deadline:
                break
        self.bytes_sent += sent
        self.writes += at - self._at
        self._at = at
        if at < end:
            loop.call_soon(self._run)  # the rest of this pass, after the loop has run
            return
        self._pass = []
        self._at = 0
        if self._interval:
            self._last = loop.time()
            self._judge()
        if self._dirty:
            self._schedule()
        else:
            self._scheduled = False

    def _judge(self) -> None:
        """After a pass: was waiting worth it, or would it be?"""
        writes = self.writes - self._writes_at_start
        if not writes:
            return
        gathered = (self.frames - self._frames_at_start) / writes >= GATHERED
        if self._waited and not gathered:
            self.waiting = False
            self._skipped = 0
        elif not self._waited and gathered:
            self.waiting = True


class Outbound:
    """The bounded outbound queue of one connection.

    ``limit`` bounds the bytes queued here plus the bytes the transport has not yet sent (as
    measured at the last flush, so ``send`` stays a few additions). When a ``send`` or a flush
    would pass it, the queue is dropped, ``closed`` becomes True and
    ``on_overflow`` is called once; later sends are ignored.
    """

    __slots__ = (
        "_backlog",
        "_flusher",
        "_on_overflow",
        "_pending",
        "_pending_bytes",
        "_transport",
        "closed",
        "frames_sent",
        "high_water",
        "limit",
    )

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        flusher: Flusher,
        limit: int,
        on_overflow: Callable[[], None],
    ) -> None:
        self._transport = transport
        self._flusher = flusher
        self._on_overflow = on_overflow
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._backlog = 0
        """What the transport still held after the last flush: counted by ``send`` too."""
        self.limit = limit
        self.closed = False
        self.high_water = 0
        """Most bytes ever buffered for this connection (queued + in the transport)."""
        self.frames_sent = 0

    def send(self, frame: bytes) -> None:
        """Queue one frame. Never blocks; a no-op once the connection is closed."""
        if self.closed:
            return
        self._pending.append(frame)
        self._pending_bytes += len(frame)
        # One message may always be in flight, however large: a single big publish must not cut
        # off every member. What overflows is a backlog on top of it.
        if self._pending_bytes + self._backlog > self.limit and (
            self._backlog or len(self._pending) > 1
        ):
            self._overflow()
        elif len(self._pending) == 1:
            self._flusher.mark(self)
        elif self._pending_bytes > URGENT_BYTES:
            self._flusher.urgent()  # gathering more would only push it towards the limit

    def flush(self) -> int:
        """Write everything queued in one transport write (by the flusher, or before a close).

        Returns the number of bytes written.
        """
        pending = self._pending
        if not pending:
            return 0
        if self.closed or self._transport.is_closing():
            self._drop()
            self.closed = True
            return 0
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        backlog = self._transport.get_write_buffer_size()
        buffered = backlog + len(data)
        if buffered > self.limit and (backlog or len(pending) > 1):
            self._overflow()
            return 0
        self.frames_sent += len(pending)
        self._flusher.frames += len(pending)
        self._drop()
        try:
            self._transport.write(data)
        except RuntimeError:
            # The close handshake finished and the transport sent EOF: the peer is gone, and
            # what was queued for it has nowhere to go.
            self.closed = True
            return 0
        self._backlog = self._transport.get_write_buffer_size()
        if buffered > self.high_water:
            self.high_water = buffered
        return len(data)

    def buffered(self) -> int:
        """Bytes queued here plus bytes the transport still holds."""
        return self._pending_bytes + self._transport.get_write_buffer_size()

    def close(self) -> None:
        """Stop queuing: the connection is going away. Already-written bytes are unaffected."""
        self.closed = True
        self._drop()

    def abort(self) -> None:
        """Drop everything and the TCP connection itself, at once."""
        self.closed = True
        self._drop()
        self._transport.abort()

    def _drop(self) -> None:
        self._pending.clear()
        self._pending_bytes = 0

    def _overflow(self) -> None:
        self.closed = True
        self._drop()
        self._on_overflow()
