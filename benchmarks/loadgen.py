"""The load generator: many picows WebSocket clients on uvloop in one process.

A receipt costs a compiled client far less than the servers spend per delivery, so what we
measure is the servers. Every message carries its sequence number and send time; subscribers
count receipts per message (for the closed loop) and record latencies.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

_STAMP = re.compile(rb'"message":"(\d+) (\d+) ')
MESSAGE_SIZE = 128


def message(seq: int) -> bytes:
    """A 128-byte chat frame carrying ``seq`` and the send time (ns)."""
    head = b'{"type":"chat","message":"%d %d ' % (seq, time.perf_counter_ns())
    return head + b"x" * (MESSAGE_SIZE - len(head) - 2) + b'"}'


@dataclass
class Tally:
    """Shared by all subscribers of one run."""

    receipts: dict[int, int] = field(default_factory=dict)
    latencies_ns: list[int] = field(default_factory=list)
    deliveries: int = 0
    record: bool = False
    welcomed: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class Subscriber(WSListener):
    def __init__(self, tally: Tally, stalled: bool = False) -> None:
        self.tally = tally
        self.stalled = stalled
        self.transport: WSTransport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if self.stalled:
            transport.underlying_transport.pause_reading()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            self.close_code = int(frame.get_close_code())
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        payload = frame.get_payload_as_bytes()
        match = _STAMP.search(payload)
        tally = self.tally
        if match is None:
            if b'"system"' in payload:
                tally.welcomed += 1
                tally.changed.set()
            return
        if not tally.record:
            return
        seq = int(match.group(1))
        tally.deliveries += 1
        tally.receipts[seq] = tally.receipts.get(seq, 0) + 1
        tally.latencies_ns.append(time.perf_counter_ns() - int(match.group(2)))
        tally.changed.set()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def open_clients(
    url: str, count: int, tally: Tally, *, parallel: int = 200, stalled: int = 0
) -> list[Subscriber]:
    """Connect ``count`` subscribers (the first ``stalled`` never read)."""
    clients: list[Subscriber] = []
    semaphore = asyncio.Semaphore(parallel)

    async def one(index: int) -> None:
        async with semaphore:
            _, client = await ws_connect(
                lambda: Subscriber(tally, stalled=index < stalled), url, max_frame_size=1 << 20
            )
            clients.append(client)  # type: ignore[arg-type]

    await asyncio.gather(*(one(i) for i in range(count)))
    return clients


def close_all(clients: list[Subscriber]) -> None:
    for client in clients:
        if client.transport is not None:
            client.transport.disconnect()


def percentile(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6  # ms
