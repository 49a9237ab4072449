"""Fan-out over Server-Sent Events beside WebSocket, on one server, in the same run.

    .venv/bin/python benchmarks/sse_fanout.py                 # 1,000 + 1,000 clients, ~40 s
    .venv/bin/python benchmarks/sse_fanout.py --clients 200 --seconds 2

One sanic-feeds process (memory broker, pinned to CPU 0 like benchmarks/run.py) holds 1,000
EventSource-style clients on channel ``sse-room`` (raw HTTP/1.1 on uvloop: send the GET, count
the chat events in what arrives) and 1,000 picows WebSocket clients on ``ws-room``. A WebSocket
publisher sends chats to one channel, then the other, at the same rate, alternating for
``--rounds`` rounds; the figure is the server's CPU time per delivered message on each
channel, and their ratio (target: SSE within 1.5x of WebSocket). Bounded throughout.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

import uvloop

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fanout_rounds import (  # noqa: E402  (after the path tweak)
    Received,
    Send,
    close_transports,
    measure_in_turn,
    parse_args,
    server_argv,
    text_sender,
    write_result,
)
from loadgen import Tally, close_all, open_clients  # noqa: E402
from procs import free_port, running  # noqa: E402

CHAT = b'"type":"chat"'


class SseClient(asyncio.Protocol):
    """One EventSource-style reader: counts chat events, with no parsing beyond that."""

    def __init__(self, path: str, counts: dict[str, int], joined: asyncio.Event) -> None:
        self.path = path
        self.counts = counts
        self.joined = joined
        self.tail = b""
        self.welcomed = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses (no isinstance check here).
        sink: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport = sink
        sink.write(
            b"GET %s HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n"
            % self.path.encode()
        )

    def data_received(self, data: bytes) -> None:
        # A marker may be split over two reads: keep the bytes that could start one.
        buf = self.tail + data
        self.counts["events"] += buf.count(CHAT)
        self.tail = buf[-(len(CHAT) - 1) :]
        if not self.welcomed and b'"type":"system"' in buf:
            self.welcomed = True
            self.counts["welcomed"] += 1
            if self.counts["welcomed"] >= self.counts["expected"]:
                self.joined.set()


async def open_sse(port: int, path: str, count: int) -> tuple[list[SseClient], dict[str, int]]:
    loop = asyncio.get_running_loop()
    counts = {"events": 0, "welcomed": 0, "expected": count}
    joined = asyncio.Event()
    clients: list[SseClient] = []
    semaphore = asyncio.Semaphore(200)

    async def one() -> None:
        async with semaphore:
            _, client = await loop.create_connection(
                lambda: SseClient(path, counts, joined), "127.0.0.1", port
            )
            clients.append(client)

    await asyncio.gather(*(one() for _ in range(count)))
    async with asyncio.timeout(30):
        await joined.wait()
    return clients, counts


async def main(args: argparse.Namespace) -> dict[str, object]:
    port = free_port()
    with running("sanic-feeds", server_argv(port), port) as proc:
        tally = Tally()
        ws_clients = await open_clients(f"ws://127.0.0.1:{port}/feed/ws-room", args.clients, tally)
        sse_clients, sse_counts = await open_sse(port, "/sse/sse-room", args.clients)
        publishers = {
            room: (await open_clients(f"ws://127.0.0.1:{port}/feed/{room}", 1, Tally()))[0]
            for room in ("ws-room", "sse-room")
        }
        tally.record = True
        kinds: dict[str, tuple[Send, Received]] = {
            "websocket": (text_sender(publishers["ws-room"]), lambda: tally.deliveries),
            "sse": (text_sender(publishers["sse-room"]), lambda: sse_counts["events"]),
        }
        per_delivery, delivered = await measure_in_turn(proc.pid, kinds, args)
        close_all([*ws_clients, *publishers.values()])
        close_transports(client.transport for client in sse_clients)
        await asyncio.sleep(0.3)
    ws = statistics.median(per_delivery["websocket"])
    sse = statistics.median(per_delivery["sse"])
    return {
        "clients_per_kind": args.clients,
        "rate_per_s": args.rate,
        "websocket_cpu_us_per_delivery": round(ws, 3),
        "sse_cpu_us_per_delivery": round(sse, 3),
        "sse_over_websocket": round(sse / ws, 3),
        "websocket_deliveries": delivered["websocket"],
        "sse_deliveries": delivered["sse"],
    }


if __name__ == "__main__":
    result = uvloop.run(asyncio.wait_for(main(parse_args(__doc__.splitlines()[0])), 120))
    write_result("sse_fanout", result)
