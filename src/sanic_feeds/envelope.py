"""How a message travels through the broker.

Pure code. A broker carries opaque bytes per channel; we put one short header line in front of
the client-ready JSON so that receiving nodes never decode the JSON again::

    <excluded client id or nothing> "\\n" <the exact JSON text members receive>

The excluded client is the member that must not get this message (the joiner of its own
``user_joined`` notice). Client ids are hex, so they never contain a newline, and orjson never
emits a raw newline, so splitting at the first newline is exact.
"""

from __future__ import annotations

from typing import NamedTuple

_SEP = b"\n"


class Envelope(NamedTuple):
    """A decoded broker payload."""

    body: bytes
    """The JSON text every member receives, already encoded."""
    exclude: str
    """Client id that must not receive ``body``; empty when everyone does."""


def seal(body: bytes, exclude: str = "") -> bytes:
    """Wrap ``body`` for the broker."""
    return exclude.encode() + _SEP + body if exclude else _SEP + body


def open_envelope(payload: bytes) -> Envelope:
    """Unwrap a broker payload. Raises ValueError when the payload is not an envelope."""
    head, sep, body = payload.partition(_SEP)
    if not sep:
        raise ValueError("broker payload has no envelope header")
    return Envelope(body, head.decode("ascii") if head else "")
