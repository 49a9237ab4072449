"""What the side-by-side fan-out benchmarks (``sse_fanout.py``, ``centrifugo_fanout.py``) share.

Both hold several kinds of client on one sanic-feeds process, one channel per kind, and compare
the server's CPU time per delivered message across the kinds. The comparison is only fair if
every kind is measured the same way: the same server options, the same warm-up, the same rate,
the kinds taken in turn in every round (so a drift in the machine's load touches each of them),
the same command line. That procedure lives here, once, so the two figures stay comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from picows import WSMsgType

from loadgen import Subscriber, message
from procs import cpu_seconds

HERE = Path(__file__).resolve().parent

Send = Callable[[int], None]
"""Publishes the message with this sequence number to one kind's channel."""

Received = Callable[[], int]
"""How many messages one kind's clients have received so far."""


def server_argv(port: int) -> list[str]:
    """One sanic-feeds process on the memory broker, with no limit that would cut a run short.

    Join/leave notices off: only the chats are counted. A 4 MiB client buffer and no connection
    cap: thousands of clients on one process, none disconnected as slow during a burst.
    """
    return [
        sys.executable, "-m", "sanic_feeds", "serve", "--port", str(port), "--broker", "memory://",
        "--join-leave", "off", "--log-level", "WARNING", "--client-buffer", "4MiB",
        "--max-connections", "0",
    ]  # fmt: skip


def text_sender(publisher: Subscriber) -> Send:
    """Publish through a connected ``/feed/`` client, one text frame per message."""
    transport = publisher.transport
    assert transport is not None
    return lambda seq: transport.send(WSMsgType.TEXT, message(seq))


async def measure(
    pid: int,
    send: Send,
    received: Received,
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


async def measure_in_turn(
    pid: int, kinds: dict[str, tuple[Send, Received]], args: argparse.Namespace
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Each kind warmed up for a second, then measured in turn for ``args.rounds`` rounds.

    Returns, per kind, the server's CPU microseconds per delivery of each round, and the
    deliveries counted over all rounds.
    """
    for send, received in kinds.values():  # warm-up
        await measure(pid, send, received, args.rate, 1.0)
    per_delivery: dict[str, list[float]] = {kind: [] for kind in kinds}
    delivered: dict[str, int] = dict.fromkeys(kinds, 0)
    for _ in range(args.rounds):
        for kind, (send, received) in kinds.items():
            cpu, count = await measure(pid, send, received, args.rate, args.seconds)
            per_delivery[kind].append(cpu / max(count, 1) * 1e6)
            delivered[kind] += count
    return per_delivery, delivered


def close_transports(transports: Iterable[asyncio.Transport | None]) -> None:
    """Close the raw HTTP clients' connections (those that got one)."""
    for transport in transports:
        if transport is not None:
            transport.close()


def parse_args(description: str) -> argparse.Namespace:
    """The options both benchmarks take, with the same defaults, so their runs compare."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0, help="messages/s per channel")
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


def write_result(name: str, result: dict[str, object]) -> None:
    """Print the result and keep it in ``benchmarks/results/<name>.json``."""
    print(json.dumps(result, indent=2))
    out = HERE / "results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {os.path.relpath(out)}")
