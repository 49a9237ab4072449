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
import json
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import uvloop
from picows import WSMsgType

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from loadgen import Tally, close_all, message, open_clients  # noqa: E402  (after the path tweak)
from procs import cpu_seconds, free_port, running  # noqa: E402

PY = sys.executable
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


async def measure(
    pid: int,
    send: Callable[[int], None],
    received: Callable[[], int],
    rate: float,
    seconds: float,
) -> tuple[float, int]:
    """Publish at ``rate`` for ``seconds``; (server CPU seconds, deliveries) over that window."""
    loop = asyncio.get_running_loop()
    before_cpu, before = cpu_seconds(pid), received()
    started = loop.time()
    seq = 0
    while loop.time() < started + seconds:
        await asyncio.sleep(max(0.0, started + seq / rate - loop.time()))
        send(seq)
        seq += 1
    await asyncio.sleep(0.5)  # let the last ones land
    return cpu_seconds(pid) - before_cpu, received() - before


async def main(args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    argv = [
        PY, "-m", "sanic_feeds", "serve", "--port", str(port), "--broker", "memory://",
        "--join-leave", "off", "--log-level", "WARNING", "--client-buffer", "4MiB",
        "--max-connections", "0",
    ]  # fmt: skip
    with running("sanic-feeds", argv, port) as proc:
        tally = Tally()
        ws_clients = await open_clients(f"ws://127.0.0.1:{port}/feed/ws-room", args.clients, tally)
        sse_clients, sse_counts = await open_sse(port, "/sse/sse-room", args.clients)
        publishers = {
            room: (await open_clients(f"ws://127.0.0.1:{port}/feed/{room}", 1, Tally()))[0]
            for room in ("ws-room", "sse-room")
        }
        tally.record = True

        def sender(room: str) -> Callable[[int], None]:
            transport = publishers[room].transport
            assert transport is not None
            return lambda seq: transport.send(WSMsgType.TEXT, message(seq))

        kinds: dict[str, tuple[Callable[[int], None], Callable[[], int]]] = {
            "websocket": (sender("ws-room"), lambda: tally.deliveries),
            "sse": (sender("sse-room"), lambda: sse_counts["events"]),
        }
        for send, received in kinds.values():  # warm-up
            await measure(proc.pid, send, received, args.rate, 1.0)
        per_delivery: dict[str, list[float]] = {kind: [] for kind in kinds}
        delivered: dict[str, int] = dict.fromkeys(kinds, 0)
        for _ in range(args.rounds):
            for kind, (send, received) in kinds.items():
                cpu, count = await measure(proc.pid, send, received, args.rate, args.seconds)
                per_delivery[kind].append(cpu / max(count, 1) * 1e6)
                delivered[kind] += count
        close_all([*ws_clients, *publishers.values()])
        for client in sse_clients:
            if client.transport is not None:
                client.transport.close()
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0, help="messages/s per channel")
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    result = uvloop.run(asyncio.wait_for(main(parser.parse_args()), 120))
    print(json.dumps(result, indent=2))
    out = HERE / "results" / "sse_fanout.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {os.path.relpath(out)}")
