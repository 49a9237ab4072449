"""A write transport that records what is written, for driving Outbound and Hub without sockets."""

from __future__ import annotations

import asyncio


class RecordingTransport(asyncio.WriteTransport):
    """Keeps every ``write``; ``buffered`` pretends that many bytes are still unsent."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.buffered = 0
        self.closing = False
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.aborted = True
        self.closing = True

    def close(self) -> None:
        self.closing = True

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)
