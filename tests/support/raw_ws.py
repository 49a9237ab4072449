"""A WebSocket client on a bare TCP stream, for what client libraries will not do.

It sends any frame (unmasked, fragmented, pipelined with the handshake), never answers pings by
itself, and reads the server's frames one at a time. Every read has a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct

from sanic_feeds.frames import unmask


def masked_frame(first: int, payload: bytes, *, mask: bool = True) -> bytes:
    """One client frame: ``first`` is FIN/RSV/opcode, the payload masked unless ``mask`` is off."""
    size = len(payload)
    bit = 0x80 if mask else 0
    if size < 126:
        head = bytes((first, bit | size))
    elif size < 1 << 16:
        head = bytes((first, bit | 126)) + struct.pack("!H", size)
    else:
        head = bytes((first, bit | 127)) + struct.pack("!Q", size)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + unmask(key, payload)


def upgrade_request(port: int, path: str, extra_headers: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    ).encode()


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.response_head = b""

    @classmethod
    async def connect(
        cls, port: int, path: str, *, pipelined: bytes = b"", extra_headers: str = ""
    ) -> RawClient:
        """Open the connection; ``pipelined`` frames go out in the same write as the request."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        writer.write(upgrade_request(port, path, extra_headers) + pipelined)
        await writer.drain()
        client = cls(reader, writer)
        async with asyncio.timeout(5):
            client.response_head = await reader.readuntil(b"\r\n\r\n")
        return client

    @property
    def status(self) -> int:
        return int(self.response_head.split(b" ", 2)[1])

    async def send(self, first: int, payload: bytes, *, mask: bool = True) -> None:
        self.writer.write(masked_frame(first, payload, mask=mask))
        await self.writer.drain()

    async def send_text(self, text: str) -> None:
        await self.send(0x81, text.encode())

    async def read_frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """The next server frame as (opcode, payload); EOFError when the server closed TCP."""
        async with asyncio.timeout(timeout):
            try:
                first, second = await self.reader.readexactly(2)
            except asyncio.IncompleteReadError:
                raise EOFError("the server closed the connection") from None
            assert not second & 0x80, "server frames are never masked"
            size = second & 0x7F
            if size == 126:
                size = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            return first & 0x0F, await self.reader.readexactly(size)

    async def read_until(self, opcode: int, timeout: float = 5.0) -> bytes:
        """Skip frames until one with ``opcode``; return its payload."""
        async with asyncio.timeout(timeout):
            while True:
                got, payload = await self.read_frame(timeout)
                if got == opcode:
                    return payload

    async def read_eof(self, timeout: float = 5.0) -> None:
        """Read (and drop) frames until the server closes the TCP connection."""
        async with asyncio.timeout(timeout):
            while await self.reader.read(1 << 16):
                pass

    def abort(self) -> None:
        self.writer.transport.abort()


def close_code_of(payload: bytes) -> int:
    return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else 1005
