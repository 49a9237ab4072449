"""A Server-Sent Events stream as the session sees it: a :class:`~.connection.Connection`.

The session writes framed events through its bounded ``Outbound``, which calls
``transport.write`` without awaiting (the fan-out never waits for a client). Once the HTTP
handler has sent the response head with ``Transfer-Encoding: chunked``, :class:`ChunkedTransport`
turns each such write into one HTTP/1.1 chunk on the connection's TCP transport, and reports
that transport's buffer, so a client that stops reading is cut off like a WebSocket one.

:class:`EventStream` is the rest of the connection: the client sends nothing, so there is no
reading; keepalive is a comment line when nothing else was written since the last sweep; a close
is a final ``{"type":"close",...}`` event, after which the handler ends the response (the
terminal chunk). If the client does not take the end within ``close_timeout`` (a slow consumer
whose buffer is full), the TCP connection is dropped.

This module knows HTTP chunks, not Sanic: the handler in ``extension.py`` drives it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from .connection import Listener
from .sse import KEEPALIVE, StreamCursor, close_event

log = logging.getLogger(__name__)

OPEN, CLOSING, CLOSED = 0, 1, 2


class RawTransport(Protocol):
    """What a stream uses of the connection's TCP transport (asyncio's or uvloop's)."""

    def write(self, data: bytes) -> None: ...

    def get_write_buffer_size(self) -> int: ...

    def is_closing(self) -> bool: ...

    def abort(self) -> None: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


class ChunkedTransport(asyncio.WriteTransport):
    """Each ``write`` becomes one HTTP/1.1 chunk on ``raw``; nothing is written once ended.

    ``cursor``: on streams of several channels, rewrites the events' ids as they leave (see
    :class:`~.sse.StreamCursor`).
    """

    def __init__(self, raw: RawTransport, cursor: StreamCursor | None = None) -> None:
        super().__init__()
        self._raw = raw
        self._cursor = cursor
        self.ended = False
        """The stream is over (its close event is written): later writes are refused."""
        self.wrote = False
        """Something was written since the keepalive sweep last looked."""

    def write(self, data: bytes | bytearray | memoryview[Any]) -> None:
        if self.ended:
            raise RuntimeError("the event stream has ended")
        if not data:
            return
        chunk = bytes(data)
        if self._cursor is not None:
            chunk = self._cursor.restamp(chunk)
        self.wrote = True
        self._raw.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size()

    def is_closing(self) -> bool:
        return self.ended or self._raw.is_closing()

    def close(self) -> None:
        self.ended = True

    def abort(self) -> None:
        self.ended = True
        self._raw.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._raw.get_extra_info(name, default)


class EventStream:
    """The session's connection for one ``text/event-stream`` response."""

    __slots__ = (
        "_done",
        "_farewell",
        "_keepalive",
        "_listener",
        "_timer",
        "close_code",
        "close_timeout",
        "state",
        "transport",
    )

    def __init__(
        self,
        raw: RawTransport,
        *,
        close_timeout: float,
        cursor: StreamCursor | None = None,
        farewell: Callable[[int, str], bytes] = close_event,
        keepalive: bytes = KEEPALIVE,
    ) -> None:
        """``farewell``: the last bytes of a stream closed with a code and reason (``b""``:
        none); ``keepalive``: what an idle stream gets at each sweep (``b""``: nothing). The
        defaults are ``/sse/``'s; Centrifugo's emulation transports say a close their way."""
        self.transport = ChunkedTransport(raw, cursor)
        self._farewell = farewell
        self._keepalive = keepalive
        self.close_timeout = close_timeout
        self.close_code: int | None = None
        self.state = OPEN
        self._listener: Listener | None = None
        self._done = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def close_received(self) -> int | None:
        """A client of an event stream sends nothing, a close code least of all."""
        return None

    def attach(self, listener: Listener) -> None:
        self._listener = listener
        if self.state == CLOSED:
            listener.connection_lost()

    def close(self, code: int, reason: str) -> None:
        """Write the close event and let the handler end the response."""
        if self.state != OPEN:
            return
        self.state = CLOSING
        self.close_code = code
        transport = self.transport
        if not transport.is_closing():
            transport.write(self._farewell(code, reason))
        transport.close()
        self._done.set()
        self._timer = asyncio.get_running_loop().call_later(self.close_timeout, self._abort)

    def pause_reading(self) -> None:
        """The client sends nothing after its request: there is nothing to pause."""

    def resume_reading(self) -> None:
        """As for :meth:`pause_reading`."""

    def keepalive(self, now: float, timeout: float) -> None:
        """A comment line to a stream nothing was written to since the previous sweep."""
        transport = self.transport
        if self.state != OPEN or transport.is_closing():
            return
        if not transport.wrote:
            transport.write(self._keepalive)
        transport.wrote = False

    async def serve(self) -> None:
        """Until the stream is closed (by the session, or by :meth:`finished`)."""
        await self._done.wait()

    def finished(self) -> None:
        """The response is over, or the client went away: tell the session, once."""
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self.transport.ended = True
        self._done.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._listener is not None:
            self._listener.connection_lost()

    def _abort(self) -> None:
        """The client did not take the end of the stream in time."""
        self._timer = None
        if self.state != CLOSED:
            log.info("dropping an event stream that did not take its end in time")
            self.transport.abort()
