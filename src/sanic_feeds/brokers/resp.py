"""One Redis connection as an asyncio protocol, its replies parsed by hiredis.

This is the broker's hot path to Redis: every stored publish and every pub/sub message crosses
it. redis-py is what the rest of the package uses for Redis, but its per-command machinery (a
pooled connection, an awaited read and a response callback per reply) costs 7-9 us per command
even pipelined and about 9 us per pub/sub message on this kind of machine; a protocol that feeds
hiredis from ``data_received`` and hands each reply to a callback costs about 1 us, with no task
and no await per message. URL parsing is still redis-py's, so every URL it takes works here.

What this module must never do: retry a command (a blind retry can store a message twice),
buffer without bound (callers hold the in-flight budget), or call back into user code other
than the two callbacks it was given.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from redis.asyncio.connection import parse_url

from ..tls_settings import client_context

log = logging.getLogger(__name__)

Arg = bytes | str | int
Reply = Any
"""A decoded reply as hiredis gives it: bytes, int, None, a list of these, or a
:class:`ReplyError`."""


Push = hiredis.PushNotification
"""A RESP3 push (``>``): a list, told apart from a reply by its type."""


REDIS_NEEDED = (6, 2)
"""The oldest Redis the broker runs on: RESP3 (``HELLO 3``, 6.0) and ``XADD NOMKSTREAM`` (6.2)."""


class ReplyError(Exception):
    """An error reply from Redis (``-ERR ...``, ``-NOSCRIPT ...``), returned, never raised."""

    @property
    def code(self) -> str:
        """The error's first word, e.g. ``NOSCRIPT`` or ``ERR``."""
        return str(self).partition(" ")[0]


def bulk(data: bytes) -> bytes:
    """One bulk string in RESP: a command's argument, for callers that encode a command in
    parts (the parts it always has alike, once)."""
    return b"$%d\r\n%b\r\n" % (len(data), data)


def encode(*args: Arg) -> bytes:
    """One command in RESP: ``encode(b"PUBLISH", b"ch", b"hi")``."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect, read once from a ``redis://``, ``rediss://`` or ``unix://`` URL."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    connect_timeout: float = 3.0

    @classmethod
    def from_url(cls, url: str, connect_timeout: float = 3.0) -> Endpoint:
        options = parse_url(url)

        def text(name: str) -> str | None:
            value = options.get(name)
            return None if value is None else str(value)

        tls = client_context(options) if url.startswith("rediss:") else None
        return cls(
            host=str(options.get("host", "127.0.0.1")),
            port=int(options.get("port", 6379)),
            path=text("path"),
            db=int(options.get("db", 0) or 0),
            username=text("username"),
            password=text("password"),
            tls=tls,
            connect_timeout=connect_timeout,
        )


class RespConnection(asyncio.Protocol):
    """A connected socket that turns bytes into replies, in order, for one callback.

    ``on_reply`` gets every reply, and on a RESP3 connection every pushed message (a
    :class:`Push`: pub/sub messages and subscription confirmations) in its place in the stream;
    ``on_lost`` is called once when the connection ends, whoever ended it.
    """

    def __init__(self, on_reply: Callable[[Reply], None], on_lost: Callable[[str], None]) -> None:
        self._reader = hiredis.Reader(replyError=ReplyError)
        self.on_reply = on_reply
        self._on_lost = on_lost
        self._transport: asyncio.Transport | None = None
        self.closed = False
        self.lost_reason = ""
        self._aborting = False

    @property
    def usable(self) -> bool:
        """Open, and not being dropped: writing now reaches Redis."""
        return not self.closed and not self._aborting

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # a stream socket's transport

    def hand_over(self, on_reply: Callable[[Reply], None], on_lost: Callable[[str], None]) -> None:
        """Give the connection to its owner after the handshake."""
        self.on_reply = on_reply
        self._on_lost = on_lost
        if self.closed:  # lost between the last handshake reply and now: tell the new owner
            on_lost(self.lost_reason)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        try:
            while (reply := reader.gets()) is not False:
                self.on_reply(reply)
        except hiredis.ProtocolError as exc:
            log.warning("Redis sent bytes that are not RESP (%s); dropping the connection", exc)
            self.abort("protocol error")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.lost_reason = self.lost_reason or (repr(exc) if exc else "closed by the server")
        self._on_lost(self.lost_reason)

    def write(self, data: bytes) -> None:
        if self._transport is not None and self.usable:
            self._transport.write(data)

    def abort(self, reason: str) -> None:
        """Drop the socket now; ``on_lost`` follows (from the event loop)."""
        self.lost_reason = self.lost_reason or reason
        self._aborting = True
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class _Handshake:
    """Collects the replies to the commands sent before the connection is handed over."""

    def __init__(self, count: int) -> None:
        self.replies: list[Reply] = []
        self.count = count
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def take(self, reply: Reply) -> None:
        self.replies.append(reply)
        if len(self.replies) == self.count and not self.done.done():
            self.done.set_result(None)

    def lost(self, reason: str) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(reason))


async def open_connection(
    endpoint: Endpoint,
    on_reply: Callable[[Reply], None],
    on_lost: Callable[[str], None],
    *,
    name: str = "",
    select_db: bool = True,
    resp3: bool = False,
) -> RespConnection:
    """Connect, authenticate and select the database; then hand replies to ``on_reply``.

    ``resp3``: switch the connection to RESP3 (``HELLO 3``, Redis 6 or later), on which one
    connection can both subscribe and run commands.

    Raises ``OSError`` (refused, unreachable, timed out) or ``ConnectionError`` with Redis's
    own message when it refuses the credentials (or, before Redis 6, ``HELLO``).
    """
    commands: list[bytes] = []
    if endpoint.password is not None:
        if endpoint.username:
            commands.append(encode(b"AUTH", endpoint.username, endpoint.password))
        else:
            commands.append(encode(b"AUTH", endpoint.password))
    if resp3:  # after AUTH: a server that requires a password answers HELLO NOAUTH before it
        commands.append(encode(b"HELLO", 3))
    if select_db and endpoint.db:
        commands.append(encode(b"SELECT", endpoint.db))
    if name:
        commands.append(encode(b"CLIENT", b"SETNAME", name))
    commands.append(encode(b"PING"))
    handshake = _Handshake(len(commands))
    loop = asyncio.get_running_loop()

    def build() -> RespConnection:
        return RespConnection(handshake.take, handshake.lost)

    async with asyncio.timeout(endpoint.connect_timeout):
        if endpoint.path is not None:
            _, conn = await loop.create_unix_connection(build, endpoint.path)
        else:
            _, conn = await loop.create_connection(
                build, endpoint.host, endpoint.port, ssl=endpoint.tls
            )
        try:
            conn.write(b"".join(commands))
            await handshake.done
        except BaseException:
            conn.abort("handshake failed")
            raise
    for reply in handshake.replies:
        problem = too_old(reply) if resp3 else None
        if problem is None and isinstance(reply, ReplyError):
            problem = f"Redis refused the connection: {reply}"
        if problem is not None:
            conn.abort("refused")
            raise ConnectionError(problem)
    conn.hand_over(on_reply, on_lost)
    return conn


def too_old(reply: Reply) -> str | None:
    """Why the Redis that gave this handshake reply is too old for the broker, or None (also for
    a reply that is not the answer to ``HELLO``)."""
    needed = ".".join(map(str, REDIS_NEEDED))
    if isinstance(reply, ReplyError) and "unknown command" in str(reply).lower():
        return f"this Redis predates 6.0 (no HELLO, no RESP3); sanic-feeds needs Redis {needed}"
    if not isinstance(reply, dict):
        return None
    text = reply.get(b"version", b"")
    version = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    numbers = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if numbers and numbers < REDIS_NEEDED:
        return f"Redis {version} is too old: sanic-feeds needs Redis {needed} or later"
    return None
