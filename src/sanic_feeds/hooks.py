"""Your backend in the loop: the hooks a ``Feeds`` calls, and what they ask and answer.

A hook is an async callable the application registers (``@feeds.on_connect``,
``@feeds.on_subscribe``, ``@feeds.on_publish``, ``@feeds.on_refresh``,
``@feeds.on_disconnect``; RPC handlers are ``feeds.rpc``). It takes a request object and
answers one of:

- ``None``: allowed, nothing changed;
- a result object (:class:`ConnectResult`, :class:`SubscribeResult`, :class:`PublishResult`,
  :class:`RefreshResult`): allowed, with what it sets (the user, the data, ``info``...);
- :class:`Refuse` (returned or raised): refused with the hook's code and message;
- :class:`Disconnect` (returned or raised): the connection is closed with its code and reason;
- :class:`Unavailable` (raised): the backend cannot answer now; the client gets the documented
  temporary error and may retry. A hook that takes longer than ``hook_timeout`` is treated so.

Any other exception is the application's bug: it is logged, and that one request is refused
with an internal error (:class:`HookFailed`). Both client protocols (``/feed/`` and Centrifugo's
on ``/connection/websocket``) and Server-Sent Events call the same hooks, through
:mod:`~sanic_feeds.hook_runner`; the HTTP proxies (:mod:`~sanic_feeds.http_proxy`) are hooks
too. docs/hooks.md says what each answer does on each protocol.

Pure data: no I/O.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar

from .auth import Identity
from .rpc import RpcError

__all__ = [
    "KEEP",
    "ConnectRequest",
    "ConnectResult",
    "ConnectedEvent",
    "Denial",
    "Disconnect",
    "DisconnectEvent",
    "HookFailed",
    "Hooks",
    "PublishRequest",
    "PublishResult",
    "RefreshRequest",
    "RefreshResult",
    "Refuse",
    "SubRefreshRequest",
    "SubscribeRequest",
    "SubscribeResult",
    "Unavailable",
]


# -- refusals --------------------------------------------------------------------------------


class Denial(RpcError):
    """A hook's "no" (the base of the four answers below); ``code`` and ``message`` are what
    the client is told."""


class Refuse(Denial):
    """Refuse this request with ``code`` (Centrifugo asks for 400-1999 from proxies) and
    ``message``. The connection stays open, except a refused connect."""


class Disconnect(Denial):
    """Close the connection with ``code`` (4000-4499: the client may reconnect; 4500-4999: it
    should not) and ``reason`` (at most 32 bytes reach Centrifugo's SDKs)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(code, reason)

    @property
    def reason(self) -> str:
        return self.message


class Unavailable(Denial):
    """The backend could not answer (down, too slow, a malformed answer): a temporary error."""

    def __init__(self, message: str = "backend unavailable") -> None:
        super().__init__(0, message)


class HookFailed(Denial):
    """The hook raised something else: logged, and the request refused as an internal error."""

    def __init__(self, message: str = "internal error") -> None:
        super().__init__(0, message)


# -- requests and results ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """A connection is opening (``/feed/``: after the upgrade; Centrifugo: its ``connect``)."""

    client: str
    """The connection's id."""
    transport: str
    """``websocket`` or ``sse``."""
    protocol: str
    """``feed`` (``/feed/``, ``/sse/``) or ``centrifugo``."""
    headers: Mapping[str, str]
    """The upgrade request's headers (lower-case names), cookies included."""
    credential: Identity | None = None
    """Who a verified credential (a token) says this is; None when none was presented."""
    data: object = None
    """What the client sent with its connect (Centrifugo's ``data``; ``/feed/``: None)."""
    channels: tuple[str, ...] = ()
    """``/feed/``: the channel of the URL; Centrifugo: the server-side channels it asks for."""
    name: str = ""
    """``/feed/``: the unverified ``?user=`` name, when authentication is off."""


@dataclass(frozen=True, slots=True)
class ConnectResult:
    """Let the connection in, as ``user`` (None: as its credential says)."""

    user: str | None = None
    expire_at: float | None = None
    """Unix time the connection expires (then the refresh hook is asked); None: never."""
    info: object = None
    """Connection info, sent with its publications (and in presence on Centrifugo's side)."""
    channels: tuple[str, ...] = ()
    """Server-side subscriptions to make (joined without the subscribe hook)."""
    data: object = None
    """Centrifugo's protocol: sent to the client in the connect reply."""
    subs: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    """Centrifugo's protocol: server-side subscriptions with options, as a connection token's
    ``subs`` claim: per channel its ``info`` (the subscription's channel info) and ``data``
    (sent with it in the connect reply). Joined with ``channels``."""


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    client: str
    transport: str
    protocol: str
    user: str
    """The user id (credential subject, else the name); ``""`` for anonymous."""
    channel: str
    data: object = None
    """Centrifugo: the subscribe command's ``data``."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """The connection request's headers (lower-case names), for the HTTP proxies."""


@dataclass(frozen=True, slots=True)
class SubscribeResult:
    info: object = None
    """Channel info for this subscriber (Centrifugo: ``chan_info``)."""
    data: object = None
    """Sent in the subscribe reply (Centrifugo protocol)."""
    expire_at: float | None = None
    """Unix time the subscription expires (Centrifugo: then ``sub_refresh``)."""


KEEP: Final = object()
""":attr:`PublishResult.data` default: publish what the client sent."""


@dataclass(frozen=True, slots=True)
class PublishRequest:
    client: str
    transport: str
    protocol: str
    user: str
    channel: str
    data: object
    """What the client sent (``/feed/``: a chat's ``message``; Centrifugo: ``data``)."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """The connection request's headers (lower-case names), for the HTTP proxies."""


@dataclass(frozen=True, slots=True)
class PublishResult:
    data: object = KEEP
    """What every member gets instead of the client's data (``KEEP``: unchanged)."""


@dataclass(frozen=True, slots=True)
class RefreshRequest:
    """The connection's expiry (``expire_at`` of its connect) has come."""

    client: str
    transport: str
    protocol: str
    user: str
    headers: Mapping[str, str] = field(default_factory=dict)
    """The connection request's headers (lower-case names), for the HTTP proxies."""


@dataclass(frozen=True, slots=True)
class RefreshResult:
    expired: bool = False
    """Close the connection now (``/feed/``: 4401; Centrifugo: 3005)."""
    expire_at: float | None = None
    """The new expiry (Unix time); None: never again."""


@dataclass(frozen=True, slots=True)
class SubRefreshRequest:
    """A subscription's expiry (``expire_at`` of its subscribe hook) has come (Centrifugo's
    protocol)."""

    client: str
    transport: str
    protocol: str
    user: str
    channel: str
    headers: Mapping[str, str] = field(default_factory=dict)
    """The connection request's headers (lower-case names), for the HTTP proxies."""


@dataclass(frozen=True, slots=True)
class ConnectedEvent:
    """A connection was let in (a notification: nothing to answer)."""

    client: str
    transport: str
    protocol: str
    user: str


@dataclass(frozen=True, slots=True)
class DisconnectEvent:
    """A connection ended (a notification: nothing to answer)."""

    client: str
    transport: str
    protocol: str
    user: str
    code: int | None
    """Its close code, if one was sent or received."""


# -- the registry ---------------------------------------------------------------------------------

Req = TypeVar("Req")
Res = TypeVar("Res")

Hook = Callable[[Req], Awaitable[Res | Denial | None]]
"""A hook: the request in, an answer (or raise a :class:`Denial`)."""

ConnectHook = Hook[ConnectRequest, ConnectResult]
SubscribeHook = Hook[SubscribeRequest, SubscribeResult]
PublishHook = Hook[PublishRequest, PublishResult]
RefreshHook = Hook[RefreshRequest, RefreshResult]
SubRefreshHook = Hook[SubRefreshRequest, RefreshResult]
DisconnectHook = Callable[[DisconnectEvent], Awaitable[None]]
ConnectedHook = Callable[[ConnectedEvent], Awaitable[None]]


@dataclass
class Hooks:
    """The hooks a ``Feeds`` has (looked up per request: register them any time)."""

    connect: ConnectHook | None = None
    subscribe: SubscribeHook | None = None
    publish: PublishHook | None = None
    refresh: RefreshHook | None = None
    sub_refresh: SubRefreshHook | None = None
    disconnect: list[DisconnectHook] = field(default_factory=list)
    """Every one is told (the event webhooks are one of them)."""
    connected: list[ConnectedHook] = field(default_factory=list)
    """Told of every connection let in (the event webhooks use it)."""

    # The decorators ``Feeds`` hands out as ``feeds.on_connect`` and so on.

    def on_connect(self, hook: ConnectHook) -> ConnectHook:
        """``hook(ConnectRequest)`` decides who may connect, and as whom."""
        self.connect = hook
        return hook

    def on_subscribe(self, hook: SubscribeHook) -> SubscribeHook:
        """``hook(SubscribeRequest)`` decides who may join a channel."""
        self.subscribe = hook
        return hook

    def on_publish(self, hook: PublishHook) -> PublishHook:
        """``hook(PublishRequest)`` may refuse a client's message or replace its data."""
        self.publish = hook
        return hook

    def on_refresh(self, hook: RefreshHook) -> RefreshHook:
        """``hook(RefreshRequest)`` prolongs (or ends) a connection whose expiry came."""
        self.refresh = hook
        return hook

    def on_sub_refresh(self, hook: SubRefreshHook) -> SubRefreshHook:
        """``hook(SubRefreshRequest)`` prolongs (or ends) a subscription whose expiry came."""
        self.sub_refresh = hook
        return hook

    def on_disconnect(self, hook: DisconnectHook) -> DisconnectHook:
        """``hook(DisconnectEvent)`` is told of every connection's end."""
        self.disconnect.append(hook)
        return hook
