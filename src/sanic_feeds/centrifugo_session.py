"""The driver of one Centrifugo client connection: its socket, its inbox, its lifecycle.

Like ``session.Session`` for ``/feed/`` sockets, and on the same ``Connection`` (the lean
``FeedSocket``) and the same bounded ``Outbound``: messages are handled one at a time, in
order, by a task that exists only while some are waiting (at most ``INBOX_LIMIT``, then the
socket stops reading; ``inbox.py``, shared by both drivers); when the connection ends, what it
sent whole is still handled (up to ``close_timeout``), then it leaves its channels. What to
answer is the state machine's (``centrifugo_state.py``); the runner (``centrifugo_runner.py``)
does what it asks.

Logs one line per connection open and close, never per message, never a token.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Mapping

from .centrifugo_actions import Close
from .centrifugo_auth import CentrifugoTokens
from .centrifugo_control import server_command
from .centrifugo_protocol import FEED_CLOSES, disconnect_reason
from .centrifugo_runner import CentrifugoRunner
from .centrifugo_state import CentrifugoState, Settings
from .centrifugo_wire import WEBSOCKET_FRAMING, CentrifugoFraming
from .connection import Connection
from .control import ControlCommand
from .hook_runner import NO_HOOKS, HookRunner
from .hooks import DisconnectEvent
from .host import Host
from .inbox import InboxDriver
from .outbound import Outbound
from .protocol import CloseCode
from .rpc import ClientHandlers

log = logging.getLogger(__name__)


class Held:
    """Live messages of server-side subscriptions, held until the connect reply is out (SDKs
    drop publications of channels they have not been told of)."""

    __slots__ = ("_frames", "_outbound")

    def __init__(self, outbound: Outbound) -> None:
        self._outbound = outbound
        self._frames: list[bytes] | None = []

    def send(self, frame: bytes) -> None:
        if self._frames is None:
            self._outbound.send(frame)
        else:
            self._frames.append(frame)

    def release(self) -> None:
        frames, self._frames = self._frames, None
        for frame in frames or ():
            self._outbound.send(frame)


class CentrifugoSession(InboxDriver[str | bytes | ControlCommand]):
    """One Centrifugo connection. Driven by its connection: ``receive``, ``connection_lost``."""

    __slots__ = (
        "_ended",
        "_expiry",
        "_finished",
        "_hooks",
        "_runner",
        "_sweeps",
        "close_code",
        "conn",
        "framing",
        "held",
        "host",
        "id",
        "outbound",
        "peer",
        "state",
    )

    def __init__(
        self,
        host: Host,
        conn: Connection,
        *,
        tokens: CentrifugoTokens,
        handlers: ClientHandlers,
        settings: Settings,
        peer: str = "",
        hooks: HookRunner = NO_HOOKS,
        headers: Mapping[str, str] | None = None,
        framing: CentrifugoFraming = WEBSOCKET_FRAMING,
    ) -> None:
        super().__init__(deque())
        self.host = host
        self.conn = conn
        self.framing = framing
        """How the connection's transport carries frames (its replies and its wires)."""
        self.id = secrets.token_hex(8)
        self.peer = peer
        self.state = CentrifugoState(self.id, host.limits, settings)
        self.outbound = Outbound(conn.transport, host.flusher, host.client_buffer, self.overflow)
        self.held = Held(self.outbound)
        self._hooks = hooks
        self._runner = CentrifugoRunner(
            host, self.state, self, tokens, handlers, hooks, headers or {}
        )
        self.close_code: int | None = None
        self._ended = False
        self._expiry: asyncio.TimerHandle | None = None
        self._sweeps = 0
        self._finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def user(self) -> str:
        """The user id (``sub``), as presence and join/leave pushes show it."""
        return self.state.identity.subject

    @property
    def user_key(self) -> str:
        """Who the server API names as ``user``: the token's ``sub``."""
        return self.state.identity.subject

    def control(self, command: ControlCommand) -> None:
        """A server API command for this connection, taken in turn with its commands."""
        self.receive(command)

    def start(self) -> None:
        self.host.attach(self)
        log.info("open client=%s protocol=centrifugo peer=%s", self.id, self.peer)
        self.conn.attach(self)

    # -- client messages --------------------------------------------------------------------

    def receive(self, message: str | bytes | ControlCommand) -> None:
        if self._ended or self.state.closed is not None:
            return
        self._queue(message, self._work)

    async def _work(self) -> None:
        inbox = self._inbox
        try:
            while inbox and self.state.closed is None:
                message = self._take(inbox)
                if isinstance(message, str | bytes):
                    self.host.tally("client_messages")
                    command = self.framing.commands(message)
                    await self._runner.run(self.state.receive(command, time.time()))
                else:
                    await self._runner.run(server_command(self.state, message, time.time()))
                    self.rearm()  # a refresh may have moved the expiry
                await asyncio.sleep(0)  # a flood read at once must not stall the others
        except Exception:
            log.exception("client=%s: handling a command failed; closing", self.id)
            self.close(3004, "internal server error")
        finally:
            self._task = None

    # -- what the runner and the node use ---------------------------------------------------

    def send(self, body: bytes) -> None:
        self.outbound.send(self.framing.frame(body))

    def release_held(self) -> None:
        self.held.release()

    def close(self, code: int, reason: str) -> None:
        """Close with ``code``, said in this protocol (the node's 1001 is 3001 "shutdown")."""
        code = FEED_CLOSES.get(code, code)
        if self.close_code is None:
            self.close_code = code
        self.outbound.flush()
        self.conn.close(code, disconnect_reason(code, reason if code >= 3000 else ""))

    def overflow(self) -> None:
        self.host.tally("slow_disconnects")
        log.warning("client=%s is too slow (over %d bytes buffered)", self.id, self.outbound.limit)
        self.close_code = FEED_CLOSES[CloseCode.SLOW_CONSUMER]
        self.conn.close(self.close_code, "slow")

    def keepalive(self, now: float, timeout: float) -> None:
        """The node's sweep: ping (``{}``) a connected client, drop one that never connected."""
        if self.state.connected:
            self.outbound.send(self.framing.ping)
        else:
            self._sweeps += 1
            if self._sweeps >= 2 and self.state.closed is None:
                self.state.closed = 3502
                self.close(3502, "stale")
        self.conn.keepalive(now, timeout)

    def rearm(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        deadline = self.state.deadline()
        due = self._runner.refresher.due()  # a refresh hook is asked at the expiry itself
        if due is not None:
            deadline = due if deadline is None else min(deadline, due)
        if deadline is not None and not self._ended:
            delay = max(deadline - time.time(), 0.0)
            self._expiry = asyncio.get_running_loop().call_later(delay, self._tick)

    def _tick(self) -> None:
        self._expiry = None
        if self._runner.refresher.start(time.time()):
            return  # it rearms when the hooks answered
        for action in self.state.tick(time.time()):
            if isinstance(action, Close):
                log.info("client=%s: credential expired", self.id)
                self.close(action.code, action.reason)
        if self.state.closed is None:
            self.rearm()

    # -- the end ----------------------------------------------------------------------------

    def connection_lost(self) -> None:
        if self._ended:
            return
        self._ended = True
        if self._expiry is not None:
            self._expiry.cancel()
        self.outbound.flush()
        self.outbound.close()
        self.host.track(asyncio.ensure_future(self._cleanup()))

    async def _cleanup(self) -> None:
        try:
            await self._let_inbox_finish(self.host.close_timeout)
            channels = list(self.state.channels.channels)
            self.state.channels.channels.clear()
            await self.host.leave_all(self, channels)
        finally:
            self.host.detach(self, self.outbound.high_water)
            code = self.close_code or self.conn.close_received
            log.info("close client=%s user=%r code=%s", self.id, self.user, code)
            if self._hooks.hooks.disconnect and self.state.connected:
                event = DisconnectEvent(
                    self.id, self.framing.transport, "centrifugo", self.user, code
                )
                self.host.track(self._hooks.tell(event))
            if not self._finished.done():
                self._finished.set_result(None)

    async def wait_finished(self) -> None:
        await asyncio.shield(self._finished)
