"""A WebSocket client that completes the handshake and then stops reading.

The kind of client that froze the original design's whole room: its TCP receive window fills,
the server's writes to it back up, and a server that awaited each send would wait forever.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket


class StalledClient:
    """Raw socket with a tiny receive buffer; ``read_all`` drains it later, on demand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, path: str) -> StalledClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 24)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"handshake refused: {head!r}")
        # A StreamReader keeps reading the socket into memory whether or not anyone calls
        # read(); stop it, so the kernel's tiny receive window really fills up.
        _reading_side(writer).pause_reading()
        return cls(reader, writer)

    async def read_all(self, timeout: float = 10.0) -> bytes:
        """Read until the server closes the TCP connection (or ``timeout``)."""
        chunks: list[bytes] = []
        _reading_side(self.writer).resume_reading()
        try:
            async with asyncio.timeout(timeout):
                while chunk := await self.reader.read(1 << 16):
                    chunks.append(chunk)
        except (TimeoutError, ConnectionError):
            pass
        return b"".join(chunks)

    def close(self) -> None:
        self.writer.transport.abort()


def _reading_side(writer: asyncio.StreamWriter) -> asyncio.Transport:
    """The stream's socket transport, which reads too (typeshed types it as write-only)."""
    transport = writer.transport
    if not isinstance(transport, asyncio.Transport):
        raise TypeError(f"expected a socket transport, got {type(transport).__name__}")
    return transport
