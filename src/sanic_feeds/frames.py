"""WebSocket frames (RFC 6455): encoding server frames, decoding client frames.

Pure code. A server-to-client frame is never masked and we never compress (no extension is
negotiated), so a frame is a 2-10 byte header plus the payload, and the same bytes can be written
to every member of a channel: the message is framed once, not once per member.

:class:`FrameReader` turns the bytes a client sends into whole messages and control frames,
enforcing the RFC's rules for a server (client frames must be masked, control frames short and
unfragmented, text valid UTF-8) and the message size limit. The UTF-8 of a fragmented text message
is checked fragment by fragment, so a bad first fragment fails at once instead of after the
client has sent (and we have buffered) up to ``max_size`` of it. Every violation is a
:class:`FrameError` carrying the close code to answer with.
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

_apply_mask: Callable[[bytes, bytes], bytes] | None
try:  # the C helper shipped with the websockets package (a dependency of Sanic)
    from websockets.speedups import apply_mask as _apply_mask
except ImportError:  # pragma: no cover - the pure-Python fallback
    _apply_mask = None

_FIN_TEXT = 0x81
_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")
_CLOSE_CODE = struct.Struct("!H")


class Opcode(IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


_KNOWN = frozenset(int(op) for op in Opcode)


def payload_of(frame: bytes) -> bytes:
    """The payload of one unmasked frame built by :func:`text_frame`."""
    size = frame[1] & 0x7F
    return frame[2 + (2 if size == 126 else 8 if size == 127 else 0) :]


def _frame(first: int, payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 1 << 16:
        return _HEADER_16.pack(first, 126, size) + payload
    return _HEADER_64.pack(first, 127, size) + payload


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame carrying ``payload`` (UTF-8 JSON)."""
    size = len(payload)
    if size < 126:
        return bytes((_FIN_TEXT, size)) + payload
    return _frame(_FIN_TEXT, payload)


def binary_frame(payload: bytes) -> bytes:
    """One final, unmasked binary frame carrying ``payload``."""
    return _frame(0x80 | Opcode.BINARY, payload)


def control_frame(opcode: Opcode, payload: bytes = b"") -> bytes:
    """A ping, pong or close frame (payload at most 125 bytes, as the RFC requires)."""
    if len(payload) > 125:
        raise ValueError("control frame payloads are at most 125 bytes")
    return bytes((0x80 | opcode, len(payload))) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; the reason is cut (on a character boundary) to fit 123 bytes."""
    data = reason.encode()
    if len(data) > 123:
        data = data[:123].decode(errors="ignore").encode()
    return control_frame(Opcode.CLOSE, _CLOSE_CODE.pack(code) + data)


def unmask(mask: bytes, data: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` repeated (unmasking and masking are the same)."""
    if _apply_mask is not None:
        return bytes(_apply_mask(data, mask))
    size = len(data)
    if not size:
        return b""
    key = int.from_bytes((mask * (size // 4 + 1))[:size], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(size, "big")


class FrameError(Exception):
    """The client broke the protocol: close the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Control:
    """A ping, pong or close frame. For a close, ``code`` (1005: none given) and ``reason``."""

    opcode: Opcode
    payload: bytes
    code: int = 1005
    reason: str = ""


Received = str | bytes | Control
"""What :meth:`FrameReader.feed` yields: a whole text (str) or binary (bytes) message, or a
control frame."""


def valid_close_code(code: int) -> bool:
    """Codes a peer may send in a close frame (RFC 6455 section 7.4)."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) or (
        3000 <= code <= 4999
    )


class FrameReader:
    """Incremental decoder of the frames a client sends to a server.

    ``feed`` takes whatever bytes arrived and returns the complete messages and control frames
    they finish, in order; a partial frame waits for more bytes. After a violation ``failed``
    holds the :class:`FrameError`. Fragmented messages are put
    together (control frames may come between the fragments). A message over ``max_size``
    bytes raises 1009 as soon as its announced length says so, before its payload is buffered.
    """

    __slots__ = (
        "_buffer",
        "_decoder",
        "_fragments",
        "_kind",
        "_size",
        "_texts",
        "failed",
        "max_size",
    )

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        """Bytes of a frame not complete yet."""
        self._fragments: list[bytes] = []
        """Fragments of a binary message in progress."""
        self._texts: list[str] = []
        """Fragments of a text message in progress, each decoded as it arrived."""
        self._decoder: codecs.IncrementalDecoder | None = None
        """UTF-8 decoder of the text message in progress (a character may span fragments)."""
        self._kind = 0
        """Opcode of the fragmented message in progress (0: none)."""
        self._size = 0
        self.failed: FrameError | None = None
        """Set at the first violation; the reader then ignores everything after it."""

    def feed(self, data: bytes) -> list[Received]:
        """The messages and control frames ``data`` completes.

        At a violation the frames before it are still returned and ``failed`` is set: what the
        client sent correctly is not lost because of what followed it.
        """
        out: list[Received] = []
        if self.failed is not None:
            return out
        try:
            self._feed(data, out)
        except FrameError as exc:
            self.failed = exc
            self._buffer = bytearray()
        return out

    def _feed(self, data: bytes, out: list[Received]) -> None:
        buffer: bytes | bytearray = data
        if self._buffer:
            self._buffer += data
            buffer = self._buffer
        at = 0
        end = len(buffer)
        while end - at >= 2:
            first = buffer[at]
            second = buffer[at + 1]
            size = second & 0x7F
            head = at + 2
            if size == 126:
                if end - head < 2:
                    break
                size = (buffer[head] << 8) | buffer[head + 1]
                head += 2
            elif size == 127:
                if end - head < 8:
                    break
                size = int.from_bytes(buffer[head : head + 8], "big")
                head += 8
                if size >> 63:
                    raise FrameError(1002, "invalid frame length")
            opcode = first & 0x0F
            fin = first & 0x80
            if first & 0x70:
                raise FrameError(1002, "reserved bits set (no extension was negotiated)")
            if opcode not in _KNOWN:
                raise FrameError(1002, f"unknown opcode {opcode}")
            if not second & 0x80:
                raise FrameError(1002, "client frames must be masked")
            if opcode >= 0x8:
                if not fin or size > 125:
                    raise FrameError(1002, "control frames must be final and at most 125 bytes")
            elif self._size + size > self.max_size:
                raise FrameError(1009, f"message over {self.max_size} bytes")
            if end - head < 4 + size:
                break
            mask = bytes(buffer[head : head + 4])
            payload = unmask(mask, bytes(buffer[head + 4 : head + 4 + size]))
            at = head + 4 + size
            if opcode >= 0x8:
                out.append(_control(Opcode(opcode), payload))
                continue
            if opcode == Opcode.CONTINUATION:
                if not self._kind:
                    raise FrameError(1002, "continuation frame without a message to continue")
            elif self._kind:
                raise FrameError(1002, "new message before the fragmented one ended")
            elif fin:
                out.append(_message(opcode, payload))
                continue
            else:
                self._kind = opcode
                if opcode == Opcode.TEXT:
                    self._decoder = _utf8_decoder()
            self._size += size
            decoder = self._decoder
            if decoder is not None:
                try:
                    self._texts.append(decoder.decode(payload, bool(fin)))
                except UnicodeDecodeError:
                    raise FrameError(1007, "invalid UTF-8 in a text frame") from None
            else:
                self._fragments.append(payload)
            if fin:
                out.append(
                    "".join(self._texts) if decoder is not None else b"".join(self._fragments)
                )
                self._fragments = []
                self._texts = []
                self._decoder = None
                self._kind = 0
                self._size = 0
        if buffer is self._buffer:
            del self._buffer[:at]
        elif at < end:
            self._buffer = bytearray(buffer[at:])


_utf8_decoder = codecs.getincrementaldecoder("utf-8")


def _message(opcode: int, payload: bytes) -> str | bytes:
    if opcode == Opcode.BINARY:
        return payload
    try:
        return payload.decode()
    except UnicodeDecodeError:
        raise FrameError(1007, "invalid UTF-8 in a text frame") from None


def _control(opcode: Opcode, payload: bytes) -> Control:
    if opcode != Opcode.CLOSE:
        return Control(opcode, payload)
    if not payload:
        return Control(opcode, payload)
    if len(payload) == 1:
        raise FrameError(1002, "close frame with a 1-byte payload")
    code = _CLOSE_CODE.unpack_from(payload)[0]
    if not valid_close_code(code):
        raise FrameError(1002, f"invalid close code {code}")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise FrameError(1007, "invalid UTF-8 in a close reason") from None
    return Control(opcode, payload, code, reason)
