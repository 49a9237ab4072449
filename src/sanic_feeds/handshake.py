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
    """Not a valid WebSocket upgrade request: answer with HTTP ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _tokens(value: str | None) -> set[str]:
    return {token.strip().lower() for token in (value or "").split(",")}


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for the client's ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1(key.encode() + GUID).digest()
    return base64.b64encode(digest).decode()


def choose_subprotocol(offered: Sequence[str], preferred: str) -> str | None:
    """``preferred`` if the client offered it, else the first entry offered, else None.

    A browser that offers subprotocols fails the connection unless the server picks one; a
    client that offers none must get none.
    """
    if not offered:
        return None
    return preferred if preferred in offered else offered[0]


def accept(headers: Headers, subprotocol: str | None = None) -> bytes:
    """Check an upgrade request and build the ``101`` response that completes it."""
    if "websocket" not in _tokens(headers.get("upgrade")):
        raise HandshakeError(400, "not a WebSocket upgrade (Upgrade: websocket missing)")
    if "upgrade" not in _tokens(headers.get("connection")):
        raise HandshakeError(400, "not a WebSocket upgrade (Connection: Upgrade missing)")
    if (headers.get("sec-websocket-version") or "").strip() != VERSION:
        raise HandshakeError(426, f"unsupported WebSocket version; this server speaks {VERSION}")
    key = (headers.get("sec-websocket-key") or "").strip()
    try:
        raw = base64.b64decode(key, validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(400, "invalid Sec-WebSocket-Key")
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(key)}",
    ]
    if subprotocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
