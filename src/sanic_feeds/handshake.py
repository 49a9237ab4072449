"""The WebSocket opening handshake (RFC 6455 section 4.2), server side.

Pure code: request headers in, the ``101 Switching Protocols`` response bytes out, or a
:class:`HandshakeError` with the HTTP status to refuse with. No extension is ever negotiated
(a client offering ``permessage-deflate`` simply gets none), so every frame the server writes
can be built once and shared by all members of a channel.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from typing import Protocol

from .errors import FeedsError

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
VERSION = "13"


class Headers(Protocol):
    def get(self, key: str, default: str = ..., /) -> str | None: ...


class HandshakeError(FeedsError):
    """Not a valid WebSocket upgrade request: answer with HTTP ``status`` and ``headers``.

    A bad request from a client is not a server fault: it is answered, never logged as an error.
    """

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _tokens(value: str | None) -> set[str]:
    return {token.strip().lower() for token in (value or "").split(",")}


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for the client's ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1(key.encode() + GUID).digest()
    return base64.b64encode(digest).decode()


def choose_subprotocol(offered: Sequence[str], spoken: str) -> str | None:
    """``spoken`` (the one subprotocol the server speaks) if the client offered it, else None.

    Nothing else offered is ever chosen: not a subprotocol we do not speak, and never a
    ``bearer.<token>`` entry, which carries a credential and must not be echoed back in the
    response (where proxies and browser tools log it). A browser offering only entries we do
    not speak then fails the connection itself; it should offer ``spoken`` alongside its token.
    """
    return spoken if spoken in offered else None


def check(headers: Headers) -> str:
    """Check an upgrade request; return its ``Sec-WebSocket-Key``."""
    if "websocket" not in _tokens(headers.get("upgrade")):
        raise HandshakeError(400, "not a WebSocket upgrade (Upgrade: websocket missing)")
    if "upgrade" not in _tokens(headers.get("connection")):
        raise HandshakeError(400, "not a WebSocket upgrade (Connection: Upgrade missing)")
    if (headers.get("sec-websocket-version") or "").strip() != VERSION:
        # RFC 6455 4.4: the refusal names the versions the server speaks.
        raise HandshakeError(
            426,
            f"unsupported WebSocket version; this server speaks {VERSION}",
            {"Sec-WebSocket-Version": VERSION},
        )
    key = (headers.get("sec-websocket-key") or "").strip()
    try:
        raw = base64.b64decode(key, validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(400, "invalid Sec-WebSocket-Key")
    return key


def accept(headers: Headers, subprotocol: str | None = None) -> bytes:
    """Check an upgrade request and build the ``101`` response that completes it."""
    return response(check(headers), subprotocol)


def response(key: str, subprotocol: str | None = None) -> bytes:
    """The ``101`` response to a request whose key :func:`check` returned."""
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(key)}",
    ]
    if subprotocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
