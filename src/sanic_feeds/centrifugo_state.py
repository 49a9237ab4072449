"""One Centrifugo client connection as a pure state machine: frames in, actions out.

Inputs are client frames (``receive``), the node's answers to the actions it asked for (a
token was verified, a join held, presence or history was read, an RPC returned) and time
(``tick``). Outputs are actions (``centrifugo_actions.py``) for the driver
(``centrifugo_session.py``), each carrying the id of the command it answers. The machine
decides every reply, error code and disconnect code a client sees (docs/centrifugo.md):

- a frame that is not JSON commands, a command before ``connect``, a second ``connect``:
  disconnect 3501 (bad request; SDKs do not reconnect);
- a bad field in a known command: error 107 for that command, the connection goes on;
- an unknown command: error 104;
- an invalid token: disconnect 3500; an expired one: error 109 (SDKs fetch a new one).

Channel commands are in ``centrifugo_channels.py``. What it must never do: await, touch a
socket, read a clock (``now`` is Unix time, passed in), or know about the node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import centrifugo_protocol as cp
from .auth import AuthError, Identity, TokenExpired
from .centrifugo_actions import (
    Action,
    Authenticate,
    CallRpc,
    Close,
    Deliver,
    FinishConnect,
    Send,
    Tally,
)
from .centrifugo_auth import server_subscriptions
from .centrifugo_channels import ChannelCommands, SubscriptionTokens, bad_request
from .centrifugo_protocol import BadFrame, Disconnect, ErrorReply, Pong, Request, Unknown
from .permissions import Refusal, options_of
from .ratelimit import TokenBucket
from .session_state import Limits

VERSION = "sanic-feeds"
"""The server ``version`` in connect replies."""

EXPIRED_CLOSE_DELAY = 25.0
"""Seconds past its credential's expiry that a connection gets to ``refresh`` before it is
closed with 3005 (Centrifugo's ``client.expired_close_delay``)."""


@dataclass(frozen=True)
class Settings:
    """What a Centrifugo connection is told and held to, fixed per server."""

    ping_interval: int = 25
    """Seconds between the server's pings (0: none); SDKs answer each with a pong."""
    tokens: SubscriptionTokens | None = None
    expired_close_delay: float = EXPIRED_CLOSE_DELAY


@dataclass(slots=True)
class CentrifugoState:
    """The protocol state of one connection: connecting, connected, and its subscriptions."""

    client: str
    limits: Limits = field(default_factory=Limits)
    settings: Settings = field(default_factory=Settings)
    channels: ChannelCommands = field(init=False)
    connected: bool = False
    connecting: bool = False
    closed: int | None = None
    expires_at: float | None = None
    """Unix time the connection's credential runs out (``refresh`` moves it)."""
    emulation: dict[str, str] | None = None
    """``session`` and ``node`` for the connect reply of an emulated connection (the SDK sends
    its later commands to ``/emulation`` with them)."""
    _server_data: dict[str, object] = field(default_factory=dict)
    """Per server-side channel, the ``data`` of its ``subs`` claim entry."""
    _pending: list[cp.Frame] = field(default_factory=list)
    """Commands that arrived behind ``connect`` while it was being verified."""
    _bucket: TokenBucket | None = None
    _violations: int = 0

    def __post_init__(self) -> None:
        self.channels = ChannelCommands(
            self.client, self.limits.permissions, self.settings.tokens, self.limits.max_channels
        )

    @property
    def identity(self) -> Identity:
        return self.channels.identity

    # -- client frames ----------------------------------------------------------------------

    def receive(self, raw: str | bytes, now: float) -> list[Action]:
        """One whole client message (WebSocket text; binary is not JSON, so 3501)."""
        if self.closed is not None:
            return []
        if not isinstance(raw, str):
            return self._close(Disconnect.BAD_REQUEST, "binary frames are not JSON commands")
        try:
            frames = cp.parse_frame(raw)
        except BadFrame as exc:
            return self._close(Disconnect.BAD_REQUEST, f"bad request: {exc}")
        if self._bucket is not None and self._bucket.take(now) > 0:
            return self._over_rate(frames)
        return self._handle(frames, now)

    def _handle(self, frames: list[cp.Frame], now: float) -> list[Action]:
        actions: list[Action] = []
        for number, frame in enumerate(frames):
            if self.closed is not None:
                break
            if self.connecting:
                # SDKs send their subscribes right behind connect, in the same frame: they
                # are handled once the connection is up (see after_connect).
                self._pending = frames[number:]
                break
            if isinstance(frame, Pong):
                continue
            if isinstance(frame, Unknown):
                actions.append(Send(cp.error(frame.id, ErrorReply.METHOD_NOT_FOUND)))
                continue
            actions.extend(self._request(frame, now))
        return actions

    def after_connect(self, now: float) -> list[Action]:
        """The commands that came behind ``connect`` (the connect reply is out)."""
        pending, self._pending = self._pending, []
        return self._handle(pending, now)

    def _request(self, request: Request, now: float) -> list[Action]:
        ident, method, params = request.id, request.method, request.params
        if method == "connect":
            if self.connected or self.connecting:
                return self._close(Disconnect.BAD_REQUEST, "bad request: connected already")
            token = params.get("token", "")
            if not isinstance(token, str):
                return self._close(Disconnect.BAD_REQUEST, "bad request: token")
            self.connecting = True
            return [Authenticate(ident, token, data=params.get("data"))]
        if not self.connected:
            return self._close(Disconnect.BAD_REQUEST, "bad request: connect first")
        channels = self.channels
        match method:
            case "subscribe":
                return channels.subscribe(ident, params, now)
            case "unsubscribe":
                return channels.unsubscribe(ident, params)
            case "publish":
                return channels.publish(ident, params, now)
            case "presence" | "presence_stats":
                return channels.presence(ident, params, stats=method == "presence_stats")
            case "history":
                return channels.history(ident, params)
            case "sub_refresh":
                return channels.sub_refresh(ident, params, now)
            case "ping":
                return [Send(cp.reply(ident, "ping", {}))]
            case "send":
                return [Deliver(params.get("data"))]
            case "rpc":
                rpc_method = params.get("method", "")
                if not isinstance(rpc_method, str):
                    return [bad_request(ident)]
                return [CallRpc(ident, rpc_method, params.get("data"))]
            case "refresh":
                token = params.get("token")
                if not isinstance(token, str) or not token:
                    return [bad_request(ident)]
                return [Authenticate(ident, token, refresh=True)]
        return [Send(cp.error(ident, ErrorReply.METHOD_NOT_FOUND))]  # pragma: no cover

    # -- answers from the node --------------------------------------------------------------

    def authenticated(self, action: Authenticate, identity: Identity, now: float) -> list[Action]:
        """The token of ``action`` stands for ``identity``."""
        expires_at = identity.expires_at
        if expires_at is not None and expires_at <= now:
            return self.auth_failed(action, TokenExpired())
        if action.refresh:
            if identity.subject != self.identity.subject:
                return self._close(Disconnect.INVALID_TOKEN, "invalid token: another user")
            self.expires_at = expires_at
            result = {"client": self.client, "version": VERSION, **self._ttl(now)}
            return [Send(cp.reply(action.id, "refresh", result))]
        try:
            server_side = server_subscriptions(identity.claims)
        except AuthError as exc:
            return self._close(Disconnect.INVALID_TOKEN, exc.reason)
        self.channels.identity = identity
        self.channels.info = identity.claims.get("info")
        self.expires_at = expires_at
        if self.limits.message_rate is not None:
            self._bucket = TokenBucket(self.limits.message_rate, now)
        actions: list[Action] = []
        for channel in server_side.channels:
            if isinstance(options_of(self.limits.permissions.namespaces, channel), Refusal):
                return self._close(Disconnect.INVALID_TOKEN, f"invalid token: channel {channel!r}")
            actions.append(self.channels.add_server_side(channel, server_side.info.get(channel)))
        self._server_data = dict(server_side.data)
        return [*actions, FinishConnect(action.id)]

    def auth_failed(self, action: Authenticate, error: AuthError) -> list[Action]:
        if not action.refresh:
            self.connecting = False
            self._pending = []  # the SDK starts over with a new connection
        if isinstance(error, TokenExpired):
            return [Send(cp.error(action.id, ErrorReply.TOKEN_EXPIRED))]
        if error.reason == "unauthorized":
            return [Send(cp.error(action.id, ErrorReply.UNAUTHORIZED))]
        return self._close(Disconnect.INVALID_TOKEN, "invalid token")

    def connect_reply(self, action: FinishConnect, now: float) -> bytes:
        """Every server-side subscription holds: the connection is up."""
        self.connecting, self.connected = False, True
        result: dict[str, object] = {"client": self.client, "version": VERSION}
        result.update(self._ttl(now))
        if self.emulation is not None:
            result.update(self.emulation)
        if self.settings.ping_interval > 0:
            result.update(ping=self.settings.ping_interval, pong=True)
        subs = self.channels.server_results
        if subs:
            for channel, data in self._server_data.items():
                if channel in subs:
                    subs[channel]["data"] = data
            result["subs"] = subs
        self.channels.announce_server_side = True
        return cp.reply(action.id, "connect", result)

    def rpc_done(self, action: CallRpc, result: object) -> bytes:
        return cp.reply(action.id, "rpc", {"data": result})

    def rpc_failed(self, action: CallRpc, code: int, message: str) -> bytes:
        if code in cp.ERROR_MESSAGES:
            return cp.error(action.id, ErrorReply(code), message)
        # An application's own code (Centrifugo lets proxies return any).
        return cp.custom_error(action.id, code, message)

    # -- time -------------------------------------------------------------------------------

    def deadline(self) -> float | None:
        """When :meth:`tick` next has something to do (Unix time), or None."""
        times = [s.expires_at for s in self.channels.values() if s.expires_at is not None]
        if self.expires_at is not None:
            times.append(self.expires_at)
        return min(times) + self.settings.expired_close_delay if times else None

    def tick(self, now: float) -> list[Action]:
        """Close a connection whose credential (or a subscription's) ran out unrefreshed."""
        delay = self.settings.expired_close_delay
        if self.expires_at is not None and now >= self.expires_at + delay:
            return self._close(Disconnect.EXPIRED, "connection expired")
        if self.channels.expired(now, delay):
            return self._close(Disconnect.SUB_EXPIRED, "subscription expired")
        return []

    # -- helpers ----------------------------------------------------------------------------

    def _ttl(self, now: float) -> dict[str, object]:
        if self.expires_at is None:
            return {}
        return {"expires": True, "ttl": max(int(self.expires_at - now), 1)}

    def _over_rate(self, frames: list[cp.Frame]) -> list[Action]:
        self._violations += 1
        most = self.limits.rate_limit_violations
        if most and self._violations >= most:
            return [Tally("rate_limited"), *self._close(Disconnect.TOO_MANY_REQUESTS, "")]
        replies: list[Action] = [Tally("rate_limited")]
        for frame in frames:
            if isinstance(frame, Request | Unknown) and frame.id:
                replies.append(Send(cp.error(frame.id, ErrorReply.TOO_MANY_REQUESTS)))
        return replies

    def close_with(self, code: int, reason: str) -> list[Action]:
        """Close with ``code`` (once; nothing after the first close)."""
        if self.closed is not None:
            return []
        self.closed = code
        return [Close(code, cp.disconnect_reason(code, reason))]

    _close = close_with
