"""What a connection may do next: the per-connection protocol state machine, with no I/O.

Inputs are what happens to a connection: it opens on a channel, a client message arrives, the
node answers a request the machine made (a join held or failed, a publish was refused,
presence was read), time passes. Outputs are :class:`Action` values for the session's driver
to carry out, in order: send a message, join, leave, publish, read presence, close. The machine
decides every reply and every error the client sees; the driver only moves bytes and talks to
the node. So the whole protocol is tested here without sockets or an event loop
(tests/test_session_state.py), and another transport reuses it unchanged.

What it must never do: await, touch a socket, read a clock (``now`` is passed in), or know
about the node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from . import protocol
from .auth import Identity
from .channels import namespace_of
from .codec import FEED_JSON, Codec
from .errors import ProtocolError
from .namespaces import OPEN_CHANNELS, Namespaces
from .permissions import Permissions, Refusal, options_of
from .protocol import CloseCode, ErrorCode
from .ratelimit import NamespaceBuckets, Rate, TokenBucket

REFUSING = frozenset(
    {
        CloseCode.POLICY_VIOLATION,
        CloseCode.INVALID_CHANNEL,
        CloseCode.BROKER_UNAVAILABLE,
        CloseCode.BACKEND_UNAVAILABLE,
        CloseCode.TOKEN_EXPIRED,
        CloseCode.RATE_LIMITED,
        CloseCode.INTERNAL_ERROR,
        CloseCode.UNKNOWN_NAMESPACE,
        CloseCode.CHANNEL_FULL,
        CloseCode.CONNECTION_LIMIT,
        CloseCode.DISCONNECTED,
    }
)
"""Closes after which the client's queued messages are dropped: it was refused, its credential
ran out, or it abused the rate limit. After others (a shutdown, a slow consumer) what it sent
before the close is still handled."""


# -- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Queue one server message (an encoded body) for the client."""

    body: bytes


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Join:
    """Join ``channel``; report with :meth:`SessionState.join_failed` if the broker cannot.

    The join acknowledges itself once it holds: ``greeting`` (the welcome of the URL channel),
    else ``subscribed``; with ``since``, the replay and ``recovered`` come with it.
    """

    channel: str
    since: int | None = None
    epoch: str | None = None
    greeting: tuple[bytes, ...] | None = None
    ack: bytes | None = None
    """Sent instead of the usual ``subscribed`` (the notice of a join the server made)."""


@dataclass(frozen=True, slots=True)
class Expire:
    """(Re)arm the credential's expiry timer for ``at`` (the machine's clock); None: disarm."""

    at: float | None


@dataclass(frozen=True, slots=True)
class Resync:
    """Replay a joined channel from ``since`` (then ``subscribed``), parking live messages."""

    channel: str
    since: int
    epoch: str | None


@dataclass(frozen=True, slots=True)
class Leave:
    channel: str


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish ``body`` to ``channel``, after the per-user limit for ``user_key`` (if any)."""

    channel: str
    body: bytes
    user_key: str


@dataclass(frozen=True, slots=True)
class ReadPresence:
    channel: str


@dataclass(frozen=True, slots=True)
class Tally:
    """Count an event in the node's statistics (``rate_limited``)."""

    counter: str


Action = Send | Close | Join | Resync | Leave | Publish | ReadPresence | Tally | Expire


class JoinOutcome(Enum):
    """What became of a :class:`Join`."""

    JOINED = "joined"
    BROKER_UNAVAILABLE = "broker_unavailable"
    CHANNEL_FULL = "channel_full"
    """The channel has its namespace's ``max_members`` already."""


OPEN = Permissions(Namespaces(OPEN_CHANNELS))
"""The permissions of a server with no settings: every channel open."""

_OPENING_REFUSALS = {
    ErrorCode.INVALID_CHANNEL: CloseCode.INVALID_CHANNEL,
    ErrorCode.UNKNOWN_NAMESPACE: CloseCode.UNKNOWN_NAMESPACE,
}


# -- the machine -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """The settings the machine enforces, parsed once by the node."""

    max_channels: int = 100
    message_rate: Rate | None = None
    rate_limit_text: str = ""
    """The rate as configured (``"20/1"``), for the error message."""
    rate_limit_violations: int = 0
    """Refused messages before the connection is closed with 4429 (0: never)."""
    permissions: Permissions = OPEN
    """The channels' namespaces and what they allow."""


@dataclass(slots=True)
class SessionState:
    """One connection's protocol state: who it is, which channels it follows, its limits."""

    client: str
    user: str
    identity: Identity
    limits: Limits = field(default_factory=Limits)
    codec: Codec = FEED_JSON
    """The client protocol: how frames are parsed and replies encoded."""
    channels: dict[str, None] = field(default_factory=dict)
    """Joined (or joining) channels, in join order (a dict is an ordered set)."""
    primary: str = ""
    """The channel named when the connection opened."""
    closed: int | None = None
    """The close code the machine asked for, once it did."""
    expires_at: float | None = None
    """When the credential runs out (the same clock as ``now``); see :meth:`tick`."""
    _bucket: TokenBucket | None = None
    _namespace_buckets: NamespaceBuckets = field(default_factory=NamespaceBuckets)
    """Namespace -> this connection's bucket for the namespace's ``rate_limit``."""
    _violations: int = 0

    # -- opening ---------------------------------------------------------------------------------

    def open(
        self,
        channel: str,
        since: object,
        epoch: object,
        *,
        now: float,
        draining: bool = False,
        expires_in: float | None = None,
    ) -> list[Action]:
        """The connection is up, on ``channel`` (with an optional recovery position).

        More channels named at connect are joined after these actions are done, with
        :meth:`command` and a ``Subscribe`` each.
        """
        if draining:
            return self._close(CloseCode.GOING_AWAY, "server shutting down")
        allowed = self.limits.permissions.subscribe(self.identity, channel)
        if isinstance(allowed, Refusal):
            code = _OPENING_REFUSALS.get(allowed.code, CloseCode.POLICY_VIOLATION)
            reason = "forbidden: this channel" if code == CloseCode.POLICY_VIOLATION else ""
            return self._close(code, reason or allowed.message.lower())
        if self.limits.message_rate is not None:
            self._bucket = TokenBucket(self.limits.message_rate, now)
        if expires_in is not None:
            self.expires_at = now + max(expires_in, 0.0)
        self.primary = channel
        greeting = [self.codec.welcome(channel, self.client, self.user)]
        try:
            recovery = (protocol.parse_since(since), protocol.parse_epoch(epoch))
        except ProtocolError as exc:
            greeting.append(self.codec.error(exc.code, exc.message, channel))
            recovery = (None, None)
        self.channels[channel] = None
        return [Join(channel, *recovery, greeting=tuple(greeting))]

    def join_failed(
        self,
        channel: str,
        opening: bool = False,
        outcome: JoinOutcome = JoinOutcome.BROKER_UNAVAILABLE,
    ) -> list[Action]:
        """``channel`` could not be joined (``opening``: the join at connect): the broker could
        not subscribe it, or it is full."""
        self.channels.pop(channel, None)
        full = outcome is JoinOutcome.CHANNEL_FULL
        if opening and self.closed is None:
            if full:
                return self._close(CloseCode.CHANNEL_FULL, "channel full, try again later")
            return self._close(CloseCode.BROKER_UNAVAILABLE, "broker unavailable, try again")
        if full:
            return [self._error(ErrorCode.CHANNEL_FULL, "This channel is full", channel)]
        return [
            self._error(ErrorCode.BROKER_UNAVAILABLE, "Could not subscribe; try again", channel)
        ]

    # -- client messages -------------------------------------------------------------------------

    def receive(self, raw: str | bytes, now: float) -> list[Action]:
        """One whole client message."""
        bucket = self._bucket
        if bucket is not None:
            wait = bucket.take(now)
            if wait > 0:
                return self._over_rate(wait)
        if not isinstance(raw, str):
            return [
                self._error(
                    ErrorCode.BINARY_NOT_SUPPORTED,
                    "Binary frames are not supported; send JSON text frames",
                )
            ]
        try:
            command = self.codec.parse(raw)
        except ProtocolError as exc:
            return [self._error(exc.code, exc.message, exc.channel)]
        return self.command(command, now)

    def command(self, command: protocol.Command, now: float | None = None) -> list[Action]:
        """One parsed client command (from any protocol's codec); ``now`` for rate limits."""
        match command:
            case protocol.Chat():
                return self._chat(command, now)
            case protocol.Subscribe(channel=channel, since=since, epoch=epoch):
                return self._subscribe(channel, since, epoch)
            case protocol.Unsubscribe(channel=channel):
                if channel not in self.channels:
                    return [self._not_subscribed(channel)]
                del self.channels[channel]
                return [Leave(channel), Send(self.codec.unsubscribed(channel))]
            case protocol.Ping():
                return [Send(self.codec.pong())]
            case protocol.Presence(channel=asked):
                channel = asked or self.primary
                subscribed = channel in self.channels
                if asked is None and not subscribed:
                    return [self._missing_or_not_subscribed(channel, True)]
                allowed = self.limits.permissions.presence(
                    self.identity, channel, subscribed=subscribed
                )
                if isinstance(allowed, Refusal):
                    return [self._error(allowed.code, allowed.message, channel)]
                return [ReadPresence(channel)]
        raise AssertionError(f"unknown command {command!r}")  # pragma: no cover

    def _subscribe(self, channel: str, since: int | None, epoch: str | None) -> list[Action]:
        if channel in self.channels:
            if since is not None:  # a resync, typically after a "gap" notice
                return [Resync(channel, since, epoch)]
            return [Send(self.codec.subscribed(channel))]
        allowed = self.limits.permissions.subscribe(self.identity, channel)
        if isinstance(allowed, Refusal):
            return [self._error(allowed.code, allowed.message, channel)]
        most = self.limits.max_channels
        if len(self.channels) >= most:
            text = f"A connection may follow at most {most} channels"
            return [self._error(ErrorCode.TOO_MANY_CHANNELS, text, channel)]
        self.channels[channel] = None
        return [Join(channel, since, epoch)]

    def _chat(self, command: protocol.Chat, now: float | None) -> list[Action]:
        channel = command.channel or self.primary
        subscribed = channel in self.channels
        if command.channel is None and not subscribed:
            return [self._missing_or_not_subscribed(channel, True)]
        allowed = self.limits.permissions.publish(self.identity, channel, subscribed=subscribed)
        if isinstance(allowed, Refusal):
            return [self._error(allowed.code, allowed.message, channel)]
        options = allowed.options
        body = protocol.chat(channel, self.client, self.user, command.message)
        most = options.max_message_size
        if most and len(body) > most:
            text = f"Message over {most} bytes; not delivered"
            return [self._error(ErrorCode.MESSAGE_TOO_LARGE, text, channel)]
        if options.rate_limit is not None and now is not None:
            wait = self._namespace_buckets.take(namespace_of(channel), options.rate_limit, now)
            if wait > 0:
                text = f"Rate limit {options.rate_limit} in this namespace: message not delivered"
                return [
                    Tally("rate_limited"),
                    self._error(ErrorCode.RATE_LIMITED, text, channel, retry_after=round(wait, 2)),
                ]
        return [Publish(channel, body, self.identity.subject or self.user)]

    # -- answers from the node -------------------------------------------------------------------

    def publish_refused(self, channel: str) -> list[Action]:
        text = "Message not delivered: broker unavailable"
        return [self._error(ErrorCode.BROKER_UNAVAILABLE, text, channel)]

    def user_limited(self, channel: str, wait: float) -> list[Action]:
        """The per-user limit (across connections and instances) refused a chat."""
        return [
            Tally("rate_limited"),
            self._error(
                ErrorCode.RATE_LIMITED,
                "Too many messages from this user; not delivered",
                channel,
                retry_after=round(wait, 2),
            ),
        ]

    def presence_read(self, channel: str, members: list[dict[str, object]] | None) -> list[Action]:
        """The members of ``channel`` (public fields), or None when presence is unavailable."""
        if members is None:
            text = "Presence unavailable: broker down"
            return [self._error(ErrorCode.BROKER_UNAVAILABLE, text, channel)]
        return [Send(self.codec.presence(channel, members))]

    def server_subscribe(
        self, channel: str, since: int | None = None, epoch: str | None = None
    ) -> list[Action]:
        """Join ``channel`` for the server API (its commands come on the control channel): no
        permission applies, the channel cap does; the ack is ``subscribed`` marked as the
        server's."""
        if self.closed is not None or channel in self.channels:
            return []
        if isinstance(options_of(self.limits.permissions.namespaces, channel), Refusal):
            return []  # the API checked it; a node configured otherwise leaves it alone
        if len(self.channels) >= self.limits.max_channels:
            text = f"A connection may follow at most {self.limits.max_channels} channels"
            return [self._error(ErrorCode.TOO_MANY_CHANNELS, text, channel)]
        self.channels[channel] = None
        return [Join(channel, since, epoch, ack=self.codec.subscribed(channel, by_server=True))]

    def server_unsubscribe(self, channel: str) -> list[Action]:
        """Leave ``channel`` for the server, with an ``unsubscribed`` marked as the server's."""
        if self.closed is not None or channel not in self.channels:
            return []
        del self.channels[channel]
        return [Leave(channel), Send(self.codec.unsubscribed(channel, by_server=True))]

    def server_disconnect(self, code: int, reason: str) -> list[Action]:
        return [] if self.closed is not None else self._close(code, reason)

    def server_refresh(self, now: float, expired: bool, expires_in: float | None) -> list[Action]:
        """End the credential now (``expired``), or in ``expires_in`` s (None: never)."""
        if self.closed is not None:
            return []
        if expired:
            return self._close(CloseCode.TOKEN_EXPIRED, "token expired")
        self.expires_at = None if expires_in is None else now + max(expires_in, 0.0)
        return [Expire(self.expires_at)]

    # -- time ------------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Action]:
        """Time passed: close when the credential ran out."""
        if self.expires_at is not None and now >= self.expires_at and self.closed is None:
            return self._close(CloseCode.TOKEN_EXPIRED, "token expired")
        return []

    # -- helpers ---------------------------------------------------------------------------------

    def _over_rate(self, wait: float) -> list[Action]:
        self._violations += 1
        most = self.limits.rate_limit_violations
        if most and self._violations >= most:
            return [Tally("rate_limited"), *self._close(CloseCode.RATE_LIMITED, REPEATED)]
        text = f"Rate limit {self.limits.rate_limit_text}: message not delivered"
        return [
            Tally("rate_limited"),
            self._error(ErrorCode.RATE_LIMITED, text, retry_after=round(wait, 2)),
        ]

    def _close(self, code: int, reason: str) -> list[Action]:
        if self.closed is None:
            self.closed = code
        return [Close(code, reason)]

    def _missing_or_not_subscribed(self, channel: str, implicit: bool) -> Send:
        if implicit:
            return self._error(ErrorCode.MISSING_FIELD, "Missing field: channel")
        return self._not_subscribed(channel)

    def _not_subscribed(self, channel: str) -> Send:
        return self._error(ErrorCode.NOT_SUBSCRIBED, "Not subscribed to this channel", channel)

    def _error(self, code: str, message: str, channel: str | None = None, **extra: object) -> Send:
        return Send(self.codec.error(code, message, channel, **extra))


REPEATED = "rate limit exceeded repeatedly"
