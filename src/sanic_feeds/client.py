"""An async Python client for sanic-feeds: for backends, bots, tests and the ``tail`` command.

::

    async with FeedClient("ws://127.0.0.1:8000", "lobby", token="...") as feed:
        await feed.chat("hello")
        async for message in feed:
            if isinstance(message, Chat):
                print(message.user, message.message)

The client reconnects by itself with exponential backoff and jitter, and resumes every channel
from the last message id it saw (``since``/``epoch``), so the iteration has no gaps and no
duplicates across reconnects. It stops reconnecting on close codes that mean "do not retry as
is" (1000, 1008, 4400) and raises :class:`FeedClosed`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from .errors import FeedsError

log = logging.getLogger("sanic_feeds.client")

FINAL_CLOSE_CODES = frozenset({1000, 1008, 4400})
"""Close codes after which reconnecting with the same settings cannot help."""


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


class FeedClosed(FeedsError):
    """The server closed the connection for good (or reconnecting was turned off)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed by the server: {code} {reason}".strip())
        self.code = code
        self.reason = reason


# -- the client ------------------------------------------------------------------------------


class FeedClient:
    """One connection to ``<url>/feed/<channel>``, kept alive across reconnects."""

    def __init__(
        self,
        url: str,
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
        self.url = url.rstrip("/")
        self.channel = channel
        self.token = token
        self.user = user
        self.reconnect = reconnect
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.positions: dict[str, tuple[str, int]] = {}
        """Channel -> (epoch, id) of the newest message delivered to you."""
        if since is not None:
            self.positions[channel] = (epoch or "", since)
        self.channels: list[str] = [channel]
        self.reconnects = 0
        self._ws: ClientConnection | None = None
        self._closing = False

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
        """Open the connection (resuming every followed channel from its position)."""
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
        failures = 0
        while True:
            ws = self._ws
            if ws is None:
                raise FeedsError("not connected: use 'async with FeedClient(...)' or connect()")
            try:
                async for raw in ws:
                    failures = 0
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
            while True:
                failures += 1
                delay = min(self.max_backoff, self.min_backoff * 2 ** (failures - 1))
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                try:
                    await self.connect()
                    self.reconnects += 1
                    log.info("reconnected after close %s", code)
                    break
                except (OSError, InvalidHandshake, TimeoutError) as exc:
                    log.info("reconnect failed: %r", exc)

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
        url = f"{self.url}/feed/{self.channel}"
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
