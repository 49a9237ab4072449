"""A node's Redis subscriptions: its channels, their confirmations, re-subscription.

The subscriptions ride on one lane of the node's :class:`~.redis_commands.CommandPool` (RESP3:
one connection both subscribes and runs commands), so the stored publishes routed to that lane
get their reply and the node's own copy of the message in one read. Messages are handed to
``on_message`` from the connection's ``data_received``: no reader task, no await and no
allocation beyond hiredis's own per message. So there is exactly one reader by construction,
and it cannot be stolen from or starved by another task.

After the connection is lost the lane reconnects (with backoff and jitter) and the subscriber
subscribes every channel again. A confirmation nobody waited for means the channel was
re-established, so messages published meanwhile never reached this node: ``on_resubscribed``
hears of it, and the node refills the gap from the history.

On a Redis Cluster the subscriber is *sharded* (one per master, ``SSUBSCRIBE``): a channel
whose slot the master does not serve is refused (``MOVED``: ``on_refused``), and one whose slot
left the master (a migration, a failover) is unsubscribed by Redis itself (``on_dropped``): the
lane tells a confirmation it is owed from one Redis sent of its own accord.

What it must never do: forget a channel it was asked to keep (the books and Redis must agree), or
call ``on_message`` for a channel it was not asked to subscribe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import BrokerUnavailable
from .redis_commands import Asked, CommandPool
from .resp import Push, ReplyError, encode

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
        commands: CommandPool,
        on_message: Callable[[bytes, bytes], None],
        on_resubscribed: Callable[[bytes], None],
        *,
        confirm_timeout: float = 5.0,
        mode: Mode = CLASSIC,
        on_refused: Callable[[Refused], None] | None = None,
        on_dropped: Callable[[bytes], None] | None = None,
    ) -> None:
        self._commands = commands
        self._lane = commands.carry(self)
        self._mode = mode
        self._on_refused = on_refused
        self._on_dropped = on_dropped
        self._confirm_timeout = confirm_timeout
        self._on_message = on_message
        self._on_resubscribed = on_resubscribed
        self.keys: set[bytes] = set()
        """Every Redis channel this node wants, confirmed or not."""
        self._pending: dict[bytes, asyncio.Future[None]] = {}
        self._closing = False
        self.error: str | None = None
        """Why the connection is down, or None while it is up."""
        self.reconnects = 0

    async def open(self, first: bytes) -> None:
        """Subscribe ``first`` (the node's own channel); the command pool is open already."""
        self._closing = False
        await self.subscribe(first)

    async def aclose(self) -> None:
        self._closing = True
        self._commands.release(self)
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        self.keys.clear()

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
        # Without a connection now, the reconnect subscribes every key on the books, this one
        # included.
        self._send(self._mode.subscribe, (key,))
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
        self._send(self._mode.unsubscribe, (key,))

    def move_out(self, key: bytes) -> None:
        """Give ``key`` up here because another master serves it now; a caller waiting for its
        confirmation here gets :class:`Moved` (and subscribes it there)."""
        self.keys.discard(key)
        pending = self._pending.pop(key, None)
        if pending is not None and not pending.done():
            pending.set_exception(Moved(f"{key!r} moved to another master"))
            pending.exception()  # retrieved here: nobody may be waiting for it
        self._send(self._mode.unsubscribe, (key,))

    def _send(self, command: bytes, keys: Sequence[bytes]) -> None:
        answer = self._mode.confirmed if command == self._mode.subscribe else self._mode.left
        self._lane.ask(Asked(command, keys, answer), encode(command, *keys))

    def rebuild(self, reason: str) -> None:
        """Drop the connection (a liveness probe failed); the reconnect re-subscribes all."""
        self._lane.drop(reason)

    # -- what the lane tells -----------------------------------------------------------------

    def on_push(self, push: Push, owed: Asked | None) -> None:
        if len(push) < 3:
            return
        kind = push[0]
        mode = self._mode
        if kind == mode.message:
            self._on_message(push[1], push[2])
        elif kind == mode.confirmed:
            key = push[1]
            confirmed = self._pending.pop(key, None)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
            elif confirmed is None and key in self.keys:
                # Nobody waits: this is a re-subscription after a lost connection.
                self._on_resubscribed(key)
        elif kind == mode.left and mode.sharded and owed is None:
            key = push[1]
            if key in self.keys:
                # Not an answer to us: Redis dropped the channel, its slot left this master.
                self.keys.discard(key)
                if self._on_dropped is not None:
                    self._on_dropped(key)

    def on_refused(self, asked: Asked, error: ReplyError) -> None:
        if asked.command != self._mode.subscribe:
            log.debug("Redis refused %r for %r: %s", asked.command, asked.keys, error)
            return
        if not self._mode.sharded:
            if error.code != "NOPERM":  # BUSY, LOADING: not the channel's fault; kept on the
                # books, subscribed again with the others after the next reconnect
                log.warning("Redis refused to subscribe %d channel(s): %s", len(asked.keys), error)
                return
            if len(asked.keys) > 1:
                # Redis refuses the whole command for one denied channel (a re-subscription
                # after a reconnect, after an ACL change): one command each, so only the
                # denied ones are refused.
                for key in asked.keys:
                    if key in self.keys:
                        self._send(self._mode.subscribe, (key,))
                return
            log.warning("Redis refused to subscribe %r: %s", asked.keys[0], error)
        for key in asked.keys:
            self.keys.discard(key)
            refused = Refused(key, error)
            pending = self._pending.pop(key, None)
            if pending is not None and not pending.done():
                pending.set_exception(refused)
                pending.exception()  # retrieved here: the caller may be gone
            if self._on_refused is not None:
                self._on_refused(refused)

    def on_connected(self) -> None:
        if self._closing:
            return
        keys = sorted(self.keys)
        if self._mode.sharded:  # one command per channel: channels of several slots
            for key in keys:
                self._send(self._mode.subscribe, (key,))
        else:
            for start in range(0, len(keys), RESUBSCRIBE_CHUNK):
                self._send(self._mode.subscribe, keys[start : start + RESUBSCRIBE_CHUNK])
        self.reconnects += 1
        self.error = None
        log.info("broker subscriber connection restored (%d channels)", len(keys))

    def on_disconnected(self, reason: str) -> None:
        if self._closing:
            return
        if self.error is None:
            log.warning("broker subscriber connection lost: %s", reason)
        self.error = reason
