"""An async Python client for sanic-feeds: for backends, bots, tests and the ``tail`` command.

::

    async with FeedClient("ws://127.0.0.1:8000", "lobby", token="...") as feed:
        await feed.chat("hello")
        async for message in feed:
            if isinstance(message, Chat):
                print(message.user, message.message)

The client reconnects by itself and resumes every channel from the last message id it saw
(``since``/``epoch``), so the iteration has no gaps and no duplicates across reconnects. Given
several server URLs (``FeedClient(["ws://a:8000", "ws://b:8000"], "lobby")``) it moves to the
next one at once when its server goes away (1001) or cannot be reached, and backs off
exponentially, with jitter, only once every server has failed; :class:`ServerRotation` is that
policy, kept free of sockets and clocks. It stops reconnecting on close codes that mean "do not
retry as is" (1000, 1008, 4400) and raises :class:`FeedClosed`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from .errors import FeedsError

log = logging.getLogger(__name__)

FINAL_CLOSE_CODES = frozenset({1000, 1008, 4400})
"""Close codes after which reconnecting with the same settings cannot help."""

MOVE_AT_ONCE_CLOSE_CODES = frozenset({1001, 1006, 1012, 1013})
"""Close codes after which another server is tried without waiting: this one is going away
(1001, 1012), is gone (1006, no close frame) or is full (1013). After the others (1011, 4001,
4429, 4503, ...) even another server is tried only after a backoff."""


# -- messages --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """Any server message; ``raw`` is the decoded JSON object."""

    type: str
    channel: str | None
    raw: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Welcome(Message):
    client: str = ""
    user: str = ""


@dataclass(frozen=True)
class Chat(Message):
    client: str = ""
    user: str = ""
    message: Any = None
    id: int | None = None
    epoch: str | None = None


@dataclass(frozen=True)
class Data(Message):
    data: Any = None
    id: int | None = None
    epoch: str | None = None


@dataclass(frozen=True)
class Notice(Message):
    """``user_joined`` or ``user_left``."""

    client: str = ""
    user: str = ""


@dataclass(frozen=True)
class Error(Message):
    code: str = ""
    message: str = ""
    retry_after: float | None = None


@dataclass(frozen=True)
class Recovered(Message):
    recovered: bool = False
    count: int = 0


@dataclass(frozen=True)
class PresenceList(Message):
    clients: tuple[Mapping[str, Any], ...] = ()


def parse_message(raw: Mapping[str, Any]) -> Message:
    """Turn a decoded server message into its typed object (unknown types stay ``Message``)."""
    kind = str(raw.get("type", ""))
    channel = raw.get("channel")
    base: dict[str, Any] = {"type": kind, "channel": channel, "raw": raw}
    match kind:
        case "system":
            return Welcome(**base, client=raw.get("client", ""), user=raw.get("user", ""))
        case "chat":
            return Chat(
                **base,
                client=raw.get("client", ""),
                user=raw.get("user", ""),
                message=raw.get("message"),
                id=raw.get("id"),
                epoch=raw.get("epoch"),
            )
        case "data":
            return Data(**base, data=raw.get("data"), id=raw.get("id"), epoch=raw.get("epoch"))
        case "user_joined" | "user_left":
            return Notice(**base, client=raw.get("client", ""), user=raw.get("user", ""))
        case "error":
            return Error(
                **base,
                code=raw.get("code", ""),
                message=raw.get("message", ""),
                retry_after=raw.get("retry_after"),
            )
        case "recovered":
            return Recovered(
                **base, recovered=bool(raw.get("recovered")), count=int(raw.get("count", 0))
            )
        case "presence":
            return PresenceList(**base, clients=tuple(raw.get("clients", ())))
        case _:
            return Message(**base)


_OPEN_ERRORS = (OSError, InvalidHandshake, TimeoutError, ConnectionClosed)
"""What a failed connection attempt raises (ConnectionClosed: it ended while re-subscribing)."""


class FeedClosed(FeedsError):
    """The server closed the connection for good (or reconnecting was turned off)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed by the server: {code} {reason}".strip())
        self.code = code
        self.reason = reason


# -- which server next -----------------------------------------------------------------------


class ServerRotation:
    """The reconnect policy over a list of servers: which one to try next, and after how long.

    Each time a connection ends or cannot be opened, :meth:`advance` moves to the next server,
    round the list, and returns how long to wait before trying it: nothing while some server
    has not failed yet since the last working connection and the trouble was one another server
    can fix (the connection could not be opened, or :data:`MOVE_AT_ONCE_CLOSE_CODES`); otherwise
    exponential backoff (``min_backoff`` doubling up to ``max_backoff``) with jitter, counted
    from the first failure beyond one round. With a single server that is plain backoff.
    :meth:`connected` starts a fresh round once a connection works.

    Pure: no sockets and no clock; the caller sleeps. ``jitter(low, high)`` draws the factor
    applied to every backoff (``random.uniform`` between 0.5 and 1.0 by default).
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        min_backoff: float = 0.5,
        max_backoff: float = 15.0,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if isinstance(urls, str):
            urls = [urls]
        if not urls:
            raise ValueError("at least one server URL is needed")
        self.urls: tuple[str, ...] = tuple(url.rstrip("/") for url in urls)
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.index = 0
        """Position in ``urls`` of the server to use (or try) now."""
        self.failures = 0
        """Connections ended or refused in a row since the last working one."""
        self._jitter = jitter

    @property
    def current(self) -> str:
        return self.urls[self.index]

    def connected(self) -> None:
        """The current server works: the next trouble starts a fresh round without waiting."""
        self.failures = 0

    def skip(self) -> None:
        """Move to the next server without counting a failure (the first connect's sweep)."""
        self.index = (self.index + 1) % len(self.urls)

    def advance(self, code: int | None) -> float:
        """The connection to the current server ended with close ``code`` (None: it could not
        be opened). Move to the next server; return the seconds to wait before trying it."""
        self.failures += 1
        self.skip()
        round_left = self.failures < len(self.urls)
        if round_left and (code is None or code in MOVE_AT_ONCE_CLOSE_CODES):
            return 0.0
        exponent = max(0, self.failures - len(self.urls))
        delay = min(self.max_backoff, self.min_backoff * 2.0**exponent)
        return delay * self._jitter(0.5, 1.0)


# -- the client ------------------------------------------------------------------------------


class FeedClient:
    """One connection to ``<url>/feed/<channel>``, kept alive across reconnects.

    ``url`` is a server's base URL, or a sequence of them (instances of one cluster): the
    client starts with the first and moves along the list as :class:`ServerRotation` says.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        channel: str,
        *,
        token: str | None = None,
        user: str | None = None,
        reconnect: bool = True,
        min_backoff: float = 0.5,
        max_backoff: float = 15.0,
        since: int | None = None,
        epoch: str | None = None,
    ) -> None:
        self.servers = ServerRotation(url, min_backoff=min_backoff, max_backoff=max_backoff)
        self.channel = channel
        self.token = token
        self.user = user
        self.reconnect = reconnect
        self.positions: dict[str, tuple[str, int]] = {}
        """Channel -> (epoch, id) of the newest message delivered to you."""
        if since is not None:
            self.positions[channel] = (epoch or "", since)
        self.channels: list[str] = [channel]
        self.reconnects = 0
        self._ws: ClientConnection | None = None
        self._closing = False

    @property
    def url(self) -> str:
        """The base URL of the server in use (or tried next)."""
        return self.servers.current

    @property
    def urls(self) -> tuple[str, ...]:
        return self.servers.urls

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> FeedClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the connection (resuming every followed channel from its position).

        Tries each server once, in order from the current one, and raises the last error
        (``OSError``, ``InvalidHandshake``, ``TimeoutError``) if none could be reached.
        """
        for attempt in range(len(self.urls)):
            try:
                await self._open()
                return
            except _OPEN_ERRORS as exc:
                log.info("cannot connect to %s: %r", self.url, exc)
                if attempt == len(self.urls) - 1:
                    raise
                self.servers.skip()

    async def _open(self) -> None:
        """One attempt on the current server."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        self._ws = await connect(
            self._feed_url(), additional_headers=headers, max_queue=None, open_timeout=10
        )
        for channel in self.channels[1:]:
            await self._send(self._subscribe_frame(channel))

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()

    # -- sending -----------------------------------------------------------------------------

    async def chat(self, message: Any, channel: str | None = None) -> None:
        frame: dict[str, Any] = {"type": "chat", "message": message}
        if channel is not None:
            frame["channel"] = channel
        await self._send(frame)

    async def subscribe(self, channel: str) -> None:
        if channel not in self.channels:
            self.channels.append(channel)
        await self._send(self._subscribe_frame(channel))

    async def unsubscribe(self, channel: str) -> None:
        if channel in self.channels[1:]:
            self.channels.remove(channel)
        await self._send({"type": "unsubscribe", "channel": channel})

    async def request_presence(self, channel: str | None = None) -> None:
        """Ask who is in a channel; the answer arrives as a :class:`PresenceList`."""
        await self._send({"type": "presence", **({"channel": channel} if channel else {})})

    async def ping(self) -> None:
        await self._send({"type": "ping"})

    # -- receiving ---------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Message]:
        while True:
            ws = self._ws
            if ws is None:
                raise FeedsError("not connected: use 'async with FeedClient(...)' or connect()")
            try:
                working = False
                async for raw in ws:
                    if not working:
                        # Counted as working only once the server speaks: a draining server
                        # may accept the handshake and close with 1001 right away.
                        working = True
                        self.servers.connected()
                    message = parse_message(orjson.loads(raw))
                    if message.type == "gap" and message.channel in self.positions:
                        # The server could not refill a gap itself: ask for what we missed.
                        await self._send(self._subscribe_frame(message.channel))
                    if self._is_new(message):
                        yield message
            except ConnectionClosed:
                pass
            code, reason = ws.close_code, ws.close_reason or ""
            if self._closing:
                return
            if not self.reconnect or code in FINAL_CLOSE_CODES:
                raise FeedClosed(code, reason)
            left, ended = self.url, code
            while True:
                delay = self.servers.advance(ended)
                if delay > 0:
                    await asyncio.sleep(delay)
                if self._closing:
                    return
                try:
                    await self._open()
                except _OPEN_ERRORS as exc:
                    log.info("reconnect to %s failed: %r", self.url, exc)
                    ended = None
                    continue
                self.reconnects += 1
                log.info("reconnected to %s after close %s from %s", self.url, code, left)
                break

    def _is_new(self, message: Message) -> bool:
        """Track positions and drop anything already delivered (same epoch, id not newer)."""
        if not isinstance(message, Chat | Data) or message.id is None or message.channel is None:
            return True
        epoch = message.epoch or ""
        known = self.positions.get(message.channel)
        if known is not None and known[0] == epoch and message.id <= known[1]:
            return False
        self.positions[message.channel] = (epoch, message.id)
        return True

    # -- helpers -----------------------------------------------------------------------------

    def _feed_url(self) -> str:
        query: dict[str, str] = {}
        if self.user:
            query["user"] = self.user
        position = self.positions.get(self.channel)
        if position is not None:
            query["since"] = str(position[1])
            if position[0]:
                query["epoch"] = position[0]
        url = f"{self.servers.current}/feed/{self.channel}"
        return f"{url}?{urlencode(query)}" if query else url

    def _subscribe_frame(self, channel: str) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "subscribe", "channel": channel}
        position = self.positions.get(channel)
        if position is not None:
            frame["since"] = position[1]
            if position[0]:
                frame["epoch"] = position[0]
        return frame

    async def _send(self, frame: Mapping[str, Any]) -> None:
        if self._ws is None:
            raise FeedsError("not connected")
        await self._ws.send(orjson.dumps(frame).decode())
