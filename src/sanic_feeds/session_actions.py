"""Carrying out what a session's state machine decided, against the node and the client.

The state machine (``session_state.py``) returns actions; an :class:`ActionRunner` performs
them in order, awaiting the node where an action needs it (a join, a publish, a presence
read), and hands the node's answers back to the machine, whose reply actions it performs in
turn. It never decides anything itself. It also keeps the credential's expiry timer, which
the machine sets (at open, and when the server API refreshes the connection), and turns the
server API's commands (from the control channel) into the machine's inputs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from . import protocol
from .control import (
    ControlCommand,
    DisconnectUser,
    MessageUser,
    RefreshUser,
    SubscribeUser,
    UnsubscribeUser,
)
from .errors import BrokerUnavailable
from .hook_replies import chat_data, feed_denied, rewrite_chat
from .hook_runner import NO_HOOKS, HookRunner
from .hooks import ConnectedEvent, Denial, PublishRequest, RefreshRequest, SubscribeRequest
from .host import Host, Participant
from .protocol import CloseCode
from .session_state import (
    Action,
    Close,
    Expire,
    Join,
    JoinOutcome,
    Leave,
    Publish,
    ReadPresence,
    Resync,
    Send,
    SessionState,
    Tally,
)

log = logging.getLogger(__name__)

REFRESH_RETRY = 10.0
"""Seconds before asking a refresh hook again that did not answer."""


class Closable(Participant, Protocol):
    @property
    def close_code(self) -> int | None: ...

    def close(self, code: int, reason: str) -> None: ...

    def submit(self, step: Callable[[], list[Action]]) -> None:
        """Take the machine's answer to a server input in turn with the client's messages."""


class ActionRunner:
    """One per session: its host, its state machine, and the session itself."""

    __slots__ = (
        "_expiry",
        "_gone",
        "_headers",
        "_hooks",
        "_host",
        "_session",
        "_state",
        "_transport",
    )

    def __init__(
        self,
        host: Host,
        state: SessionState,
        session: Closable,
        hooks: HookRunner = NO_HOOKS,
        transport: str = "websocket",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._host = host
        self._state = state
        self._session = session
        self._hooks = hooks
        self._transport = transport
        self._headers = headers or {}
        self._expiry: asyncio.TimerHandle | None = None
        self._gone = False

    async def open(
        self,
        channel: str,
        since: object,
        epoch: object,
        also: Sequence[tuple[str, int | None, str | None]],
        expires_in: float | None,
    ) -> None:
        """The opening: the URL channel (welcome, recovery), then each of ``also``."""
        state = self._state
        if self._hooks.hooks.connected:
            event = ConnectedEvent(self._session.id, self._transport, "feed", self._user_id())
            self._host.track(self._hooks.tell_connected(event))
        actions = state.open(
            channel,
            since,
            epoch,
            now=time.monotonic(),
            draining=self._host.draining,
            expires_in=expires_in,
        )
        self.expire(state.expires_at)
        await self.run(actions)
        for other, other_since, other_epoch in also:
            if self._session.close_code is not None:
                break
            await self.run(state.command(protocol.Subscribe(other, other_since, other_epoch)))

    def expire(self, at: float | None) -> None:
        """Arm the expiry timer for ``at`` (``time.monotonic``), or disarm it (None)."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if at is not None and not self._gone:
            delay = max(at - time.monotonic(), 0.0)
            self._expiry = asyncio.get_running_loop().call_later(delay, self._tick)

    def ended(self) -> None:
        """The connection is gone: no timer may fire any more."""
        self.expire(None)
        self._gone = True

    def control(self, command: ControlCommand) -> None:
        """A server API command for this connection: disconnects and expiry changes at once,
        joins and leaves in turn with the client's messages (a join must not outlive the
        connection's end, which waits for them)."""
        state = self._state
        match command:
            case SubscribeUser(channel=channel, since=since, epoch=epoch):
                self._session.submit(lambda: state.server_subscribe(channel, since, epoch))
            case UnsubscribeUser(channel=channel):
                self._session.submit(lambda: state.server_unsubscribe(channel))
            case DisconnectUser(code=code, reason=reason):
                log.info("client=%s disconnected by the server API (%d)", self._session.id, code)
                self._now(state.server_disconnect(code, reason))
            case RefreshUser(expired=expired, expire_at=expire_at):
                expires_in = None if expire_at is None else expire_at - time.time()
                self._now(state.server_refresh(time.monotonic(), expired, expires_in))
            case MessageUser(data=data):
                if state.closed is None:
                    self._session.send(protocol.message(data))

    def _now(self, actions: list[Action]) -> None:
        """Carry out actions that need no await (a close, an expiry change)."""
        for action in actions:
            if isinstance(action, Close):
                self._session.close(action.code, action.reason)
            elif isinstance(action, Expire):
                self.expire(action.at)

    async def run(self, actions: list[Action]) -> None:
        session, host, state = self._session, self._host, self._state
        for action in actions:
            match action:
                case Send(body=body):
                    session.send(body)
                case Publish(channel=channel, body=body, user_key=user_key):
                    await self._publish(channel, body, user_key)
                case Join(channel=channel, since=since, epoch=epoch, greeting=greeting, ack=ack):
                    if ack is None and not await self._may_join(channel, greeting is not None):
                        continue
                    outcome = await host.join(session, channel, since, epoch, greeting, ack)
                    if outcome is not JoinOutcome.JOINED:
                        await self.run(state.join_failed(channel, greeting is not None, outcome))
                case Resync(channel=channel, since=since, epoch=epoch):
                    await host.resync(session, channel, since, epoch)
                case Leave(channel=channel):
                    await host.leave(session, channel)
                case ReadPresence(channel=channel):
                    await self.run(state.presence_read(channel, await self._members(channel)))
                case Close(code=code, reason=reason):
                    if code == CloseCode.RATE_LIMITED:
                        log.info(
                            "client=%s closed after repeated rate-limit violations", session.id
                        )
                    session.close(code, reason)
                case Tally(counter=counter):
                    host.tally(counter)
                case Expire(at=at):
                    self.expire(at)

    def _tick(self) -> None:
        """The credential's expiry timer fired: the only actions then are closes (or, with a
        refresh hook, asking it for a new expiry first)."""
        self._expiry = None
        at = self._state.expires_at
        if self._hooks.hooks.refresh is not None and at is not None and time.monotonic() >= at:
            if self._state.closed is None and not self._gone:
                self._host.track(asyncio.ensure_future(self._refresh()))
            return
        actions = self._state.tick(time.monotonic())
        for action in actions:
            if isinstance(action, Close):
                log.info("client=%s: credential expired", self._session.id)
                self._session.close(action.code, action.reason)
        if not actions and self._state.closed is None:
            self.expire(self._state.expires_at)  # woken a hair early: wait for the rest

    async def _refresh(self) -> None:
        """Ask the refresh hook; no answer (or a failure) asks again later, the connection
        stays meanwhile; ``None`` lets the credential run out."""
        state = self._state
        request = RefreshRequest(
            self._session.id, self._transport, "feed", self._user_id(), self._headers
        )
        answer = await self._hooks.refresh(request)
        if self._gone or state.closed is not None:
            return
        if isinstance(answer, Denial):
            state.expires_at = time.monotonic() + REFRESH_RETRY
            self.expire(state.expires_at)
            return
        expired = answer is None or answer.expired
        at = None if answer is None else answer.expire_at
        expires_in = None if at is None else at - time.time()
        if not expired:
            log.info("client=%s: connection refreshed by the refresh hook", self._session.id)
        self._now(state.server_refresh(time.monotonic(), expired, expires_in))

    async def _members(self, channel: str) -> list[dict[str, object]] | None:
        try:
            return await self._host.read_presence(channel)
        except BrokerUnavailable:
            return None

    def _user_id(self) -> str:
        return self._state.identity.subject or self._state.user

    async def _may_join(self, channel: str, opening: bool) -> bool:
        """Ask the subscribe hook (joins the server makes are not asked)."""
        if self._hooks.hooks.subscribe is None:
            return True
        request = SubscribeRequest(
            self._session.id,
            self._transport,
            "feed",
            self._user_id(),
            channel,
            headers=self._headers,
        )
        answer = await self._hooks.subscribe(request)
        if not isinstance(answer, Denial):
            return True
        await self.run(feed_denied(self._state, channel, answer, joining=True, opening=opening))
        return False

    async def _publish(self, channel: str, body: bytes, user_key: str) -> None:
        wait = await self._host.user_wait(user_key)
        if wait > 0:
            await self.run(self._state.user_limited(channel, wait))
            return
        if self._hooks.hooks.publish is not None:
            request = PublishRequest(
                self._session.id,
                self._transport,
                "feed",
                self._user_id(),
                channel,
                chat_data(body),
                headers=self._headers,
            )
            answer = await self._hooks.publish(request)
            if isinstance(answer, Denial):
                denied = feed_denied(self._state, channel, answer, joining=False, opening=False)
                await self.run(denied)
                return
            if answer is not None:
                body = rewrite_chat(body, answer.data)
        try:
            await self._host.publish_message(channel, body)
        except BrokerUnavailable:
            await self.run(self._state.publish_refused(channel))
