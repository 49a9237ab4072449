"""One WebSocket connection from handshake to close: the per-connection protocol state machine.

A session gets whole client messages from its connection (``connection.py``), turns them into
commands (``protocol.py``), and talks to the hub and the broker. Everything it sends to its
client goes through its bounded ``Outbound`` buffer: on one connection only one writer may exist,
or frames could be reordered.

A session never closes the connection because of bad input: every invalid frame gets a documented
``error`` message and the loop goes on.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import unicodedata
from collections import deque
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING

from . import protocol
from .auth import Identity, seconds_left
from .channels import CHANNEL_RULES, is_valid_channel
from .envelope import seal
from .errors import BrokerUnavailable, ProtocolError
from .hub import read_history
from .outbound import Outbound
from .protocol import CloseCode, ErrorCode
from .ratelimit import TokenBucket
from .replay import ReplayBuffer
from .tasks import cancel_and_wait
from .wire import WEBSOCKET, Wire

if TYPE_CHECKING:
    from .connection import Connection
    from .node import Node

log = logging.getLogger(__name__)

MAX_USER_LENGTH = 64

INBOX_LIMIT = 32
"""Client messages waiting to be handled before the connection stops reading."""

REFUSING = frozenset(
    {
        CloseCode.POLICY_VIOLATION,
        CloseCode.INVALID_CHANNEL,
        CloseCode.BROKER_UNAVAILABLE,
        CloseCode.TOKEN_EXPIRED,
        CloseCode.RATE_LIMITED,
        CloseCode.INTERNAL_ERROR,
    }
)
"""Closes after which the client's queued messages are dropped: it was refused, its credential
ran out, or it abused the rate limit. After others (a shutdown, a slow consumer) what it sent
before the close is still handled."""


def clean_user_name(raw: str | None) -> str:
    """A display name from untrusted input: control characters removed, at most 64 characters.

    Falls back to a generated ``guest-xxxx`` name when nothing printable is left.
    """
    if raw:
        name = "".join(ch for ch in raw if unicodedata.category(ch)[0] != "C").strip()
        if name:
            return name[:MAX_USER_LENGTH]
    return f"guest-{secrets.token_hex(2)}"


class Session:
    """State of one client connection: identity, joined channels, outbound buffer.

    Driven by its connection: :meth:`receive` for each client message and
    :meth:`connection_lost` at the end. Messages are handled one at a time, in order, by a task
    that exists only while there is something to handle, so an idle connection costs no task.
    """

    __slots__ = (
        "_bucket",
        "_done",
        "_ended",
        "_expiry",
        "_finished",
        "_inbox",
        "_paused",
        "_task",
        "_violations",
        "channels",
        "close_code",
        "conn",
        "id",
        "identity",
        "node",
        "outbound",
        "peer",
        "primary",
        "user",
        "wire",
    )

    def __init__(
        self,
        node: Node,
        conn: Connection,
        *,
        user: str,
        peer: str = "",
        identity: Identity | None = None,
        wire: Wire = WEBSOCKET,
    ) -> None:
        self.node = node
        self.wire = wire
        """How this connection's messages are framed (its transport's codec)."""
        self.identity = identity or Identity(user=user)
        rate = node.message_rate
        self._bucket = TokenBucket(rate, time.monotonic()) if rate else None
        self._violations = 0
        self._expiry: asyncio.TimerHandle | None = None
        self.conn = conn
        self.id = secrets.token_hex(8)
        self.user = user
        self.peer = peer
        self.channels: dict[str, None] = {}
        """Joined channels, in join order (a dict is an ordered set)."""
        self.primary = ""
        """The channel named in the URL."""
        self.outbound = Outbound(
            conn.transport, node.flusher, node.config.client_buffer, self._overflow
        )
        self.close_code: int | None = None
        self._inbox: deque[str | bytes] | None = None
        """Client messages waiting for the task; made when the first one comes (a deque is
        larger than the rest of an idle session)."""
        self._paused = False
        self._task: asyncio.Task[None] | None = None
        """Opening the session, or handling queued messages; None while idle."""
        self._ended = False
        self._done = False
        self._finished: asyncio.Future[None] | None = None
        """Made on demand (an Event per idle connection would cost more than the rest)."""

    # -- lifecycle -------------------------------------------------------------------------------

    def start(
        self,
        channel: str,
        since: object = None,
        epoch: object = None,
        *,
        also: Sequence[tuple[str, int | None, str | None]] = (),
    ) -> None:
        """Welcome the client and join ``channel``; its messages wait until that is done.

        ``also``: more channels to join right after, each with its recovery position
        (``since``, ``epoch``), each acknowledged with ``subscribed`` (transports that name
        several channels at connect, such as Server-Sent Events).
        """
        node = self.node
        node.sessions[self.id] = self
        node.stats.connections_opened += 1
        log.info(
            "open client=%s user=%r peer=%s channel=%s", self.id, self.user, self.peer, channel
        )
        self._task = asyncio.ensure_future(self._work(self._open(channel, since, epoch, also)))
        self.conn.attach(self)

    async def _open(
        self,
        channel: str,
        since: object,
        epoch: object,
        also: Sequence[tuple[str, int | None, str | None]],
    ) -> None:
        if self.node.draining:
            self.close(CloseCode.GOING_AWAY, "server shutting down")
            return
        if not is_valid_channel(channel):
            self.close(
                CloseCode.INVALID_CHANNEL, f"invalid channel name; names are {CHANNEL_RULES}"
            )
            return
        if not self.identity.may_join(channel):
            self.close(CloseCode.POLICY_VIOLATION, "forbidden: this channel")
            return
        self.primary = channel
        self._watch_expiry()
        greeting = [protocol.welcome(channel, self.id, self.user)]
        try:
            recovery = (protocol.parse_since(since), protocol.parse_epoch(epoch))
        except ProtocolError as exc:
            greeting.append(protocol.error(exc.code, exc.message, channel))
            recovery = (None, None)
        if not await self._join(channel, *recovery, greeting=greeting):
            self.close(CloseCode.BROKER_UNAVAILABLE, "broker unavailable, try again")
            return
        for other, other_since, other_epoch in also:
            await self._dispatch(protocol.Subscribe(other, other_since, other_epoch))

    def receive(self, message: str | bytes) -> None:
        """A client message: handle it after those before it."""
        if self._ended or self.close_code in REFUSING:
            return
        if self._inbox is None:
            self._inbox = deque()
        self._inbox.append(message)
        if self._task is None:
            self._task = asyncio.ensure_future(self._work(None))
        elif len(self._inbox) >= INBOX_LIMIT and not self._paused:
            self._paused = True  # a client sending faster than it is served waits in TCP
            self.conn.pause_reading()

    async def _work(self, opening: Coroutine[object, object, None] | None) -> None:
        try:
            if opening is not None:
                await opening
            inbox = self._inbox
            # Messages received before the connection ended are still handled (a chat sent
            # just before a close, or before a shutdown, is published), unless the server
            # closed the connection to refuse this client.
            while inbox and self.close_code not in REFUSING:
                message = inbox.popleft()
                if self._paused and len(inbox) <= INBOX_LIMIT // 2:
                    self._paused = False
                    self.conn.resume_reading()
                await self._handle(message)
        except Exception:
            log.exception("client=%s: handling a message failed; closing", self.id)
            self.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            # This is the session's only task: ``receive`` starts one only when there is none.
            self._task = None
            if not self._inbox:
                self._inbox = None

    def connection_lost(self) -> None:
        """The connection is gone: finish what it sent, then leave every channel.

        Messages already received whole are still handled (up to ``close_timeout``): a client
        that sends a chat and closes at once has its chat published. Then the session leaves
        its channels, in a task of its own.
        """
        if self._ended:
            return
        self._ended = True
        if self._expiry is not None:
            self._expiry.cancel()
        # Nothing more can reach the client; stop queuing first, so replies and leave notices
        # do not try to write to a closed transport.
        self.outbound.flush()
        self.outbound.close()
        self.node.track(asyncio.ensure_future(self._cleanup()))

    async def _cleanup(self) -> None:
        try:
            task = self._task
            if task is not None:
                _, pending = await asyncio.wait({task}, timeout=self.node.config.close_timeout)
                if pending:
                    log.info("client=%s: gave up on its last messages", self.id)
                    await cancel_and_wait(task)
            self._inbox = None
            await self._leave_all()
        finally:
            self.node.sessions.pop(self.id, None)
            self.node.rooms_changed()
            observe = self.node.stats.observe_high_water
            if observe is not None:
                observe(self.outbound.high_water)
            code = self.close_code or self.conn.close_received
            log.info("close client=%s user=%r code=%s", self.id, self.user, code)
            self._done = True
            if self._finished is not None and not self._finished.done():
                self._finished.set_result(None)

    async def wait_finished(self) -> None:
        """Until the connection is gone and the session has left every channel."""
        if self._done:
            return
        if self._finished is None:
            self._finished = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._finished)

    def close(self, code: int, reason: str) -> None:
        """Flush what is queued, then close with ``code``; the socket is dropped if that stalls."""
        if self.close_code is None:
            self.close_code = code
        self.outbound.flush()
        self.conn.close(code, reason)

    def send(self, body: bytes) -> None:
        """Queue one server message (encoded JSON) for this client."""
        self.outbound.send(self.wire.frame(body))

    # -- reading ---------------------------------------------------------------------------------

    async def _handle(self, raw: str | bytes) -> None:
        self.node.stats.client_messages += 1
        if self._bucket is not None and not self._within_rate(self._bucket):
            return
        if not isinstance(raw, str):
            self._error(
                ErrorCode.BINARY_NOT_SUPPORTED,
                "Binary frames are not supported; send JSON text frames",
            )
            return
        try:
            command = protocol.parse_frame(raw)
        except ProtocolError as exc:
            self._error(exc.code, exc.message, exc.channel)
            return
        await self._dispatch(command)

    async def _dispatch(self, command: protocol.Command) -> None:
        match command:
            case protocol.Chat():
                await self._chat(command)
            case protocol.Subscribe(channel=channel) if (
                channel not in self.channels and not self.identity.may_join(channel)
            ):
                self._error(ErrorCode.FORBIDDEN, "You may not join this channel", channel)
            case protocol.Subscribe(channel=channel) if (
                channel not in self.channels and len(self.channels) >= self.node.config.max_channels
            ):
                self._error(
                    ErrorCode.TOO_MANY_CHANNELS,
                    f"A connection may follow at most {self.node.config.max_channels} channels",
                    channel,
                )
            case protocol.Subscribe(channel=channel, since=since, epoch=epoch):
                if channel in self.channels:
                    if since is not None:  # a resync, typically after a "gap" notice
                        await self._resync(channel, since, epoch)
                    else:
                        self.send(protocol.subscribed(channel))
                elif not await self._join(channel, since, epoch):
                    self._error(
                        ErrorCode.BROKER_UNAVAILABLE, "Could not subscribe; try again", channel
                    )
            case protocol.Unsubscribe(channel=channel):
                if channel not in self.channels:
                    self._error(ErrorCode.NOT_SUBSCRIBED, "Not subscribed to this channel", channel)
                else:
                    await self._leave(channel)
                    self.send(protocol.unsubscribed(channel))
            case protocol.Ping():
                self.send(protocol.PONG)
            case protocol.Presence(channel=asked):
                await self._presence(asked or self.primary, asked is None)

    async def _chat(self, command: protocol.Chat) -> None:
        channel = command.channel or self.primary
        if channel not in self.channels:
            if command.channel is None:
                self._error(ErrorCode.MISSING_FIELD, "Missing field: channel")
            else:
                self._error(ErrorCode.NOT_SUBSCRIBED, "Not subscribed to this channel", channel)
            return
        if not self.identity.may_publish(channel):
            self._error(ErrorCode.FORBIDDEN, "You may not publish to this channel", channel)
            return
        limiter = self.node.user_limiter
        if limiter is not None:
            wait = await limiter.take(self.identity.subject or self.user)
            if wait > 0:
                self.node.stats.rate_limited += 1
                self._error(
                    ErrorCode.RATE_LIMITED,
                    "Too many messages from this user; not delivered",
                    channel,
                    retry_after=round(wait, 2),
                )
                return
        body = protocol.chat(channel, self.id, self.user, command.message)
        try:
            await self.node.publish_message(channel, body)
        except BrokerUnavailable:
            self._error(
                ErrorCode.BROKER_UNAVAILABLE, "Message not delivered: broker unavailable", channel
            )

    async def _presence(self, channel: str, implicit: bool) -> None:
        if channel not in self.channels:
            if implicit:
                self._error(ErrorCode.MISSING_FIELD, "Missing field: channel")
            else:
                self._error(ErrorCode.NOT_SUBSCRIBED, "Not subscribed to this channel", channel)
            return
        try:
            members = await self.node.channel_members(channel)
        except BrokerUnavailable:
            self._error(ErrorCode.BROKER_UNAVAILABLE, "Presence unavailable: broker down", channel)
            return
        self.send(protocol.presence(channel, [m.public() for m in members]))

    def _error(self, code: str, message: str, channel: str | None = None, **extra: object) -> None:
        self.send(protocol.error(code, message, channel, **extra))

    def _within_rate(self, bucket: TokenBucket) -> bool:
        """Take a token from the connection's bucket; answer (and maybe close) when empty."""
        wait = bucket.take(time.monotonic())
        if wait <= 0:
            return True
        self.node.stats.rate_limited += 1
        self._violations += 1
        limit = self.node.config.rate_limit_violations
        if limit and self._violations >= limit:
            log.info("client=%s closed after %d rate-limit violations", self.id, self._violations)
            self.close(CloseCode.RATE_LIMITED, "rate limit exceeded repeatedly")
            return False
        self._error(
            ErrorCode.RATE_LIMITED,
            f"Rate limit {self.node.config.rate_limit}: message not delivered",
            retry_after=round(wait, 2),
        )
        return False

    def _watch_expiry(self) -> None:
        left = seconds_left(self.identity)
        if left is None:
            return
        self._expiry = asyncio.get_running_loop().call_later(max(left, 0.0), self._expired)

    def _expired(self) -> None:
        log.info("client=%s: credential expired", self.id)
        self.close(CloseCode.TOKEN_EXPIRED, "token expired")

    # -- membership ------------------------------------------------------------------------------

    async def _join(
        self,
        channel: str,
        since: int | None = None,
        epoch: str | None = None,
        *,
        greeting: list[bytes] | None = None,
    ) -> bool:
        """Join ``channel`` (idempotent), replaying from ``since`` first if given.

        The acknowledgement (``greeting``, the welcome of the URL channel, or else
        ``subscribed``) is sent only once the join holds: the broker confirmed the
        subscription and this node's presence report lists the member. So receiving it means
        that everything published from then on reaches the client and every instance lists it.
        Live messages arriving meanwhile are parked and follow it (after the replay, if any).

        False when the broker could not subscribe.
        """
        if channel in self.channels:
            return True
        self.channels[channel] = None
        parked = ReplayBuffer(self.node.config.client_buffer, self.wire)
        try:
            await self.node.hub.join(channel, self.id, parked, self.wire)
        except BrokerUnavailable as exc:
            log.warning("client=%s could not join %s: %s", self.id, channel, exc)
            del self.channels[channel]
            return False
        self.node.member_joined(channel, self.id, self.user)
        await self.node.presence_reported()
        for body in greeting or ():
            self.send(body)
        seen = None if since is None else await self._recover(channel, since, epoch)
        if greeting is None:
            self.send(protocol.subscribed(channel))
        self._go_live(channel, parked, seen)
        if self.node.notices_for(channel):
            notice = protocol.user_joined(channel, self.id, self.user)
            await self._announce(channel, seal(notice, exclude=self.id))
        return True

    async def _resync(self, channel: str, since: int, epoch: str | None) -> None:
        """Replay a joined channel from ``since``, parking its live frames meanwhile."""
        parked = ReplayBuffer(self.node.config.client_buffer, self.wire)
        self.node.hub.swap(channel, self.id, parked)
        seen = await self._recover(channel, since, epoch)
        self.send(protocol.subscribed(channel))
        self._go_live(channel, parked, seen)

    async def _recover(self, channel: str, since: int, epoch: str | None) -> tuple[str, int]:
        """Send the stored messages after ``since``, then ``recovered``.

        Returns the position (epoch, id) the client now holds everything up to, so that the
        parked live frames the history already contained can be dropped.
        """
        limit = max(self.node.config.history_size, 1)
        page = await read_history(self.node.broker, channel, since, epoch, limit)
        for body in page.messages:
            self.send(body)
        last = page.offsets[-1] if page.offsets else (since if page.complete else 0)
        self.send(protocol.recovered(channel, page.complete, len(page.messages), page.epoch, last))
        return page.epoch, last

    def _go_live(self, channel: str, parked: ReplayBuffer, seen: tuple[str, int] | None) -> None:
        """Forward the parked frames not already replayed, then switch the member to its real
        buffer, with no await in between: nothing is lost or doubled."""
        if parked.overflowed:
            self._overflow()
            return
        frames = parked.frames if seen is None else parked.unseen(*seen)
        for frame in frames:
            self.outbound.send(frame)
        self.node.hub.swap(channel, self.id, self.outbound)

    async def _leave(self, channel: str) -> None:
        del self.channels[channel]
        self.node.member_left(channel, self.id)
        await self.node.hub.leave(channel, self.id)
        if self.node.notices_for(channel):
            await self._announce(channel, seal(protocol.user_left(channel, self.id, self.user)))

    async def _leave_all(self) -> None:
        for channel in list(self.channels):
            try:
                await self._leave(channel)
            except Exception:  # leaving must finish for every channel, whatever one of them does
                log.exception("client=%s: leaving %s failed", self.id, channel)

    async def _announce(self, channel: str, payload: bytes) -> None:
        try:
            await self.node.broker.publish(channel, payload)
        except BrokerUnavailable as exc:
            log.warning("join/leave notice on %s not sent: %s", channel, exc)

    # -- slow clients ----------------------------------------------------------------------------

    def _overflow(self) -> None:
        """The outbound buffer overflowed: send close 4001 and drop the socket if it stays stuck.

        Called from inside the fan-out loop, so it must not touch the hub's member tables; the
        session leaves its channels when the reader sees the connection end.
        """
        self.close_code = CloseCode.SLOW_CONSUMER
        self.node.stats.slow_disconnects += 1
        log.warning(
            "client=%s user=%r is too slow (over %d bytes buffered); disconnecting",
            self.id,
            self.user,
            self.outbound.limit,
        )
        self.conn.close(CloseCode.SLOW_CONSUMER, "slow consumer")
