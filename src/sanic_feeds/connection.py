"""WebSocket connections as the session sees them, and the lean protocol behind /feed/ sockets.

A :class:`~sanic_feeds.session.Session` needs little from its socket: the transport to write
pre-framed bytes to, whole incoming messages, a way to close with a code, flow control for
reading, and word when the connection is gone. :class:`Connection` is that interface; there are
two implementations:

- :class:`FeedSocket`, an ``asyncio.Protocol`` that takes the TCP transport over once the
  handshake is done (``FeedsWebSocketProtocol`` does the switch). It has no task, no queue and
  no timer of its own while the connection is idle: it decodes frames in ``data_received`` and
  hands whole messages to the session. Pings for idle connections come from one node-wide sweep
  (:meth:`FeedSocket.keepalive`). This is what keeps an idle connection at a few KiB and a
  connect cheap (docs/benchmarks.md).
- :class:`~sanic_feeds.websocket_protocol.SanicSocket`, an adapter over Sanic's own WebSocket
  implementation, for apps that run Sanic's default protocol class: a task reads messages and
  passes them on. It lives with the rest of what touches Sanic's internals; this module knows
  nothing of Sanic.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from .frames import Control, FrameReader, Opcode, close_frame, control_frame

log = logging.getLogger(__name__)


class Listener(Protocol):
    """What a connection reports to (the session)."""

    def receive(self, message: str | bytes) -> None:
        """One whole client message, in order."""

    def connection_lost(self) -> None:
        """The connection is gone; called once."""


class Connection(Protocol):
    """What a session uses of its socket."""

    @property
    def transport(self) -> asyncio.WriteTransport: ...

    @property
    def close_received(self) -> int | None:
        """The close code the client sent, if it sent one (for the logs)."""

    def attach(self, listener: Listener) -> None:
        """Start passing messages (and the end of the connection) to ``listener``."""

    def close(self, code: int, reason: str) -> None:
        """Send a close frame now; drop the TCP connection if the client does not answer."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def keepalive(self, now: float, timeout: float) -> None:
        """Called by the node's keepalive sweep, every ping interval."""

    async def serve(self) -> None:
        """Run whatever the connection needs in the handler's task until it ends."""


OPEN, CLOSING, CLOSED = 0, 1, 2

HOLD_LIMIT = 32
"""Messages held before the session is attached; past it the socket stops reading until then."""


class FeedSocket(asyncio.Protocol):
    """A server-side WebSocket connection on its own transport, driven by callbacks."""

    __slots__ = (
        "_close_timeout",
        "_held",
        "_held_paused",
        "_listener",
        "_pinged_at",
        "_reader",
        "_seen",
        "_timer",
        "close_received",
        "state",
        "transport",
    )

    def __init__(
        self, transport: asyncio.Transport, *, max_size: int, close_timeout: float
    ) -> None:
        self.transport = transport
        self._reader = FrameReader(max_size)
        self._close_timeout = close_timeout
        self._listener: Listener | None = None
        self._held: list[str | bytes] | None = None
        """Messages that arrived before a listener was attached (during auth and join)."""
        self._held_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._seen = True
        """Bytes arrived since the last keepalive sweep."""
        self._pinged_at = 0.0
        self.close_received: int | None = None
        self.state = OPEN

    # -- the session's side ------------------------------------------------------------------------

    def attach(self, listener: Listener) -> None:
        self._listener = listener
        if self._held_paused:
            self._held_paused = False
            self.resume_reading()  # before handing over: the listener may pause it again
        held, self._held = self._held, None
        for message in held or ():
            listener.receive(message)
        if self.state == CLOSED:
            listener.connection_lost()

    def close(self, code: int, reason: str) -> None:
        if self.state != OPEN:
            return
        self.state = CLOSING
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(close_frame(code, reason))
        # Read on (the session may have paused reading) to see the client's close frame.
        transport.resume_reading()
        self._timer = asyncio.get_running_loop().call_later(
            self._close_timeout, self._abort_if_open
        )

    def pause_reading(self) -> None:
        # Once closing, read on whatever the session wants: the client's close frame, or its
        # bytes to discard until it ends its side (see _fail), must not be left unread.
        if self.state == OPEN and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def keepalive(self, now: float, timeout: float) -> None:
        """Ping a connection silent since the last sweep; close one that ignored the ping."""
        if self.state != OPEN:
            return
        if self._seen:
            self._seen = False
            self._pinged_at = 0.0
        elif not self._pinged_at:
            self._pinged_at = now
            self.transport.write(control_frame(Opcode.PING))
        elif now - self._pinged_at >= timeout:
            log.info("closing a connection that did not answer a ping (1011)")
            self.close(1011, "keepalive ping timeout")

    async def serve(self) -> None:
        """Nothing to run: this connection is driven by the transport's callbacks."""

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._seen = True
        if self.state == CLOSED:
            return
        reader = self._reader
        for item in reader.feed(data):
            if isinstance(item, Control):
                self._control(item)
            elif self.state == OPEN:
                listener = self._listener
                if listener is not None:
                    listener.receive(item)
                elif self._held is None:
                    self._held = [item]
                else:
                    self._held.append(item)
                    if len(self._held) >= HOLD_LIMIT and not self._held_paused:
                        self._held_paused = True
                        self.pause_reading()
        failed = reader.failed
        if failed is not None and self.state == OPEN:
            log.info("closing a connection that broke the protocol: %s (%d)", failed, failed.code)
            self._fail(failed.code, failed.reason)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = CLOSED
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        listener = self._listener
        if listener is not None:
            listener.connection_lost()

    # -- internals -----------------------------------------------------------------------------

    def _control(self, frame: Control) -> None:
        if frame.opcode == Opcode.PING:
            if self.state == OPEN:
                self.transport.write(control_frame(Opcode.PONG, frame.payload))
        elif frame.opcode == Opcode.CLOSE:
            self.close_received = frame.code
            if self.state == OPEN:
                # Echo the code (RFC 6455 5.5.1); 1005 means none was given, so none is sent.
                self.state = CLOSING
                payload = b"" if frame.code == 1005 else frame.payload[:2]
                self.transport.write(control_frame(Opcode.CLOSE, payload))
            # Both sides have sent a close frame: the server ends the TCP connection.
            self.transport.close()

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): the close frame, then our half of TCP.

        The client may well have sent more after the bad frame. Closing the socket with those
        bytes unread makes the kernel answer with a TCP reset, and a peer that gets the reset
        before it has read our close frame never sees the close code. So the server only
        half-closes (FIN after the close frame) and reads on, discarding everything (the reader
        has failed), until the client ends its side or ``close_timeout`` passes.
        """
        self.close(code, reason)
        transport = self.transport
        if transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
        else:  # pragma: no cover - TCP transports can always half-close
            transport.close()

    def _abort_if_open(self) -> None:
        self._timer = None
        if self.state != CLOSED:
            self.transport.abort()


class Handoff:
    """What the route handler receives for a :class:`FeedSocket` instead of Sanic's WebSocket.

    Sanic closes the WebSocket it passed to a handler once the handler returns; a feed socket
    lives on after its handler, so what Sanic gets to close is this empty shell.
    """

    __slots__ = ("socket",)

    def __init__(self, socket: FeedSocket) -> None:
        self.socket = socket

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """The socket's session closes it; not the handler's end."""

    def end_connection(self, code: int = 1000) -> None:
        """As for :meth:`close`."""
