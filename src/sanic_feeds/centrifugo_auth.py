"""Connection and subscription tokens of the Centrifugo endpoint, checked with the server's auth.

Centrifugo's SDKs send a connection token in the ``connect`` command (and a new one in
``refresh``), and a subscription token in ``subscribe`` (and ``sub_refresh``). They are
verified with the server's authenticator, as ``/feed/`` credentials are. For JWTs the claims
mean what they mean in Centrifugo (docs/centrifugo.md): ``sub`` is the user id (``""``:
anonymous), ``info`` the connection's info, ``channels`` and ``subs`` the *server-side
subscriptions* made at connect (on ``/feed/`` a ``channels`` claim lists the channels a
connection may join instead), ``expire_at`` the connection's end when it differs from ``exp``.

Other authenticators (static tokens, your own) get the token as a bearer credential. This
module never logs a token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .auth import Authenticator, AuthError, Handshake, Identity, JwtTokens, NoAuth, claim_patterns


@dataclass(frozen=True)
class SubscriptionGrant:
    """What a valid subscription token says."""

    expires_at: float | None = None
    """Unix time the subscription must be refreshed by (``sub_refresh``); None: never."""
    info: object = None
    """Channel info (``chan_info`` of the subscriber in pushes)."""


@dataclass(frozen=True)
class ServerSubscriptions:
    """Channels a connection token subscribes the connection to at connect."""

    channels: tuple[str, ...] = ()
    data: Mapping[str, object] = field(default_factory=dict)
    """Per channel, the ``data`` its ``subs`` entry gives to the connect reply."""
    info: Mapping[str, object] = field(default_factory=dict)
    """Per channel, the ``info`` of its ``subs`` entry: the subscription's channel info."""


class CentrifugoTokens:
    """The server's authenticator, as the Centrifugo endpoint uses it."""

    def __init__(self, authenticator: Authenticator, *, insecure: bool = False) -> None:
        self._authenticator = authenticator
        self._jwt = authenticator if isinstance(authenticator, JwtTokens) else None
        self._anonymous = insecure or isinstance(authenticator, NoAuth)

    async def connection(self, token: str) -> Identity:
        """The identity a connect (or refresh) token stands for; ``AuthError`` (or its
        ``TokenExpired``) when it stands for none. No token: anonymous where allowed."""
        if not token:
            if self._anonymous:
                return Identity(user="")
            raise AuthError("unauthorized")
        if self._jwt is None:
            return await self._authenticator.authenticate(
                Handshake(headers={"authorization": f"Bearer {token}"}, query={"token": token})
            )
        claims = self._jwt.claims(token)
        subject = claims["sub"]
        if not isinstance(subject, str):
            raise AuthError("invalid token: sub must be a string")
        return Identity(
            user=subject,
            subject=subject,
            publish=claim_patterns(claims.get("publish"), "publish"),
            expires_at=_expiry(claims),
            claims=claims,
        )

    def subscription(self, token: str, channel: str, subject: str) -> SubscriptionGrant:
        """Check a subscription token for ``channel`` and the connection's user."""
        if self._jwt is None:
            raise AuthError("subscription tokens need JWT authentication")
        claims = self._jwt.claims(token, required=("channel",))
        if claims.get("channel") != channel:
            raise AuthError("invalid token: issued for another channel")
        if str(claims.get("sub", "")) != subject:
            raise AuthError("invalid token: issued for another user")
        return SubscriptionGrant(_expiry(claims), claims.get("info"))


def _expiry(claims: Mapping[str, object]) -> float | None:
    """``expire_at`` if given (0: never), else ``exp``."""
    value = claims.get("expire_at", claims.get("exp"))
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def server_subscriptions(claims: Mapping[str, object]) -> ServerSubscriptions:
    """The ``channels`` and ``subs`` claims, in order, without repeats; ``AuthError`` for a
    claim of the wrong shape."""
    channels = claims.get("channels", [])
    subs = claims.get("subs", {})
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise AuthError("invalid token: channels must be a list of channel names")
    if not isinstance(subs, dict):
        raise AuthError("invalid token: subs must be an object")
    data: dict[str, object] = {}
    info: dict[str, object] = {}
    for channel, options in subs.items():
        if isinstance(options, dict) and "data" in options:
            data[channel] = options["data"]
        if isinstance(options, dict) and options.get("info") is not None:
            info[channel] = options["info"]
    names = tuple(dict.fromkeys([*channels, *subs]))
    return ServerSubscriptions(names, data, info)
