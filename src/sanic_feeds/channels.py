"""Channel names and channel-name patterns.

Pure functions only: no I/O, no asyncio. Channel names appear in URLs, Redis keys and log lines, so
they are restricted to a conservative ASCII alphabet that needs no escaping anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import TypeGuard

MAX_CHANNEL_LENGTH = 128
"""Longest accepted channel name, in characters."""

_CHANNEL_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.:@-]{{0,{MAX_CHANNEL_LENGTH - 1}}}")

CHANNEL_RULES = (
    f"1-{MAX_CHANNEL_LENGTH} characters from A-Z a-z 0-9 _ . : @ -, "
    "starting with a letter or a digit"
)
"""Human-readable rules, used in error messages and docs."""


def is_valid_channel(name: object) -> TypeGuard[str]:
    """Return True if ``name`` is a string that follows the channel name rules."""
    return isinstance(name, str) and _CHANNEL_RE.fullmatch(name) is not None


def namespace_of(channel: str) -> str | None:
    """``"chat:42"`` -> ``"chat"``; None for a channel without a namespace (no ``:``)."""
    namespace, colon, _ = channel.partition(":")
    return namespace if colon else None


class ChannelPatterns:
    """A set of shell-style glob patterns (``ticker.*``, ``room-?``) matched against channel names.

    Matching is case-sensitive, like channel names. Results are cached per name because the same
    few channels are asked about on every join and leave.
    """

    __slots__ = ("_cache", "patterns")

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns: tuple[str, ...] = tuple(p for p in (s.strip() for s in patterns) if p)
        self._cache: dict[str, bool] = {}

    @classmethod
    def parse(cls, text: str) -> ChannelPatterns:
        """Build from a comma-separated list, as given on the command line or in the environment."""
        return cls(text.split(","))

    def matches(self, channel: str) -> bool:
        """Return True if any pattern matches ``channel``."""
        hit = self._cache.get(channel)
        if hit is None:
            hit = any(fnmatchcase(channel, p) for p in self.patterns)
            if len(self._cache) > 10_000:  # bounded: channel names come from clients
                self._cache.clear()
            self._cache[channel] = hit
        return hit

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __repr__(self) -> str:
        return f"ChannelPatterns({list(self.patterns)!r})"
