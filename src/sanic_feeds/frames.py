"""WebSocket frame encoding for the fan-out path.

Pure code. A server-to-client frame is never masked and we never compress (Sanic does not
negotiate permessage-deflate), so a frame is a 2-10 byte header plus the payload, and the same
bytes can be written to every member of a channel: the message is framed once, not once per member.
"""

from __future__ import annotations

import struct

_FIN_TEXT = 0x81
_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")


def payload_of(frame: bytes) -> bytes:
    """The payload of one unmasked frame built by :func:`text_frame`."""
    size = frame[1] & 0x7F
    return frame[2 + (2 if size == 126 else 8 if size == 127 else 0) :]


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame carrying ``payload`` (UTF-8 JSON)."""
    size = len(payload)
    if size < 126:
        return bytes((_FIN_TEXT, size)) + payload
    if size < 1 << 16:
        return _HEADER_16.pack(_FIN_TEXT, 126, size) + payload
    return _HEADER_64.pack(_FIN_TEXT, 127, size) + payload
