"""Every task's Redis commands on a few shared connections, written once per loop turn.

A burst of joins, chats and HTTP publishes used to take one pooled connection per command in
flight, and redis-py's pool refuses the 101st at once ("Too many connections"): a healthy Redis
and half a burst refused. Here a node holds a fixed, small set of connections (*lanes*). A
command is queued on a lane and the lane writes everything queued in one ``write`` at the end of
the loop turn; replies come back in order and resolve their callers. Under load batches grow by
themselves, which is what makes a message cost Redis (and this process) a fraction of a round
trip.

The budget: at most ``max_in_flight`` commands are queued or awaiting replies. A caller beyond it
waits for room (up to ``queue_timeout``), so a session stops reading its socket and TCP pushes
back on the client, and an HTTP publish waits within a bound. Nothing is refused while Redis
answers; refusals are counted and logged (at most once per ``LOG_EVERY`` seconds).

Failures are told apart, because a stored publish must never be stored twice:

- :class:`NotSent`: the command never left this process (no connection for ``command_timeout``);
  retrying is safe.
- :class:`OutcomeUnknown`: it was written but the connection ended before its reply; it may have
  run. ``may_still_run`` is true when this side gave up on a silent connection (Redis could still
  read the command later), false when the peer ended the connection.

Commands are never retried here. A command with a ``route`` always goes to the same lane, so
commands of one channel reach Redis in the order they were issued.

The lanes speak RESP3, so one of them can also carry the node's subscriptions (see
:meth:`CommandPool.carry`): the stored publishes then go on that lane, and a publish's reply and
the node's own copy of the message come back in one segment, read once, instead of on two
sockets (one read, and often one wake-up, less per message here; one write less in Redis). The
other commands (history reads above all) stay off it: to Redis it is a pub/sub client, whose
output is bounded by ``client-output-buffer-limit pubsub``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from ..errors import BrokerUnavailable
from ..log_every import LogEvery
from ..tasks import cancel_and_wait
from .backoff import Backoff
from .resp import Endpoint, Push, Reply, ReplyError, RespConnection, encode, open_connection

log = logging.getLogger(__name__)

WATCH_INTERVAL = 0.25
"""Seconds between two looks at the lanes for silent connections and stale queues."""

LOG_EVERY = 10.0
"""Seconds between two log lines about refused commands."""


_ASKING = encode(b"ASKING")
_PING = encode(b"PING")


def _ignore(future: asyncio.Future[Reply]) -> None:
    """Consume the outcome of a command nobody awaits (the ASKING before an asked command)."""
    if not future.cancelled():
        future.exception()


def outage_window(probe_interval: float, probe_timeout: float) -> float:
    """How long a command waits for a connection, or its reply, before it is given up: as long
    as the liveness probe takes to call the broker down (interval + timeout, 5 s by default),
    so a Redis restart or failover is ridden out, and a real outage is refused no later than
    the node reports it. At least 1 s, so a loaded machine's stall is not taken for one."""
    return max(probe_interval + probe_timeout, 1.0)


class NotSent(BrokerUnavailable):
    """The command never reached Redis; it did not run."""


class OutcomeUnknown(BrokerUnavailable):
    """The command was sent but its reply never came; it may have run."""

    def __init__(self, message: str, *, may_still_run: bool) -> None:
        super().__init__(message)
        self.may_still_run = may_still_run


class BrokerBusy(BrokerUnavailable):
    """The in-flight budget stayed full for ``queue_timeout``; the command was not sent."""


class Asked:
    """A subscription command written on a lane, followed in the same write by a ``PING``.

    Its success is one confirmation push per channel (kind ``answer``), its failure one error
    reply; neither can be told for sure from what Redis sends of its own accord (it pushes
    ``sunsubscribe`` for a shard channel whose slot left, and then answers our own
    ``SUNSUBSCRIBE`` with an error). The ``PING``'s reply, always an ordinary one, is what ends
    the command: an error reply before it is the command's, and no push ever moves the lane's
    books, so a reply can never be handed to the wrong caller."""

    __slots__ = ("answer", "command", "confirmed", "failed", "keys")

    def __init__(self, command: bytes, keys: Sequence[bytes], answer: bytes) -> None:
        self.command = command
        self.keys = keys
        self.answer = answer
        self.confirmed = 0
        self.failed = False

    def owes(self, push: Push) -> bool:
        """``push`` is the confirmation this command expects next (as far as can be told)."""
        confirmed = self.confirmed
        return bool(
            confirmed < len(self.keys)
            and push[0] == self.answer
            and push[1] == self.keys[confirmed]
        )


class PushListener(Protocol):
    """What a lane that carries subscriptions tells their owner (a subscriber)."""

    def on_push(self, push: Push, owed: Asked | None) -> None:
        """A pushed message or confirmation; ``owed``: the command it answers, if any."""

    def on_refused(self, asked: Asked, error: ReplyError) -> None:
        """Redis answered a subscription command with an error."""

    def on_connected(self) -> None:
        """The lane connected again after a loss: subscribe everything again."""

    def on_disconnected(self, reason: str) -> None:
        """The lane's connection ended (it reconnects by itself)."""


class _Lane:
    """One connection, the commands waiting for its next write, and those awaiting replies."""

    __slots__ = (
        "backoff",
        "conn",
        "down_since",
        "flush_scheduled",
        "gave_up",
        "index",
        "last_progress",
        "listener",
        "pool",
        "reconnecting",
        "sent",
        "unsent",
    )

    def __init__(self, pool: CommandPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.conn: RespConnection | None = None
        self.unsent: list[tuple[bytes, asyncio.Future[Reply]]] = []
        self.sent: deque[asyncio.Future[Reply] | Asked] = deque()
        """What owes an answer, in the order written: callers' futures, subscription commands."""
        self.listener: PushListener | None = None
        self.flush_scheduled = False
        self.last_progress = 0.0
        self.down_since: float | None = 0.0
        self.gave_up = False
        """Set when this side aborted a silent connection: what it sent may still run."""
        self.reconnecting: asyncio.Task[None] | None = None
        self.backoff = Backoff()

    def queue(self, command: bytes, future: asyncio.Future[Reply]) -> None:
        self.unsent.append((command, future))
        if not self.flush_scheduled and self.conn is not None:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        conn = self.conn
        if conn is None or not conn.usable or not self.unsent:
            return
        batch, self.unsent = self.unsent, []
        if not self.sent:
            self.last_progress = time.monotonic()
        data = []
        sent = self.sent
        for command, future in batch:
            if future.done():  # the caller gave up while it waited
                self.pool.finished()
                continue
            data.append(command)
            sent.append(future)
        if data:
            conn.write(b"".join(data))
            self.pool.batches += 1
            self.pool.commands += len(data)

    def ask(self, asked: Asked, data: bytes) -> bool:
        """Write a subscription command now, and the ``PING`` that ends it; False when there is
        no connection to write on (the listener subscribes everything again once there is)."""
        conn = self.conn
        if conn is None or not conn.usable:
            return False
        if not self.sent:
            self.last_progress = time.monotonic()
        conn.write(data + _PING)
        self.sent.append(asked)
        return True

    def drop(self, reason: str) -> None:
        """Abort the connection (a liveness probe failed); the lane reconnects. What it sent
        may still run: the path to Redis may be black-holed, and the abort never reach it."""
        if self.conn is not None:
            self.gave_up = True
            self.conn.abort(reason)
        elif not self.pool.closing:
            self.reconnect()

    def on_reply(self, reply: Reply) -> None:
        if type(reply) is Push:
            self._on_push(reply)
            return
        if not self.sent:
            self._unexpected("a reply nobody asked for")
            return
        head = self.sent.popleft()
        self.last_progress = time.monotonic()
        if isinstance(head, Asked):
            if isinstance(reply, ReplyError) and not head.failed:
                head.failed = True  # the command's own answer; its PING's reply still comes
                self.sent.appendleft(head)
                if self.listener is not None:
                    self.listener.on_refused(head, reply)
            return
        future = head
        self.pool.finished()
        if future.done():
            return
        if isinstance(reply, ReplyError):
            future.set_exception(reply)
        else:
            future.set_result(reply)

    def _on_push(self, push: Push) -> None:
        owed = None
        sent = self.sent
        if len(push) >= 2 and sent:
            head = sent[0]
            if isinstance(head, Asked) and head.owes(push):
                head.confirmed += 1
                owed = head
        if self.listener is not None:
            self.listener.on_push(push, owed)

    def _unexpected(self, what: str) -> None:
        log.warning("Redis sent %s; dropping the connection", what)
        if self.conn is not None:
            self.conn.abort("unexpected reply")

    def on_lost(self, reason: str) -> None:
        self.conn = None
        self.backoff.lost(time.monotonic())
        self.down_since = time.monotonic()
        sent, self.sent = self.sent, deque()
        may_still_run, self.gave_up = self.gave_up, False
        for future in sent:
            if isinstance(future, Asked):
                continue
            self.pool.finished()
            if not future.done():
                future.set_exception(
                    OutcomeUnknown(
                        f"connection to Redis lost before the reply ({reason})",
                        may_still_run=may_still_run,
                    )
                )
        if self.listener is not None:
            self.listener.on_disconnected(reason)
        if not self.pool.closing:
            if sent or self.unsent:
                log.warning("Redis command connection %d lost: %s", self.index, reason)
            self.reconnect()

    def reconnect(self) -> None:
        if self.reconnecting is None or self.reconnecting.done():
            self.reconnecting = asyncio.create_task(
                self._reconnect(), name=f"sanic-feeds:redis-lane-{self.index}"
            )

    async def _reconnect(self) -> None:
        while not self.pool.closing:
            await asyncio.sleep(self.backoff.delay())
            try:
                await self.connect()
                log.info("Redis command connection %d restored", self.index)
                return
            except (OSError, ConnectionError, TimeoutError) as exc:
                log.debug("Redis command connection %d: %r", self.index, exc)

    async def connect(self) -> None:
        conn = await open_connection(
            self.pool.endpoint,
            self.on_reply,
            self.on_lost,
            name=self.pool.client_name,
            resp3=True,
        )
        if conn.closed:
            raise ConnectionError("closed right after connecting")
        self.conn = conn
        self.backoff.up(time.monotonic())
        self.down_since = None
        if self.listener is not None:
            self.listener.on_connected()
        self.flush()

    def fail_unsent(self, reason: str) -> None:
        batch, self.unsent = self.unsent, []
        for _, future in batch:
            self.pool.finished()
            if not future.done():
                future.set_exception(NotSent(reason))


class CommandPool:
    """A node's connections for commands (not pub/sub). ``await open()``, ``call()``,
    ``await aclose()``."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        connections: int = 2,
        max_in_flight: int = 8192,
        command_timeout: float = 5.0,
        queue_timeout: float = 10.0,
        client_name: str = "",
    ) -> None:
        self.endpoint = endpoint
        self.client_name = client_name
        self.max_in_flight = max_in_flight
        self.command_timeout = command_timeout
        self.queue_timeout = queue_timeout
        self._lanes = [_Lane(self, index) for index in range(max(connections, 1))]
        self._carrier: _Lane | None = None
        """The lane that carries the subscriptions, if one does: the calls that ask for it go
        there, so a stored publish's reply arrives with the node's own copy of the message."""
        self._next = 0
        self.in_flight = 0
        """Commands queued or awaiting their reply."""
        self._room: deque[asyncio.Future[None]] = deque()
        self._watchdog: asyncio.Task[None] | None = None
        self.closing = False
        self.batches = 0
        """Writes to Redis (each carries one or more commands)."""
        self.commands = 0
        """Commands written."""
        self.refused = 0
        """Commands refused because the budget stayed full or no connection came up in time."""
        self._refusals_log = LogEvery(LOG_EVERY)

    async def open(self) -> None:
        """Connect every lane; raises :class:`BrokerUnavailable` when the first one fails."""
        self.closing = False
        for lane in self._lanes:
            lane.down_since = time.monotonic()
        try:
            await self._lanes[0].connect()
        except (OSError, ConnectionError, TimeoutError) as exc:
            raise BrokerUnavailable(f"cannot connect to Redis: {exc!r}") from exc
        for lane in self._lanes[1:]:
            try:
                await lane.connect()
            except (OSError, ConnectionError, TimeoutError):
                lane.reconnect()
        self._watchdog = asyncio.create_task(self._watch(), name="sanic-feeds:redis-watchdog")

    async def aclose(self) -> None:
        self.closing = True
        await cancel_and_wait(self._watchdog)
        self._watchdog = None
        for lane in self._lanes:
            await cancel_and_wait(lane.reconnecting)
            lane.fail_unsent("broker closed")
            if lane.conn is not None:
                lane.conn.close()
                lane.on_lost("broker closed")
        while self._room:
            waiter = self._room.popleft()
            if not waiter.done():
                waiter.set_exception(NotSent("broker closed"))

    @property
    def connected(self) -> int:
        """Lanes with a live connection."""
        return sum(1 for lane in self._lanes if lane.conn is not None)

    def carry(self, listener: PushListener) -> _Lane:
        """Let the first lane carry ``listener``'s subscriptions too; the lane it writes them on."""
        lane = self._lanes[0]
        lane.listener = listener
        self._carrier = lane
        return lane

    def release(self, listener: PushListener) -> None:
        """Stop handing pushes to ``listener`` (it is closing)."""
        lane = self._carrier
        if lane is not None and lane.listener is listener:
            lane.listener = None
            self._carrier = None

    async def call(
        self,
        command: bytes,
        route: str | None = None,
        *,
        asking: bool = False,
        carried: bool = False,
    ) -> Reply:
        """Send one encoded command (see :func:`~.resp.encode`) and return its reply.

        ``carried``: on the lane that carries the subscriptions, if one does (a stored
        publish of a subscribing node: its reply comes with the node's own copy). Never a
        ``MULTI``/``EXEC`` that publishes there: before Redis 7.2 the push for a channel the
        connection itself subscribes is written where the command runs, which inside
        ``EXEC`` is in the middle of its array reply. A script's push comes whole, before
        its reply, and is told apart by its type.

        ``asking``: precede it with ``ASKING`` on the same connection, in the same write (a
        Redis Cluster node importing the slot then serves it: the answer to an ``ASK``).

        Raises :class:`~.resp.ReplyError` for an error reply, and :class:`NotSent`,
        :class:`OutcomeUnknown` or :class:`BrokerBusy` (all :class:`BrokerUnavailable`).
        """
        if self.closing:
            raise NotSent("broker closed")
        # First come, first served: with callers already waiting, a newcomer waits behind them
        # even if a slot is free this instant (it is theirs).
        reserved = False
        if self.in_flight >= self.max_in_flight or self._room:
            await self._wait_for_room()
            reserved = True
            if self.closing:
                self.finished()
                raise NotSent("broker closed")
        if route is None:
            self._next = (self._next + 1) % len(self._lanes)
            lane = self._lanes[self._next]
        elif carried and self._carrier is not None:
            lane = self._carrier
        else:
            lane = self._lanes[hash(route) % len(self._lanes)]
        down = lane.down_since
        if down is not None and time.monotonic() - down > self.command_timeout:
            if reserved:
                self.finished()
            self._refuse("no connection to Redis")
            raise NotSent(f"no connection to Redis for {self.command_timeout:g} s")
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        if not reserved:
            self.in_flight += 1
        if asking:  # rare (a slot being migrated): over the budget by one, for its reply
            self.in_flight += 1
            flag: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
            flag.add_done_callback(_ignore)
            lane.queue(_ASKING, flag)
        lane.queue(command, future)
        return await future

    def finished(self) -> None:
        """A command left the books (answered, failed or abandoned): its slot goes to the
        longest waiter, reserved for it, so no newcomer can take it first."""
        self.in_flight -= 1
        room = self._room
        while room and self.in_flight < self.max_in_flight:
            waiter = room.popleft()
            if not waiter.done():
                self.in_flight += 1  # the waiter's slot, counted from now
                waiter.set_result(None)

    async def _wait_for_room(self) -> None:
        """Until a slot is reserved for this caller (at most ``queue_timeout``)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._room.append(waiter)
        try:
            async with asyncio.timeout(self.queue_timeout):
                await asyncio.shield(waiter)
        except TimeoutError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                return  # the slot came with the deadline: take it
            waiter.cancel()
            self._refuse("too many commands in flight")
            raise BrokerBusy(
                f"{self.in_flight} Redis commands in flight for {self.queue_timeout:g} s"
            ) from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.finished()  # reserved, but the caller is gone: pass the slot on
            else:
                waiter.cancel()
            raise

    def _refuse(self, why: str) -> None:
        self.refused += 1
        if self._refusals_log.due():
            log.warning("Redis commands refused (%s); %d refused so far", why, self.refused)

    async def _watch(self) -> None:
        """Abort connections that stopped answering; fail what waits for a connection too long.

        A frozen Redis raises nothing: without this, callers would wait forever.
        """
        while not self.closing:
            await asyncio.sleep(WATCH_INTERVAL)
            now = time.monotonic()
            for lane in self._lanes:
                conn = lane.conn
                if conn is not None and lane.sent:
                    if now - lane.last_progress > self.command_timeout:
                        lane.gave_up = True
                        conn.abort(f"no reply for {self.command_timeout:g} s")
                elif (
                    lane.down_since is not None
                    and lane.unsent
                    and now - lane.down_since > self.command_timeout
                ):
                    count = len(lane.unsent)
                    lane.fail_unsent("no connection to Redis")
                    for _ in range(count):
                        self._refuse("no connection to Redis")

    def drop_silent(self, older_than: float) -> int:
        """Abort the connections that owe a reply for over ``older_than`` seconds; return how
        many. The liveness probe calls it, so a black-holed connection is given up sooner than
        ``command_timeout``."""
        now = time.monotonic()
        dropped = 0
        for lane in self._lanes:
            conn = lane.conn
            if conn is not None and lane.sent and now - lane.last_progress > older_than:
                lane.gave_up = True
                conn.abort(f"no reply for {older_than:g} s")
                dropped += 1
        return dropped

    def statistics(self) -> dict[str, int]:
        """Counters for ``/metrics`` and tests."""
        return {
            "batches": self.batches,
            "commands": self.commands,
            "refused": self.refused,
            "in_flight": self.in_flight,
            "connected": self.connected,
        }
