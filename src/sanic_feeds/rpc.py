"""Application handlers for what Centrifugo clients send the server itself: RPC calls and
asynchronous messages.

``feeds.rpc("name")`` (or ``feeds.add_rpc_handler("name", fn)``) registers an async function
that answers the ``rpc`` command of that method; its return value (any JSON value) is the
reply's ``data``. Raise :class:`RpcError` to answer with an error code of your own; any other
exception answers error 100 (internal) and is logged. ``feeds.on_message(fn)`` receives the
``send`` command's data (no reply). Handlers run in the connection's command order: a slow
handler holds up that connection's next commands, not anybody else's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from .errors import FeedsError


@dataclass(frozen=True)
class ClientCall:
    """Who called, and with what."""

    client: str
    """The connection's client id."""
    user: str
    """The user id (``sub``); ``""`` for an anonymous connection."""
    data: object
    """The JSON value the client sent."""
    info: object = None
    """The connection's ``info`` claim, if its token had one."""
    method: str = ""
    """The RPC method called (for a handler of every method, such as the RPC proxy)."""
    transport: str = "websocket"
    """The connection's transport (``websocket``, ``sse``, ``http_stream``)."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """The connection request's headers (lower-case names)."""


RpcHandler = Callable[[ClientCall], Awaitable[object]]
MessageHandler = Callable[[ClientCall], Awaitable[None]]


class RpcError(FeedsError):
    """Raised by an RPC handler: the client gets error ``code`` with ``message``.

    Use Centrifugo's codes where one fits (103 permission denied, 107 bad request, 108 not
    available, ...); codes of your own should be 1000 or more, clear of Centrifugo's.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class ClientHandlers:
    """The handlers a ``Feeds`` has registered (looked up per call: add them any time)."""

    rpc: dict[str, RpcHandler] = field(default_factory=dict)
    on_message: MessageHandler | None = None
    fallback: RpcHandler | None = None
    """Answers the methods no handler of its own answers (the RPC proxy)."""
