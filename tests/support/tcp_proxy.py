"""A TCP proxy on 127.0.0.1 that can silently black-hole the connections it carries.

``freeze()`` stops forwarding on every connection open at that moment, in both directions, without
closing anything: the peers see a live socket that never answers, as in a network partition or a
failover that left a connection on the old primary. Connections made later pass normally.
"""

from __future__ import annotations

import asyncio
import contextlib

from .ports import free_port


class _Pipe:
    def __init__(self) -> None:
        self.frozen = False
        self.tasks: list[asyncio.Task[None]] = []
        self.writers: list[asyncio.StreamWriter] = []


class TcpProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._pipes: list[_Pipe] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for pipe in self._pipes:
            for task in pipe.tasks:
                task.cancel()
            for writer in pipe.writers:
                writer.transport.abort()
        for pipe in self._pipes:
            for task in pipe.tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def freeze(self) -> int:
        """Black-hole every connection open now; return how many."""
        live = [p for p in self._pipes if not p.frozen]
        for pipe in live:
            pipe.frozen = True
        return len(live)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        pipe = _Pipe()
        pipe.writers = [writer, up_writer]
        pipe.tasks = [
            asyncio.create_task(self._forward(reader, up_writer, pipe)),
            asyncio.create_task(self._forward(up_reader, writer, pipe)),
        ]
        self._pipes.append(pipe)

    async def _forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pipe: _Pipe
    ) -> None:
        try:
            while data := await reader.read(65536):
                if pipe.frozen:
                    continue  # swallow: the peer keeps waiting for an answer that never comes
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not pipe.frozen:
                writer.transport.abort()
