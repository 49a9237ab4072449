"""One client connection from open to close: the driver of its protocol state machine.

The protocol itself (which reply, which error, when to close) is decided by
:class:`~sanic_feeds.session_state.SessionState`, pure code. This module moves things around it:
whole client messages in from the connection (``connection.py`` for WebSocket, any transport
implementing ``Connection``), the machine's actions out to the node (through the ``Host``
interface: join, leave, publish, presence) and to the client. Everything sent to the client goes
through its bounded ``Outbound`` buffer, framed by the connection's ``Wire``: on one connection
only one writer may exist, or frames could be reordered.

A session never closes the connection because of bad input: every invalid frame gets a documented
``error`` message and the loop goes on.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import unicodedata
from collections.abc import Callable, Coroutine, Mapping, Sequence
from functools import partial

from .auth import Identity, seconds_left
from .codec import FEED_JSON, Codec
from .connection import Connection
from .control import ControlCommand
from .hook_runner import NO_HOOKS, HookRunner
from .hooks import DisconnectEvent
from .host import Host
from .inbox import INBOX_LIMIT, InboxDriver
from .outbound import Outbound
from .protocol import CloseCode
from .session_actions import ActionRunner
from .session_state import REFUSING, Action, SessionState
from .wire import WEBSOCKET, Wire

log = logging.getLogger(__name__)

MAX_USER_LENGTH = 64

__all__ = ["INBOX_LIMIT", "REFUSING", "Session", "clean_user_name"]


def clean_user_name(raw: str | None) -> str:
    """A display name from untrusted input: control characters removed, at most 64 characters.

    Falls back to a generated ``guest-xxxx`` name when nothing printable is left.
    """
    if raw:
        name = "".join(ch for ch in raw if unicodedata.category(ch)[0] != "C").strip()
        if name:
            return name[:MAX_USER_LENGTH]
    return f"guest-{secrets.token_hex(2)}"


Message = str | bytes | Callable[[], list[Action]]
"""A client message, or a server input (a step of the machine, see ``Session.submit``)."""


class Session(InboxDriver[Message]):
    """One client connection: its state machine, its outbound buffer, its connection.

    Driven by its connection: :meth:`receive` for each client message and
    :meth:`connection_lost` at the end. Messages are handled one at a time, in order, by a task
    that exists only while there is something to handle, so an idle connection costs no task.
    """

    __slots__ = (
        "_actions",
        "_done",
        "_ended",
        "_finished",
        "_hooks",
        "close_code",
        "conn",
        "host",
        "id",
        "outbound",
        "peer",
        "state",
        "wire",
    )

    def __init__(
        self,
        host: Host,
        conn: Connection,
        *,
        user: str,
        peer: str = "",
        identity: Identity | None = None,
        wire: Wire = WEBSOCKET,
        codec: Codec = FEED_JSON,
        hooks: HookRunner = NO_HOOKS,
        client: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        # The inbox is made when the first message comes (a deque is larger than the rest of an
        # idle session).
        super().__init__(None)
        self.host = host
        self.wire = wire
        """How this connection's messages are framed (its transport's codec)."""
        self.conn = conn
        self.id = client or secrets.token_hex(8)
        self.peer = peer
        self.state = SessionState(
            self.id, user, identity or Identity(user=user), limits=host.limits, codec=codec
        )
        self.outbound = Outbound(conn.transport, host.flusher, host.client_buffer, self.overflow)
        self._hooks = hooks
        self._actions = ActionRunner(host, self.state, self, hooks, wire.name, headers)
        self.close_code: int | None = None
        self._ended = False
        self._done = False
        self._finished: asyncio.Future[None] | None = None
        """Made on demand (an Event per idle connection would cost more than the rest)."""

    @property
    def codec(self) -> Codec:
        return self.state.codec

    @property
    def user(self) -> str:
        return self.state.user

    @property
    def channels(self) -> dict[str, None]:  # joined channels, in join order
        return self.state.channels

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
        self.host.attach(self)
        log.info(
            "open client=%s user=%r peer=%s channel=%s", self.id, self.user, self.peer, channel
        )
        expires_in = seconds_left(self.state.identity)
        opening = self._actions.open(channel, since, epoch, also, expires_in)
        self._task = asyncio.ensure_future(self._work(opening))
        self.conn.attach(self)

    def join_for_server(self, channels: Sequence[tuple[str, int | None, str | None]]) -> None:
        """Join ``channels`` (name, since, epoch) as the server's: no permission, no hook."""
        state = self.state
        for channel, since, epoch in channels:
            self.submit(partial(state.server_subscribe, channel, since, epoch))

    def receive(self, message: Message) -> None:
        """A client message (or a server input, see :meth:`submit`): handle it after those
        before it."""
        if self._ended or self.close_code in REFUSING:
            return
        self._queue(message, self._work)

    async def _work(self, opening: Coroutine[object, object, None] | None = None) -> None:
        try:
            if opening is not None:
                await opening
            inbox = self._inbox
            # Messages received before the connection ended are still handled (a chat sent
            # just before a close, or before a shutdown, is published), unless the server
            # closed the connection to refuse this client.
            handled = 0
            while inbox and self.close_code not in REFUSING:
                handled += 1
                if handled % INBOX_LIMIT == 0:
                    await asyncio.sleep(0)  # a flood read at once must not stall the others
                message = self._take(inbox)
                if callable(message):
                    await self._run(message())
                    continue
                self.host.tally("client_messages")
                await self._run(self.state.receive(message, time.monotonic()))
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
        self._actions.ended()
        # Nothing more can reach the client; stop queuing first, so replies and leave notices
        # do not try to write to a closed transport.
        self.outbound.flush()
        self.outbound.close()
        self.host.track(asyncio.ensure_future(self._cleanup()))

    async def _cleanup(self) -> None:
        try:
            if await self._let_inbox_finish(self.host.close_timeout):
                log.info("client=%s: gave up on its last messages", self.id)
            self._inbox = None
            channels = list(self.channels)
            self.channels.clear()
            await self.host.leave_all(self, channels)
        finally:
            self.host.detach(self, self.outbound.high_water)
            code = self.close_code or self.conn.close_received
            log.info("close client=%s user=%r code=%s", self.id, self.user, code)
            if self._hooks.hooks.disconnect:
                event = DisconnectEvent(self.id, self.wire.name, "feed", self.user_key, code)
                self.host.track(self._hooks.tell(event))
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

    def keepalive(self, now: float, timeout: float) -> None:
        """Called by the node's keepalive sweep, every ping interval."""
        self.conn.keepalive(now, timeout)

    async def _run(self, actions: list[Action]) -> None:
        await self._actions.run(actions)

    # -- the server API ----------------------------------------------------------------------

    @property
    def user_key(self) -> str:
        """Who the server API names as ``user``: the credential's subject, else the name."""
        return self.state.identity.subject or self.state.user

    def control(self, command: ControlCommand) -> None:
        """A server API command for this connection (from the control channel)."""
        self._actions.control(command)

    submit = receive
    """A server input: the machine's step, taken in turn with the client's messages."""

    # -- slow clients ----------------------------------------------------------------------------

    def overflow(self) -> None:
        """The outbound buffer overflowed: send close 4001 and drop the socket if it stays stuck.

        Called from inside the fan-out loop, so it must not touch the hub's member tables; the
        session leaves its channels when the reader sees the connection end.
        """
        self.close_code = CloseCode.SLOW_CONSUMER
        self.host.tally("slow_disconnects")
        log.warning(
            "client=%s user=%r is too slow (over %d bytes buffered); disconnecting",
            self.id,
            self.user,
            self.outbound.limit,
        )
        self.conn.close(CloseCode.SLOW_CONSUMER, "slow consumer")
