"""What a client connection may do on a channel: join, publish, read presence, read history.

One place decides, for every protocol and transport: the channel's namespace options (see
:mod:`~sanic_feeds.namespaces`), and the connection's credential (a JWT's ``channels`` and
``publish`` claims narrow what it may do further, never widen it). ``insecure`` skips the
namespace permissions (not the name rules or the namespace lookup), as Centrifugo's
``client.insecure`` does. The server API and ``Feeds.publish`` are not clients: they may do
anything.

Pure code: each check returns None when allowed, else a :class:`Refusal` with the documented
error code (protocol.ErrorCode) and message.
"""

from __future__ import annotations

from dataclasses import dataclass

from .auth import Identity
from .channels import CHANNEL_RULES, is_valid_channel
from .namespaces import ChannelOptions, Namespaces, UnknownNamespace
from .protocol import ErrorCode


@dataclass(frozen=True, slots=True)
class Refusal:
    code: ErrorCode
    message: str


@dataclass(frozen=True, slots=True)
class Allowed:
    """The channel's options, for what comes after the permission (limits, history)."""

    options: ChannelOptions


def is_anonymous(identity: Identity) -> bool:
    """No verified user: ``--auth none``, or a credential without a subject."""
    return not identity.subject


def options_of(namespaces: Namespaces, channel: str) -> ChannelOptions | Refusal:
    """The channel's options, or why it is no channel at all (bad name, unknown namespace)."""
    if not is_valid_channel(channel):
        return Refusal(
            ErrorCode.INVALID_CHANNEL, f"Invalid channel name; names are {CHANNEL_RULES}"
        )
    try:
        return namespaces.options(channel)
    except UnknownNamespace as exc:
        return Refusal(ErrorCode.UNKNOWN_NAMESPACE, f"Unknown namespace {exc.namespace!r}")


@dataclass(frozen=True, slots=True)
class Permissions:
    """The checks of one server: its namespaces, and whether it is insecure."""

    namespaces: Namespaces
    insecure: bool = False

    def subscribe(self, identity: Identity, channel: str) -> Allowed | Refusal:
        options = options_of(self.namespaces, channel)
        if isinstance(options, Refusal):
            return options
        if not identity.may_join(channel):
            return Refusal(ErrorCode.FORBIDDEN, "You may not join this channel")
        if self.insecure:
            return Allowed(options)
        rest = channel.partition(":")[2] if ":" in channel else channel
        if not options.name_allowed(rest):
            return Refusal(ErrorCode.FORBIDDEN, "This channel name is not allowed here")
        if not options.may_subscribe(anonymous=is_anonymous(identity)):
            return Refusal(ErrorCode.FORBIDDEN, "You may not join this channel")
        return Allowed(options)

    def publish(self, identity: Identity, channel: str, *, subscribed: bool) -> Allowed | Refusal:
        options = options_of(self.namespaces, channel)
        if isinstance(options, Refusal):
            return options
        by_namespace = self.insecure or options.may_publish(
            anonymous=is_anonymous(identity), subscribed=subscribed
        )
        if not by_namespace and not subscribed:
            return Refusal(ErrorCode.NOT_SUBSCRIBED, "Not subscribed to this channel")
        if not by_namespace or not identity.may_publish(channel):
            return Refusal(ErrorCode.FORBIDDEN, "You may not publish to this channel")
        return Allowed(options)

    def presence(self, identity: Identity, channel: str, *, subscribed: bool) -> Allowed | Refusal:
        return self._read("presence", identity, channel, subscribed)

    def history(self, identity: Identity, channel: str, *, subscribed: bool) -> Allowed | Refusal:
        return self._read("history", identity, channel, subscribed)

    def _read(
        self, what: str, identity: Identity, channel: str, subscribed: bool
    ) -> Allowed | Refusal:
        """Presence and history: on in the namespace, then allowed for this connection."""
        options = options_of(self.namespaces, channel)
        if isinstance(options, Refusal):
            return options
        on = options.presence if what == "presence" else options.keeps_history
        if not on:
            return Refusal(ErrorCode.NOT_AVAILABLE, f"{what.capitalize()} is off for this channel")
        may = options.may_read_presence if what == "presence" else options.may_read_history
        if self.insecure or may(anonymous=is_anonymous(identity), subscribed=subscribed):
            return Allowed(options)
        if not subscribed:
            return Refusal(ErrorCode.NOT_SUBSCRIBED, "Not subscribed to this channel")
        return Refusal(ErrorCode.FORBIDDEN, f"You may not read {what} here")
