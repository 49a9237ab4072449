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

# Matches the text "<seq> <send time ns> xxx..." inside any server's frame: plain, inside our
# JSON, or inside a Socket.IO event (where the quote before it is escaped).
_STAMP = re.compile(rb'"(\d+) (\d+) x')
_TEXT = WSMsgType.TEXT
_CLOSE = WSMsgType.CLOSE
_now_ns = time.perf_counter_ns
MESSAGE_SIZE = 128

FEEDS = "feeds"
"""Dialect of servers that take and broadcast plain text frames (sanic-feeds and most baselines)."""
SOCKETIO = "socketio"
"""Dialect of the python-socketio server: Engine.IO 4 packets, a ``join`` event per client."""


def message(seq: int, dialect: str = FEEDS) -> bytes:
    """A 128-byte frame carrying ``seq`` and the send time (ns), as a chat of ``dialect``."""
    stamp = b"%d %d " % (seq, time.perf_counter_ns())
    if dialect == SOCKETIO:
        head, tail = b'42["chat","' + stamp, b'"]'
    else:
        head, tail = b'{"type":"chat","message":"' + stamp, b'"}'
    return head + b"x" * (MESSAGE_SIZE - len(head) - len(tail)) + tail


@dataclass
class Tally:
    """Shared by all subscribers of one run."""

    receipts: dict[int, int] = field(default_factory=dict)
    latencies_ns: list[int] = field(default_factory=list)
    deliveries: int = 0
    record: bool = False
    welcomed: int = 0
    waiting: bool = False
    """Someone waits on ``changed`` for receipts (the closed loop): only then is it set."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class Subscriber(WSListener):
    def __init__(
        self, tally: Tally, stalled: bool = False, dialect: str = FEEDS, room: str = ""
    ) -> None:
        self.tally = tally
        self.stalled = stalled
        self.dialect = dialect
        self.room = room
        self.transport: WSTransport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if self.stalled and self.dialect != SOCKETIO:
            transport.underlying_transport.pause_reading()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        # The hot path of the whole benchmark: it runs once per delivery, so it does little.
        received = _now_ns()
        kind = frame.msg_type
        if kind is not _TEXT:
            if kind is _CLOSE:
                self.close_code = int(frame.get_close_code())
            return
        payload = frame.get_payload_as_bytes()
        if self.dialect == SOCKETIO and self._engine_io(transport, payload):
            return
        match = _STAMP.search(payload)
        tally = self.tally
        if match is None:
            if b'"system"' in payload:
                tally.welcomed += 1
                tally.changed.set()
                if self.stalled:  # a Socket.IO client stops reading once it has joined
                    transport.underlying_transport.pause_reading()
            return
        if not tally.record:
            return
        seq, sent = match.groups()
        seq = int(seq)
        tally.deliveries += 1
        receipts = tally.receipts
        receipts[seq] = receipts.get(seq, 0) + 1
        tally.latencies_ns.append(received - int(sent))
        if tally.waiting:
            tally.changed.set()

    def _engine_io(self, transport: WSTransport, payload: bytes) -> bool:
        """Answer Engine.IO/Socket.IO control packets; True when ``payload`` was one."""
        if payload.startswith(b"0{"):  # open: connect to the default namespace
            transport.send(WSMsgType.TEXT, b"40")
        elif payload.startswith(b"40"):  # connected: join the room
            transport.send(WSMsgType.TEXT, b'42["join","%s"]' % self.room.encode())
        elif payload == b"2":  # ping
            transport.send(WSMsgType.TEXT, b"3")
        else:
            return False
        return True

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def open_clients(
    url: str,
    count: int,
    tally: Tally,
    *,
    parallel: int = 200,
    stalled: int = 0,
    dialect: str = FEEDS,
    room: str = "",
) -> list[Subscriber]:
    """Connect ``count`` subscribers (the first ``stalled`` never read).

    Socket.IO clients join their room after connecting: wait until every one has been told it
    joined (bounded), so that a measurement never starts with members missing.
    """
    clients: list[Subscriber] = []
    semaphore = asyncio.Semaphore(parallel)
    welcomed = tally.welcomed

    async def one(index: int) -> None:
        async with semaphore:
            _, client = await ws_connect(
                lambda: Subscriber(tally, index < stalled, dialect, room),
                url,
                max_frame_size=1 << 20,
                # Slow servers (python-socketio) queue thousands of handshakes: be patient.
                websocket_handshake_timeout=60,
            )
            clients.append(client)  # type: ignore[arg-type]

    await asyncio.gather(*(one(i) for i in range(count)))
    if dialect == SOCKETIO:
        async with asyncio.timeout(30):
            while tally.welcomed - welcomed < count:
                tally.changed.clear()
                await tally.changed.wait()
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
