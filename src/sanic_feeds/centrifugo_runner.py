"""Carrying out what a Centrifugo connection's state machine decided, against the node.

The machine (``centrifugo_state.py``) returns actions; :class:`CentrifugoRunner` performs
them in order, awaiting the node, the token verifier or the application's handlers where an
action needs them, and hands each answer back to the machine with the action (so the reply
carries its command's id). It decides nothing itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Protocol

from . import centrifugo_protocol as cp
from .auth import AuthError, Identity
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
from .centrifugo_refresh import CentrifugoRefresher, without_ttl
from .centrifugo_state import CentrifugoState
from .centrifugo_wire import CentrifugoFraming
from .errors import BrokerUnavailable
from .history import JoinPosition
from .hook_replies import (
    centrifugo_connect_denied,
    centrifugo_denied,
    chat_data,
    identity_of,
    rewrite_chat,
    with_data,
)
from .hook_runner import NO_HOOKS, HookRunner
from .hooks import ConnectedEvent, ConnectRequest, Denial, PublishRequest, SubscribeRequest
from .host import Attached, Host
from .hub import Sink
from .outbound import Outbound
from .rpc import ClientCall, ClientHandlers
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
    __slots__ = (
        "_connect_data",
        "_handlers",
        "_headers",
        "_hooks",
        "_host",
        "_session",
        "_state",
        "_tokens",
        "_via",
        "refresher",
    )

    def __init__(
        self,
        host: Host,
        state: CentrifugoState,
        session: Driven,
        tokens: CentrifugoTokens,
        handlers: ClientHandlers,
        hooks: HookRunner = NO_HOOKS,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._host = host
        self._state = state
        self._session = session
        self._tokens = tokens
        self._handlers = handlers
        self._hooks = hooks
        self._headers = headers or {}
        self._connect_data: object = None
        """The connect hook's ``data`` for the connect reply."""
        self._via = session.framing.transport  # the transport's name in hook requests
        self.refresher = CentrifugoRefresher(host, state, session, hooks, self._headers, self._via)

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
                    reply = state.connect_reply(action, time.time())
                    if self.refresher.refreshes_connection:
                        reply = without_ttl(reply, "connect") or reply
                    session.send(with_data(reply, "connect", self._connect_data) or reply)
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

    async def _over_user_limit(self, user: str) -> bool:
        """Take a slot of ``--user-connection-limit`` for this connection (closing it when the
        user already holds them all), released when the connection ends."""
        slots = self._host.user_slots
        if not slots.limited or not user:
            return False
        refused = await slots.acquire(user)
        if refused is not None:
            self._session.close(*refused)  # 4403 reads 3504 "connection limit" here
            return True
        self._host.track(slots.release_when_finished(user, self._session.wait_finished()))
        return False

    async def _authenticate(self, action: Authenticate) -> None:
        hooked = not action.refresh and self._hooks.hooks.connect is not None
        identity: Identity | None = None
        if action.token or not hooked:
            try:
                identity = await self._tokens.connection(action.token)
            except AuthError as exc:
                log.info("client=%s: token refused: %s", self._session.id, exc.reason)
                await self.run(self._state.auth_failed(action, exc))
                return
        if hooked:
            request = ConnectRequest(
                self._state.client,
                self._via,
                "centrifugo",
                self._headers,
                identity,
                data=action.data,
            )
            answer = await self._hooks.connect(request)
            if isinstance(answer, Denial):
                await self.run(centrifugo_connect_denied(self._state, action, answer))
                return
            identity = identity_of(answer, identity) or Identity(user="")
            self._connect_data = None if answer is None else answer.data
        assert identity is not None  # verified above when no hook decides
        if not action.refresh and await self._over_user_limit(identity.subject):
            return
        actions = self._state.authenticated(action, identity, time.time())
        self._host.identified(self._session, "")  # the server API finds it by its user now
        if not action.refresh and self._hooks.hooks.connected and not self._state.closed:
            event = ConnectedEvent(self._state.client, self._via, "centrifugo", identity.subject)
            self._host.track(self._hooks.tell_connected(event))
        await self.run(actions)
        self._session.rearm()

    async def _join(self, action: JoinChannel) -> None:
        session, state = self._session, self._state
        data: object = None
        if not action.server_side and self._hooks.hooks.subscribe is not None:
            request = SubscribeRequest(
                state.client,
                self._via,
                "centrifugo",
                session.user,
                action.channel,
                data=action.data,
                headers=self._headers,
            )
            answer = await self._hooks.subscribe(request)
            if isinstance(answer, Denial):
                state.channels.channels.pop(action.channel, None)
                await self.run(centrifugo_denied(state, action.id, answer))
                return
            subscription = state.channels.channels.get(action.channel)
            if answer is not None and subscription is not None:
                data = answer.data
                if answer.info is not None:  # the hook's channel info for this subscription
                    subscription.info = answer.info
                if answer.expire_at:
                    subscription.expires_at = answer.expire_at
                    if self.refresher.refreshes_subscriptions:
                        self.refresher.server_channels.add(action.channel)
                    session.rearm()
        refreshed = action.channel in self.refresher.server_channels

        def acknowledge(position: JoinPosition) -> bytes | None:
            reply = state.channels.subscribed(action, position, time.time())
            if refreshed:
                reply = without_ttl(reply, "subscribe")
            return with_data(reply, "subscribe", data)

        outcome = await self._host.join_at(
            session,
            action.channel,
            since=action.since,
            epoch=action.epoch,
            wire=session.framing.wire(action.join_leave),
            sink=session.held if action.server_side else session.outbound,
            acknowledge=acknowledge,
            info=state.channels.info,
            chan_info=state.channels.chan_info(action.channel),
        )
        if outcome is not JoinOutcome.JOINED:
            await self.run(state.channels.join_failed(action, outcome))

    async def _publish(self, action: PublishTo) -> None:
        session, body = self._session, action.body
        if await self._host.user_wait(action.user_key) > 0:
            session.send(cp.error(action.id, ErrorReply.TOO_MANY_REQUESTS))
            return
        if self._hooks.hooks.publish is not None:
            request = PublishRequest(
                self._state.client,
                self._via,
                "centrifugo",
                session.user,
                action.channel,
                chat_data(body),
                headers=self._headers,
            )
            answer = await self._hooks.publish(request)
            if isinstance(answer, Denial):
                await self.run(centrifugo_denied(self._state, action.id, answer))
                return
            if answer is not None:
                body = rewrite_chat(body, answer.data)
        try:
            await self._host.publish_message(action.channel, body)
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

    def _call(self, data: object, method: str = "") -> ClientCall:
        s = self._state
        return ClientCall(
            s.client, s.identity.subject, data, s.channels.info, method, self._via, self._headers
        )

    async def _rpc(self, action: CallRpc) -> None:
        """An RPC handler (or the RPC proxy) is a hook: bounded in time, its errors its own
        (``RpcError`` answers with its code; anything else is logged and answers 100)."""
        session, state = self._session, self._state
        handler = self._handlers.rpc.get(action.method) or self._handlers.fallback
        if handler is None:
            session.send(cp.error(action.id, ErrorReply.METHOD_NOT_FOUND))
            return
        call = self._call(action.data, action.method)
        result = await self._hooks.call(handler, call, object, f"rpc {action.method!r}")
        if isinstance(result, Denial):
            await self.run(centrifugo_denied(state, action.id, result))
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
