"""What a hook's answer means to the client, on each protocol: the replies, errors and closes.

A denial (``hooks.py``) becomes, on ``/feed/`` (docs/hooks.md):

- a refused connect: close 1008 with the hook's message; a refused subscribe or publish: an
  ``error`` message with code ``refused``, the hook's code as ``refusal`` and its message (a
  refused join of the URL's channel closes with 1008);
- :class:`~sanic_feeds.hooks.Disconnect`: close with its code and reason;
- :class:`~sanic_feeds.hooks.Unavailable`: ``backend_unavailable`` (the URL's channel or a
  connect: close 4504);
- :class:`~sanic_feeds.hooks.HookFailed`: ``internal_error`` (a connect: close 1011).

On Centrifugo's protocol: a refusal is an error reply with the hook's code and message (a
connect too), a disconnect closes with its code, unavailable and failed are error 100
(internal, temporary: SDKs retry).

Pure code: no I/O, no clock. The drivers (``session_actions.py``, ``centrifugo_runner.py``)
carry these actions out.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from . import centrifugo_protocol as cp
from . import session_state as feed
from .auth import AuthError, Identity
from .centrifugo_actions import Action as CentrifugoAction
from .centrifugo_actions import Authenticate
from .centrifugo_state import CentrifugoState
from .hooks import KEEP, ConnectResult, Denial, Disconnect, HookFailed, Refuse
from .protocol import CloseCode, ErrorCode


def rewrite_chat(body: bytes, data: object) -> bytes:
    """A chat body (either protocol's: both travel as a feed ``chat``) with ``data`` as its
    ``message``; the body itself for ``KEEP``."""
    if data is KEEP:
        return body
    message = orjson.loads(body)
    message["message"] = data
    return orjson.dumps(message)


def chat_data(body: bytes) -> object:
    """What the client sent in a chat body."""
    message: dict[str, object] = orjson.loads(body)
    return message.get("message")


def identity_of(result: ConnectResult | None, credential: Identity | None) -> Identity | None:
    """Who a connection is once its connect hook answered ``result`` (None: as the credential
    says). The user the hook names becomes the user id and the name shown to others."""
    if result is None:
        return credential
    base = credential or Identity(user="")
    user = base.user if result.user is None else result.user
    subject = base.subject if result.user is None else result.user
    claims: dict[str, object] = dict(base.claims)
    if result.info is not None:
        claims["info"] = result.info
    if result.channels:
        claims["channels"] = list(result.channels)
    if result.subs:
        claims["subs"] = {channel: dict(options) for channel, options in result.subs.items()}
    expires_at = base.expires_at if result.expire_at is None else result.expire_at
    return Identity(
        user=user,
        subject=subject,
        channels=base.channels,
        publish=base.publish,
        expires_at=expires_at or None,
        claims=claims,
    )


# -- /feed/ ------------------------------------------------------------------------------------


def feed_connect_close(denial: Denial) -> tuple[int, str]:
    """The close of a ``/feed/`` connection whose connect hook said no."""
    match denial:
        case Disconnect(code=code, reason=reason):
            return code, reason
        case Refuse(message=message):
            return CloseCode.POLICY_VIOLATION, message or "refused"
        case HookFailed():
            return CloseCode.INTERNAL_ERROR, "internal error"
    return CloseCode.BACKEND_UNAVAILABLE, "backend unavailable, try again"


def feed_denied(
    state: feed.SessionState, channel: str, denial: Denial, *, joining: bool, opening: bool
) -> list[feed.Action]:
    """A ``/feed/`` subscribe (``joining``; ``opening``: the URL's channel) or chat refused."""
    if joining:
        state.channels.pop(channel, None)
    if isinstance(denial, Disconnect):
        return state.server_disconnect(denial.code, denial.reason)
    if opening:
        if isinstance(denial, Refuse):
            return state.server_disconnect(CloseCode.POLICY_VIOLATION, "forbidden: this channel")
        return state.server_disconnect(*feed_connect_close(denial))
    codec = state.codec
    if isinstance(denial, Refuse):
        text = denial.message or "Refused"
        body = codec.error(ErrorCode.REFUSED, text, channel, refusal=denial.code)
    elif isinstance(denial, HookFailed):
        body = codec.error(ErrorCode.INTERNAL_ERROR, "The server failed to handle it", channel)
    else:
        text = "The backend did not answer; try again"
        body = codec.error(ErrorCode.BACKEND_UNAVAILABLE, text, channel)
    return [feed.Send(body)]


# -- Centrifugo's protocol ---------------------------------------------------------------------


def centrifugo_error(ident: int, denial: Denial) -> bytes:
    """The error reply to command ``ident`` for a refusal, unavailable or failed hook."""
    if isinstance(denial, Refuse):
        code = denial.code
        if code in cp.ERROR_MESSAGES:
            return cp.error(ident, cp.ErrorReply(code), denial.message)
        return cp.custom_error(ident, code, denial.message)
    return cp.error(ident, cp.ErrorReply.INTERNAL)


def centrifugo_denied(state: CentrifugoState, ident: int, denial: Denial) -> list[CentrifugoAction]:
    """A subscribe, publish or RPC refused by its hook."""
    if isinstance(denial, Disconnect):
        return state.close_with(denial.code, denial.reason)
    return [feed.Send(centrifugo_error(ident, denial))]


def centrifugo_connect_denied(
    state: CentrifugoState, action: Authenticate, denial: Denial
) -> list[CentrifugoAction]:
    """A ``connect`` refused by the connect hook: the SDK starts over (or gives up, for a
    disconnect code of 4500 and more)."""
    if isinstance(denial, Disconnect):
        return state.close_with(denial.code, denial.reason)
    state.auth_failed(action, AuthError("unauthorized"))  # back to "not connecting"
    return [feed.Send(centrifugo_error(action.id, denial))]


def with_data(reply: bytes | None, method: str, data: object) -> bytes | None:
    """A subscribe reply with the hook's ``data`` in its result."""
    if reply is None or data is None:
        return reply
    frame: dict[str, dict[str, object]] = orjson.loads(reply)
    frame[method]["data"] = data
    return orjson.dumps(frame)


def headers_of(headers: Mapping[str, str]) -> dict[str, str]:
    """Request headers with lower-case names (the last of repeated ones)."""
    return {name.lower(): value for name, value in headers.items()}
