"""A node's one Redis pub/sub connection: its channels, their confirmations, re-subscription.

Messages are handed to ``on_message`` from the connection's ``data_received``: no reader task,
no await and no allocation beyond hiredis's own per message. So there is exactly one reader by
construction, and it cannot be stolen from or starved by another task.

After the connection is lost the subscriber reconnects (with backoff and jitter) and subscribes
every channel again. A confirmation nobody waited for means the channel was re-established, so
messages published meanwhile never reached this node: ``on_resubscribed`` hears of it, and the
node refills the gap from the history.

What it must never do: forget a channel it was asked to keep (the books and Redis must agree), or
call ``on_message`` for a channel it was not asked to subscribe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ..errors import BrokerUnavailable
from ..tasks import cancel_and_wait
from .backoff import Backoff
from .resp import Endpoint, Reply, ReplyError, RespConnection, encode, open_connection

log = logging.getLogger(__name__)

RESUBSCRIBE_CHUNK = 500
"""Channels per SUBSCRIBE command when re-subscribing everything after a reconnect."""


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
    ) -> None:
        self._endpoint = endpoint
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
            conn.write(encode(b"SUBSCRIBE", key))
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
            conn.write(encode(b"UNSUBSCRIBE", key))

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
            log.warning("Redis refused a subscriber command: %s", reply)
            return
        if not isinstance(reply, list) or len(reply) < 3:
            return
        kind = reply[0]
        if kind == b"message":
            self._on_message(reply[1], reply[2])
        elif kind == b"subscribe":
            key = reply[1]
            confirmed = self._pending.pop(key, None)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
            elif confirmed is None and key in self.keys:
                # Nobody asked: this is a re-subscription after a lost connection.
                self._on_resubscribed(key)

    def _on_lost(self, reason: str) -> None:
        self._conn = None
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
            for start in range(0, len(keys), RESUBSCRIBE_CHUNK):
                conn.write(encode(b"SUBSCRIBE", *keys[start : start + RESUBSCRIBE_CHUNK]))
            self.reconnects += 1
            self._backoff.up(time.monotonic())
            self.error = None
            log.info("broker subscriber connection restored (%d channels)", len(keys))
            return
