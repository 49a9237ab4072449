"""Channel namespaces: which options apply to a channel, and what they allow a client to do.

A channel ``ns:rest`` takes the options of namespace ``ns``; a channel without ``:`` takes the
top-level ones. A channel naming a namespace that is not configured is refused everywhere (with
:class:`UnknownNamespace`), never served with some default: a typo in a namespace would
otherwise quietly turn history, presence or permissions into something nobody configured.

The option names and meanings are Centrifugo's wherever the meaning is the same, so that a
Centrifugo configuration means the same here. Pure code: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from functools import cached_property
from typing import Any

from .channels import namespace_of
from .errors import FeedsError
from .history import HistoryPolicy, HistoryRules
from .ratelimit import Rate

NAMESPACE_NAME_RE = re.compile(r"[-A-Za-z0-9_]{2,}")
"""Namespace names: letters, digits, ``-`` and ``_``, at least two (Centrifugo's rule)."""


class UnknownNamespace(FeedsError, ValueError):
    """A channel names a namespace that is not configured."""

    def __init__(self, channel: str, namespace: str) -> None:
        super().__init__(f"unknown namespace {namespace!r} in channel {channel!r}")
        self.channel = channel
        self.namespace = namespace


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    """What the channels of one namespace keep and allow.

    The defaults are Centrifugo's (everything off): a namespace allows only what it says. The
    top-level namespace is built from the server's settings instead, whose defaults keep every
    channel open as it always was (see ``FeedsConfig.top_level_options``).
    """

    history_size: int = 0
    """Messages kept per channel; history (and message ids, and recovery) needs this and
    ``history_ttl`` above 0."""
    history_ttl: float = 0.0
    """Seconds a channel's history is kept after its last stored message."""
    force_recovery: bool = False
    """Subscriptions recover missed messages even when the client did not ask (Centrifugo
    protocol; ``/feed/`` clients recover whenever they send ``since``)."""
    presence: bool = False
    """Who is in the channel can be read (presence frames, presence API)."""
    join_leave: bool = False
    """Members get join and leave notices."""
    force_push_join_leave: bool = False
    """Centrifugo protocol: push join/leave to every subscriber, not only those who ask."""
    allow_subscribe_for_client: bool = False
    """Authenticated connections may subscribe."""
    allow_subscribe_for_anonymous: bool = False
    """Anonymous connections may subscribe too (with ``allow_subscribe_for_client``)."""
    allow_publish_for_subscriber: bool = False
    """Connections subscribed to a channel may publish to it."""
    allow_publish_for_client: bool = False
    """Any connection may publish, subscribed or not."""
    allow_publish_for_anonymous: bool = False
    """Anonymous connections may publish where the two options above allow it."""
    allow_presence_for_subscriber: bool = False
    allow_presence_for_client: bool = False
    allow_presence_for_anonymous: bool = False
    allow_history_for_subscriber: bool = False
    allow_history_for_client: bool = False
    allow_history_for_anonymous: bool = False
    channel_regex: str = ""
    """Clients may subscribe only to channels whose name after ``ns:`` matches (searched
    anywhere, as Centrifugo does; anchor it with ``^...$``)."""
    rate_limit: Rate | None = None
    """Per connection: most messages it may publish to this namespace's channels, COUNT/SECONDS."""
    max_message_size: int = 0
    """Largest message a client may publish here, in bytes of JSON (0: only the server's)."""
    max_members: int = 0
    """Most members a channel may have, counted over the cluster (0: no cap)."""
    subscribe_proxy_enabled: bool = False
    """Subscribes to these channels are asked of the subscribe proxy (docs/hooks.md)."""
    publish_proxy_enabled: bool = False
    """Client publishes here are asked of the publish proxy, which may change the data."""
    sub_refresh_proxy_enabled: bool = False
    """Expiring subscriptions here are refreshed by the sub_refresh proxy."""

    def __post_init__(self) -> None:
        if self.history_size < 0:
            raise ValueError("history_size must be 0 (off) or more")
        if self.history_ttl < 0:
            raise ValueError("history_ttl must be 0 (off) or more")
        if self.max_message_size < 0 or self.max_members < 0:
            raise ValueError("max_message_size and max_members must be 0 (no cap) or more")
        if self.channel_regex:
            try:
                re.compile(self.channel_regex)
            except re.error as exc:
                raise ValueError(
                    f"channel_regex is not a valid regular expression: {exc}"
                ) from None

    @property
    def history(self) -> HistoryPolicy:
        """What the broker keeps: nothing unless both the size and the ttl are set."""
        on = self.history_size > 0 and self.history_ttl > 0
        return HistoryPolicy(self.history_size if on else 0, self.history_ttl if on else 0.0)

    @property
    def keeps_history(self) -> bool:
        return self.history.size > 0

    # -- permissions (client side; the server API may do anything) --------------------------

    def may_subscribe(self, *, anonymous: bool) -> bool:
        return self.allow_subscribe_for_client and (
            not anonymous or self.allow_subscribe_for_anonymous
        )

    def may_publish(self, *, anonymous: bool, subscribed: bool) -> bool:
        allowed = self.allow_publish_for_client or (
            subscribed and self.allow_publish_for_subscriber
        )
        return allowed and (not anonymous or self.allow_publish_for_anonymous)

    def may_read_presence(self, *, anonymous: bool, subscribed: bool) -> bool:
        allowed = self.allow_presence_for_client or (
            subscribed and self.allow_presence_for_subscriber
        )
        return allowed and (not anonymous or self.allow_presence_for_anonymous)

    def may_read_history(self, *, anonymous: bool, subscribed: bool) -> bool:
        allowed = self.allow_history_for_client or (
            subscribed and self.allow_history_for_subscriber
        )
        return allowed and (not anonymous or self.allow_history_for_anonymous)

    def name_allowed(self, rest: str) -> bool:
        """Does ``rest`` (the channel name after ``ns:``) match ``channel_regex``?"""
        return not self.channel_regex or _regex(self.channel_regex).search(rest) is not None


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def _regex(pattern: str) -> re.Pattern[str]:
    compiled = _REGEX_CACHE.get(pattern)
    if compiled is None:
        compiled = _REGEX_CACHE[pattern] = re.compile(pattern)
    return compiled


OPEN_CHANNELS = ChannelOptions(
    history_size=1000,
    history_ttl=600.0,
    presence=True,
    join_leave=True,
    allow_subscribe_for_client=True,
    allow_subscribe_for_anonymous=True,
    allow_publish_for_subscriber=True,
    allow_publish_for_anonymous=True,
    allow_presence_for_subscriber=True,
    allow_presence_for_anonymous=True,
    allow_history_for_subscriber=True,
    allow_history_for_anonymous=True,
)
"""The server's defaults for channels without a namespace: members may chat, see who is there
and recover, anonymous or not, as on a server started with no settings at all."""

OPTION_NAMES = tuple(f.name for f in fields(ChannelOptions))
"""Every option a namespace may set."""


@dataclass(frozen=True, slots=True)
class Namespace:
    """A named set of channel options."""

    name: str
    options: ChannelOptions = ChannelOptions()

    def __post_init__(self) -> None:
        if not NAMESPACE_NAME_RE.fullmatch(self.name):
            raise ValueError(
                f"namespace name {self.name!r}: use letters, digits, - and _, at least 2"
            )

    @classmethod
    def from_mapping(cls, entry: Mapping[str, Any]) -> Namespace:
        """``{"name": "chat", "history_size": 10, ...}`` with typed values (see
        :func:`options_from_mapping`)."""
        values = dict(entry)
        name = values.pop("name", None)
        if not isinstance(name, str):
            raise ValueError("every namespace needs a name (a string)")
        try:
            return cls(name, options_from_mapping(values))
        except ValueError as exc:
            raise ValueError(f"namespace {name!r}: {exc}") from None


def options_from_mapping(
    values: Mapping[str, Any], base: ChannelOptions = ChannelOptions()
) -> ChannelOptions:
    """Channel options from already-typed values over ``base``; ``ValueError`` naming an unknown
    option or a value of the wrong type."""
    unknown = sorted(set(values) - set(OPTION_NAMES))
    if unknown:
        raise ValueError(f"unknown channel option(s): {', '.join(unknown)}")
    for name, value in values.items():
        _check_type(name, value)
    return replace(base, **values)


def _check_type(name: str, value: object) -> None:
    default = getattr(ChannelOptions(), name)
    if name == "rate_limit":
        ok = value is None or isinstance(value, Rate)
    elif isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        kind = "COUNT/SECONDS" if name == "rate_limit" else type(default).__name__
        raise ValueError(f"{name} must be {kind}, got {value!r}")


class Namespaces:
    """The top-level options and the named namespaces: the options of any channel."""

    def __init__(self, top: ChannelOptions, namespaces: Iterable[Namespace] = ()) -> None:
        self.top = top
        named: dict[str, ChannelOptions] = {}
        for namespace in namespaces:
            if namespace.name in named:
                raise ValueError(f"namespace {namespace.name!r} is defined twice")
            named[namespace.name] = namespace.options
        self._named = named

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._named)

    def options(self, channel: str) -> ChannelOptions:
        """The options of ``channel``; :class:`UnknownNamespace` if its namespace is not known."""
        namespace = namespace_of(channel)
        if namespace is None:
            return self.top
        found = self._named.get(namespace)
        if found is None:
            raise UnknownNamespace(channel, namespace)
        return found

    def known(self, channel: str) -> bool:
        namespace = namespace_of(channel)
        return namespace is None or namespace in self._named

    @cached_property
    def history_rules(self) -> HistoryRules:
        """What the brokers keep per channel."""
        return HistoryRules(
            self.top.history, {name: options.history for name, options in self._named.items()}
        )

    def __repr__(self) -> str:
        return f"Namespaces(top={self.top!r}, names={list(self._named)!r})"
