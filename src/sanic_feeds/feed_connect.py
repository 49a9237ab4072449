"""Who a ``/feed/`` or ``/sse/`` connection is: its credential, then the connect hook.

Without a connect hook this is the authenticator alone. With one (an in-process hook or the
connect proxy), a connection that presents no token is not refused for it: the hook decides,
typically from a session cookie, and names the user. A token that is presented is verified
first and handed to the hook as the ``credential`` (the HTTP connect proxy then lets it in
without asking the backend, as Centrifugo does). What a refusal closes with is in
``hook_replies.feed_connect_close``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .auth import Authenticator, Handshake, Identity
from .errors import FeedsError
from .hook_replies import feed_connect_close, headers_of, identity_of
from .hook_runner import HookRunner
from .hooks import ConnectRequest, Denial


class ConnectRefused(FeedsError):
    """The connect hook said no: close with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Admitted:
    identity: Identity
    server_channels: tuple[str, ...] = ()
    """Channels the connect hook subscribes the connection to."""


async def identify(
    authenticator: Authenticator,
    hooks: HookRunner,
    handshake: Handshake,
    *,
    client: str,
    channel: str,
    transport: str,
) -> Admitted:
    """The connection's identity; raises ``AuthError`` (credential refused) or
    :class:`ConnectRefused` (the hook refused)."""
    if hooks.hooks.connect is None:
        return Admitted(await authenticator.authenticate(handshake))
    verified = authenticator.verifies_user
    credential: Identity | None = None
    fallback = Identity(user="")
    if handshake.token() is not None or not verified:
        identity = await authenticator.authenticate(handshake)
        if verified:
            credential = identity
        else:
            fallback = identity  # an unverified ?user= name: the hook may name the user
    request = ConnectRequest(
        client,
        transport,
        "feed",
        headers_of(handshake.headers),
        credential,
        channels=(channel,),
        name="" if verified else fallback.user,
    )
    answer = await hooks.connect(request)
    if isinstance(answer, Denial):
        raise ConnectRefused(*feed_connect_close(answer))
    identity = identity_of(answer, credential or fallback) or fallback
    return Admitted(identity, () if answer is None else answer.channels)
