"""Who is connecting: authenticators, and where a token is found in a handshake.

An authenticator takes what the WebSocket handshake carried (:class:`Handshake`) and returns an
:class:`Identity` or raises :class:`AuthError` with a reason for the client. Built in: ``none``
(development: the user name comes from ``?user=``), ``token`` (a fixed set of tokens, each with a
user), ``jwt`` (HS256 with a shared secret, RS256/ES256 with a public key, via PyJWT).

With authentication on, the user name comes from the identity, never from the client, so nobody
can speak as someone else. This module never logs a token.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt

from .channels import ChannelPatterns
from .errors import FeedsError

SUBPROTOCOL = "sanic-feeds"
"""The subprotocol a browser may offer, together with ``bearer.<token>``."""

TOKEN_SUBPROTOCOL_PREFIX = "bearer."


def offered_subprotocols(headers: Any) -> list[str]:
    """The entries of every ``Sec-WebSocket-Protocol`` request header, in order."""
    return [
        entry.strip()
        for value in headers.getall("sec-websocket-protocol", [])
        for entry in value.split(",")
        if entry.strip()
    ]


class AuthError(FeedsError):
    """The connection is refused; ``reason`` goes to the client in the close frame."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenExpired(AuthError):
    """The credential was valid but its ``exp`` has passed: a fresh one will do."""

    def __init__(self) -> None:
        super().__init__("token expired")


@dataclass(frozen=True)
class Handshake:
    """What an authenticator may look at. Built from the HTTP upgrade request."""

    headers: Mapping[str, str]
    query: Mapping[str, str]
    subprotocols: Sequence[str] = ()

    def token(self) -> str | None:
        """The bearer token: ``Authorization`` header, ``token`` query parameter, or a
        ``bearer.<token>`` subprotocol entry (browsers cannot set headers on a WebSocket)."""
        scheme, _, value = (self.headers.get("authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        if self.query.get("token"):
            return self.query["token"]
        for entry in self.subprotocols:
            if entry.startswith(TOKEN_SUBPROTOCOL_PREFIX) and len(entry) > len(
                TOKEN_SUBPROTOCOL_PREFIX
            ):
                return entry[len(TOKEN_SUBPROTOCOL_PREFIX) :]
        return None


@dataclass(frozen=True)
class Identity:
    """An authenticated connection: who, what it may do, and until when."""

    user: str
    """The name shown to others (JWT ``name`` if present, else ``sub``)."""
    subject: str = ""
    """Stable id of the user (JWT ``sub``); per-user limits count by it."""
    channels: ChannelPatterns | None = None
    """Channels it may join; None: any."""
    publish: ChannelPatterns | None = None
    """Channels it may send chat to; None: any channel it joined."""
    expires_at: float | None = None
    """Unix time when the credential expires; the connection is closed then."""
    claims: Mapping[str, object] = field(default_factory=dict)

    def may_join(self, channel: str) -> bool:
        return self.channels is None or self.channels.matches(channel)

    def may_publish(self, channel: str) -> bool:
        return self.publish is None or self.publish.matches(channel)


class Authenticator(ABC):
    """Decides who a handshake is. Implement this to plug in your own scheme."""

    #: Whether the user name comes from the credential (True) or from ``?user=`` (False).
    verifies_user: bool = True

    @abstractmethod
    async def authenticate(self, handshake: Handshake) -> Identity:
        """Return the identity, or raise :class:`AuthError`."""


class NoAuth(Authenticator):
    """Everyone is welcome; the user name is whatever ``?user=`` says (development only)."""

    verifies_user = False

    async def authenticate(self, handshake: Handshake) -> Identity:
        return Identity(user=handshake.query.get("user", ""))


class StaticTokens(Authenticator):
    """A fixed set of tokens, each standing for a user."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        if not tokens:
            raise ValueError("token authentication needs at least one token")
        self._tokens = dict(tokens)

    async def authenticate(self, handshake: Handshake) -> Identity:
        token = handshake.token()
        if token is None:
            raise AuthError("authentication required")
        user = self._tokens.get(token)
        if user is None:
            raise AuthError("invalid token")
        return Identity(user=user, subject=user)


class JwtTokens(Authenticator):
    """JSON Web Tokens: ``sub`` (required), ``name``, ``exp``, ``channels``, ``publish``."""

    def __init__(
        self,
        key: str,
        algorithms: Sequence[str],
        *,
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 0.0,
    ) -> None:
        if not key:
            raise ValueError("JWT authentication needs a secret or a public key")
        self._key = key
        self._algorithms = list(algorithms)
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway

    async def authenticate(self, handshake: Handshake) -> Identity:
        token = handshake.token()
        if token is None:
            raise AuthError("authentication required")
        return self.identity(token)

    def claims(self, token: str, required: Sequence[str] = ("sub",)) -> dict[str, Any]:
        """Verify ``token`` (signature, ``exp``, audience, issuer, ``required`` claims) and
        return its claims; :class:`TokenExpired` or :class:`AuthError` otherwise."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": list(required)},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        return claims

    def identity(self, token: str) -> Identity:
        """Verify ``token`` and read the identity from its claims."""
        claims = self.claims(token)
        subject = str(claims["sub"])
        name = claims.get("name")
        exp = claims.get("exp")
        return Identity(
            user=str(name) if isinstance(name, str) and name else subject,
            subject=subject,
            channels=claim_patterns(claims.get("channels"), "channels"),
            publish=claim_patterns(claims.get("publish"), "publish"),
            expires_at=float(exp) if isinstance(exp, int | float) else None,
            claims=claims,
        )


def claim_patterns(value: object, claim: str) -> ChannelPatterns | None:
    if value is None:
        return None
    if isinstance(value, str):
        return ChannelPatterns.parse(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ChannelPatterns(value)
    raise AuthError(f"invalid token: claim {claim!r} must be a list of channel patterns")


def seconds_left(identity: Identity, now: float | None = None) -> float | None:
    """Seconds until the identity's credential expires (None: never)."""
    if identity.expires_at is None:
        return None
    return identity.expires_at - (time.time() if now is None else now)


def read_key(value: str) -> str:
    """A PEM key given inline, or the path of a file holding it."""
    if value.lstrip().startswith("-----BEGIN"):
        return value
    with open(value, encoding="ascii") as pem:
        return pem.read()


def authenticator_for(
    auth: str,
    *,
    tokens: Sequence[str] = (),
    jwt_secret: str = "",
    jwt_public_key: str = "",
    jwt_algorithms: Sequence[str] = (),
    jwt_audience: str = "",
    jwt_issuer: str = "",
) -> Authenticator:
    """The built-in authenticator the settings name (``none``, ``token`` or ``jwt``)."""
    if auth == "none":
        return NoAuth()
    if auth == "token":
        users: dict[str, str] = {}
        for entry in tokens:
            token, _, user = entry.partition("=")
            users[token] = user
        return StaticTokens(users)
    default: tuple[str, ...]
    if jwt_public_key:
        key, default = read_key(jwt_public_key), ("RS256", "ES256")
    else:
        key, default = jwt_secret, ("HS256",)
    return JwtTokens(
        key,
        list(jwt_algorithms) or list(default),
        audience=jwt_audience or None,
        issuer=jwt_issuer or None,
    )
