"""Carrying out what a Centrifugo connection's state machine decided, against the node.

The machine (``centrifugo_state.py``) returns actions; :class:`CentrifugoRunner` performs
them in order, awaiting the node, the token verifier or the application's handlers where an
action needs them, and hands each answer back to the machine with the action (so the reply
carries its command's id). It decides nothing itself.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from . import centrifugo_protocol as cp
from .auth import AuthError
from .centrifugo_actions import (
    Action,
    Authenticate,
    CallRpc,
    Close,
    Deliver,
    FinishConnect,
    JoinChannel,
    Leave,
    PublishTo,
    ReadHistory,
    ReadPresence,
    Send,
    Tally,
)
from .centrifugo_auth import CentrifugoTokens
from .centrifugo_channels import history_reply, presence_reply
from .centrifugo_protocol import Disconnect, ErrorReply
from .centrifugo_state import CentrifugoState
from .centrifugo_wire import CentrifugoFraming
from .errors import BrokerUnavailable
from .history import JoinPosition
from .host import Attached, Host
from .hub import Sink
from .outbound import Outbound
from .rpc import ClientCall, ClientHandlers, RpcError
from .session_state import JoinOutcome

log = logging.getLogger(__name__)


class Driven(Attached, Protocol):
    """The session, as its runner uses it."""

    @property
    def id(self) -> str: ...

    @property
    def user(self) -> str: ...

    @property
    def outbound(self) -> Outbound: ...

    @property
    def framing(self) -> CentrifugoFraming:
        """How its transport carries frames: the wires it joins channels with."""

    @property
    def held(self) -> Sink:
        """Where server-side subscriptions' live messages wait for the connect reply."""

    def send(self, body: bytes) -> None: ...

    def overflow(self) -> None: ...

    def close(self, code: int, reason: str) -> None: ...

    def release_held(self) -> None:
        """The connect reply is out: let the held messages through."""

    def rearm(self) -> None:
        """The machine's deadline may have moved (a token was verified or refreshed)."""


class CentrifugoRunner:
    __slots__ = ("_handlers", "_host", "_session", "_state", "_tokens")

    def __init__(
        self,
        host: Host,
        state: CentrifugoState,
        session: Driven,
        tokens: CentrifugoTokens,
        handlers: ClientHandlers,
    ) -> None:
        self._host = host
        self._state = state
        self._session = session
        self._tokens = tokens
        self._handlers = handlers

    async def run(self, actions: list[Action]) -> None:
        session, host, state = self._session, self._host, self._state
        for action in actions:
            match action:
                case Send(body=body):
                    session.send(body)
                case Close(code=code, reason=reason):
                    session.close(code, reason)
                case Leave(channel=channel):
                    await host.leave(session, channel)
                case Tally(counter=counter):
                    host.tally(counter)
                case Authenticate():
                    await self._authenticate(action)
                case JoinChannel():
                    await self._join(action)
                case FinishConnect():
                    session.send(state.connect_reply(action, time.time()))
                    session.release_held()
                    await self.run(state.after_connect(time.time()))
                case PublishTo():
                    await self._publish(action)
                case ReadPresence():
                    await self._presence(action)
                case ReadHistory():
                    await self._history(action)
                case CallRpc():
                    await self._rpc(action)
                case Deliver(data=data):
                    await self._deliver(data)

    async def _authenticate(self, action: Authenticate) -> None:
        try:
            identity = await self._tokens.connection(action.token)
        except AuthError as exc:
            log.info("client=%s: token refused: %s", self._session.id, exc.reason)
            await self.run(self._state.auth_failed(action, exc))
            return
        actions = self._state.authenticated(action, identity, time.time())
        self._host.identified(self._session, "")  # the server API finds it by its user now
        await self.run(actions)
        self._session.rearm()

    async def _join(self, action: JoinChannel) -> None:
        session, state = self._session, self._state

        def acknowledge(position: JoinPosition) -> bytes | None:
            return state.channels.subscribed(action, position, time.time())

        outcome = await self._host.join_at(
            session,
            action.channel,
            since=action.since,
            epoch=action.epoch,
            wire=session.framing.wire(action.join_leave),
            sink=session.held if action.server_side else session.outbound,
            acknowledge=acknowledge,
        )
        if outcome is not JoinOutcome.JOINED:
            await self.run(state.channels.join_failed(action, outcome))

    async def _publish(self, action: PublishTo) -> None:
        session = self._session
        if await self._host.user_wait(action.user_key) > 0:
            session.send(cp.error(action.id, ErrorReply.TOO_MANY_REQUESTS))
            return
        try:
            await self._host.publish_message(action.channel, action.body)
        except BrokerUnavailable:
            session.send(cp.error(action.id, ErrorReply.INTERNAL))
            return
        session.send(cp.reply(action.id, "publish", {}))

    async def _presence(self, action: ReadPresence) -> None:
        try:
            members = await self._host.read_presence(action.channel)
        except BrokerUnavailable:
            self._session.send(cp.error(action.id, ErrorReply.INTERNAL))
            return
        self._session.send(presence_reply(action, members))

    async def _history(self, action: ReadHistory) -> None:
        try:
            page = await self._host.read_history(
                action.channel, action.since, action.epoch, action.limit
            )
        except BrokerUnavailable:
            self._session.send(cp.error(action.id, ErrorReply.INTERNAL))
            return
        self._session.send(history_reply(action, page))

    def _call(self, data: object) -> ClientCall:
        state = self._state
        return ClientCall(state.client, state.identity.subject, data, state.channels.info)

    async def _rpc(self, action: CallRpc) -> None:
        session, state = self._session, self._state
        handler = self._handlers.rpc.get(action.method)
        if handler is None:
            session.send(cp.error(action.id, ErrorReply.METHOD_NOT_FOUND))
            return
        try:
            result = await handler(self._call(action.data))
        except RpcError as exc:
            session.send(state.rpc_failed(action, exc.code, exc.message))
            return
        except Exception:  # the application's bug: the client gets 100, the log the traceback
            log.exception("client=%s: rpc %r failed", session.id, action.method)
            session.send(cp.error(action.id, ErrorReply.INTERNAL))
            return
        session.send(state.rpc_done(action, result))

    async def _deliver(self, data: object) -> None:
        handler = self._handlers.on_message
        if handler is None:
            self._session.close(Disconnect.NOT_AVAILABLE, "not available")
            return
        try:
            await handler(self._call(data))
        except Exception:  # the application's bug; a send has no reply to carry it
            log.exception("client=%s: message handler failed", self._session.id)
