"""A node's one Redis pub/sub connection: its channels, their confirmations, re-subscription.

Messages are handed to ``on_message`` from the connection's ``data_received``: no reader task,
no await and no allocation beyond hiredis's own per message. So there is exactly one reader by
construction, and it cannot be stolen from or starved by another task.

After the connection is lost the subscriber reconnects (with backoff and jitter) and subscribes
every channel again. A confirmation nobody waited for means the channel was re-established, so
messages published meanwhile never reached this node: ``on_resubscribed`` hears of it, and the
node refills the gap from the history.

On a Redis Cluster the subscriber is *sharded* (one per master, ``SSUBSCRIBE``): a channel
whose slot the master does not serve is refused (``MOVED``: ``on_refused``), and one whose slot
left the master (a migration, a failover) is unsubscribed by Redis itself (``on_dropped``). Each
channel then has its own command, so that every reply is matched to its channel in order.

What it must never do: forget a channel it was asked to keep (the books and Redis must agree), or
call ``on_message`` for a channel it was not asked to subscribe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import BrokerUnavailable
from ..tasks import cancel_and_wait
from .backoff import Backoff
from .resp import Endpoint, Reply, ReplyError, RespConnection, encode, open_connection

log = logging.getLogger(__name__)

RESUBSCRIBE_CHUNK = 500
"""Channels per SUBSCRIBE command when re-subscribing everything after a reconnect."""


@dataclass(frozen=True)
class Mode:
    """The commands and reply kinds of one flavour of pub/sub."""

    subscribe: bytes
    unsubscribe: bytes
    message: bytes
    confirmed: bytes
    left: bytes
    sharded: bool


CLASSIC = Mode(b"SUBSCRIBE", b"UNSUBSCRIBE", b"message", b"subscribe", b"unsubscribe", False)
SHARDED = Mode(b"SSUBSCRIBE", b"SUNSUBSCRIBE", b"smessage", b"ssubscribe", b"sunsubscribe", True)


class Refused(BrokerUnavailable):
    """Redis refused to subscribe a channel (on a cluster: ``MOVED``, another master serves it)."""

    def __init__(self, key: bytes, error: ReplyError) -> None:
        super().__init__(f"subscription refused: {error}")
        self.key = key
        self.error = error


class Moved(BrokerUnavailable):
    """The channel's subscription moved to another master while this one was waiting for it."""


class Subscriber:
    """Subscribe and unsubscribe from any task; messages arrive through ``on_message``."""

    def __init__(
        self,
        endpoint: Endpoint,
        on_message: Callable[[bytes, bytes], None],
        on_resubscribed: Callable[[bytes], None],
        *,
        client_name: str = "",
        confirm_timeout: float = 5.0,
        mode: Mode = CLASSIC,
        on_refused: Callable[[Refused], None] | None = None,
        on_dropped: Callable[[bytes], None] | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._mode = mode
        self._on_refused = on_refused
        self._on_dropped = on_dropped
        self._asked: deque[tuple[bytes, bytes]] = deque()
        """Sharded: (command, channel) written and not answered yet, oldest first."""
        self._confirm_timeout = confirm_timeout
        self._on_message = on_message
        self._on_resubscribed = on_resubscribed
        self._client_name = client_name
        self.keys: set[bytes] = set()
        """Every Redis channel this node wants, confirmed or not."""
        self._pending: dict[bytes, asyncio.Future[None]] = {}
        self._conn: RespConnection | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._closing = False
        self.error: str | None = None
        """Why the connection is down, or None while it is up."""
        self.reconnects = 0
        self._backoff = Backoff()

    async def open(self, first: bytes) -> None:
        """Connect and subscribe ``first`` (the node's own channel)."""
        self._closing = False
        try:
            self._conn = await self._connect()
            self._backoff.up(time.monotonic())
        except (OSError, ConnectionError, TimeoutError) as exc:
            raise BrokerUnavailable(f"cannot connect the subscriber: {exc!r}") from exc
        await self.subscribe(first)

    async def aclose(self) -> None:
        self._closing = True
        await cancel_and_wait(self._reconnecting)
        self._reconnecting = None
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        self.keys.clear()

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def subscribe(self, key: bytes) -> None:
        """Return once Redis confirmed the subscription.

        From the first line on, the SUBSCRIBE may reach Redis whatever happens to this call
        (an error, a timeout, a cancelled caller), so the key stays on the books until it is
        unsubscribed: books and Redis never disagree for good.
        """
        self.keys.add(key)
        confirmed = self._pending.get(key)
        if confirmed is None or confirmed.done():
            confirmed = asyncio.get_running_loop().create_future()
            self._pending[key] = confirmed
        conn = self._conn
        if conn is not None:
            self._write(conn, self._mode.subscribe, key)
        # else: the reconnect subscribes every key on the books, this one included
        try:
            async with asyncio.timeout(self._confirm_timeout):
                await asyncio.shield(confirmed)
        except TimeoutError as exc:
            why = self.error or "no answer"
            raise BrokerUnavailable(
                f"no SUBSCRIBE confirmation in {self._confirm_timeout:g} s ({why})"
            ) from exc
        finally:
            if self._pending.get(key) is confirmed and not confirmed.done():
                del self._pending[key]

    def unsubscribe(self, key: bytes) -> None:
        self.keys.discard(key)
        pending = self._pending.pop(key, None)
        if pending is not None:
            pending.cancel()
        conn = self._conn
        if conn is not None:
            self._write(conn, self._mode.unsubscribe, key)

    def move_out(self, key: bytes) -> None:
        """Give ``key`` up here because another master serves it now; a caller waiting for its
        confirmation here gets :class:`Moved` (and subscribes it there)."""
        self.keys.discard(key)
        pending = self._pending.pop(key, None)
        if pending is not None and not pending.done():
            pending.set_exception(Moved(f"{key!r} moved to another master"))
            pending.exception()  # retrieved here: nobody may be waiting for it
        conn = self._conn
        if conn is not None:
            self._write(conn, self._mode.unsubscribe, key)

    def _write(self, conn: RespConnection, command: bytes, key: bytes) -> None:
        conn.write(encode(command, key))
        if self._mode.sharded:
            self._asked.append((command, key))

    def rebuild(self, reason: str) -> None:
        """Drop the connection (a liveness probe failed); the reconnect re-subscribes all."""
        conn = self._conn
        if conn is not None:
            conn.abort(reason)
        elif not self._closing:
            self._start_reconnect()

    # -- the connection --------------------------------------------------------------------------

    async def _connect(self) -> RespConnection:
        return await open_connection(
            self._endpoint,
            self._on_reply,
            self._on_lost,
            name=self._client_name,
            select_db=False,  # pub/sub channels are the same in every database
        )

    def _on_reply(self, reply: Reply) -> None:
        if isinstance(reply, ReplyError):
            if self._mode.sharded and self._asked:
                self._refused(self._asked.popleft(), reply)
                return
            log.warning("Redis refused a subscriber command: %s", reply)
            return
        if not isinstance(reply, list) or len(reply) < 3:
            return
        kind = reply[0]
        mode = self._mode
        if kind == mode.message:
            self._on_message(reply[1], reply[2])
        elif kind == mode.confirmed:
            key = reply[1]
            self._answered(mode.subscribe, key)
            confirmed = self._pending.pop(key, None)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
            elif confirmed is None and key in self.keys:
                # Nobody asked: this is a re-subscription after a lost connection.
                self._on_resubscribed(key)
        elif kind == mode.left and mode.sharded:
            key = reply[1]
            if not self._answered(mode.unsubscribe, key) and key in self.keys:
                # Not an answer to us: Redis dropped the channel, its slot left this master.
                self.keys.discard(key)
                if self._on_dropped is not None:
                    self._on_dropped(key)

    def _answered(self, command: bytes, key: bytes) -> bool:
        """Sharded: take the answer to ``command key`` off the books; False if none was owed
        (a message Redis sent of its own accord)."""
        asked = self._asked
        if asked and asked[0] == (command, key):
            asked.popleft()
            return True
        return False

    def _refused(self, asked: tuple[bytes, bytes], error: ReplyError) -> None:
        command, key = asked
        if command != self._mode.subscribe:
            log.debug("Redis refused %r for %r: %s", command, key, error)
            return
        self.keys.discard(key)
        refused = Refused(key, error)
        pending = self._pending.pop(key, None)
        if pending is not None and not pending.done():
            pending.set_exception(refused)
            pending.exception()  # retrieved here: the caller may be gone
        if self._on_refused is not None:
            self._on_refused(refused)

    def _on_lost(self, reason: str) -> None:
        self._conn = None
        self._asked.clear()
        self._backoff.lost(time.monotonic())
        if self._closing:
            return
        if self.error is None:
            log.warning("broker subscriber connection lost: %s", reason)
        self.error = reason
        self._start_reconnect()

    def _start_reconnect(self) -> None:
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.create_task(
                self._reconnect(), name="sanic-feeds:redis-subscriber"
            )

    async def _reconnect(self) -> None:
        while not self._closing:
            await asyncio.sleep(self._backoff.delay())
            try:
                conn = await self._connect()
            except (OSError, ConnectionError, TimeoutError) as exc:
                self.error = repr(exc)
                continue
            if conn.closed:
                continue
            self._conn = conn
            keys = sorted(self.keys)
            if self._mode.sharded:  # one command per channel: channels of several slots
                for key in keys:
                    self._write(conn, self._mode.subscribe, key)
            else:
                for start in range(0, len(keys), RESUBSCRIBE_CHUNK):
                    conn.write(encode(b"SUBSCRIBE", *keys[start : start + RESUBSCRIBE_CHUNK]))
            self.reconnects += 1
            self._backoff.up(time.monotonic())
            self.error = None
            log.info("broker subscriber connection restored (%d channels)", len(keys))
            return
