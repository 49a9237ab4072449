"""Exceptions raised by sanic-feeds.

One base class, so an application can catch everything this package raises::

    FeedsError
    ├── ConfigError            a setting is missing, malformed or contradicts another; names the key
    ├── BrokerError            the broker misbehaved
    │   └── BrokerUnavailable  the broker cannot be reached right now; retrying later may work
    └── ProtocolError          a client frame broke the protocol; carries the documented error code

Errors that reach a WebSocket client are never these objects themselves: they are turned into
documented ``error`` messages or close codes (see ``protocol.py`` and docs/protocol.md).
"""

from __future__ import annotations


class FeedsError(Exception):
    """Base class of every exception raised by sanic-feeds."""


class ConfigError(FeedsError, ValueError):
    """A configuration value is invalid. The message names the setting."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class BrokerError(FeedsError):
    """The broker failed in a way that is not a plain outage."""


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached (down, paused, or not answering in time)."""


class ProtocolError(FeedsError):
    """A client frame is invalid.

    ``code`` is one of the documented codes in :class:`sanic_feeds.protocol.ErrorCode`; the session
    answers with ``{"type": "error", "code": ..., "message": ...}`` and keeps the connection.
    """

    def __init__(self, code: str, message: str, channel: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.channel = channel
