"""Fan-out through Centrifugo's protocol beside the ``/feed/`` protocol, on one server, in the
same run.

    .venv/bin/python benchmarks/centrifugo_fanout.py                 # 1,000 + 1,000 clients, ~40 s
    .venv/bin/python benchmarks/centrifugo_fanout.py --clients 200 --seconds 2

One sanic-feeds process (memory broker, pinned to CPU 0 like benchmarks/run.py) holds 1,000
picows WebSocket clients on ``/feed/feed-room`` and 1,000 picows clients of Centrifugo's JSON
protocol on ``/connection/websocket`` (``connect``, then ``subscribe`` to ``cf-room``; they
answer the server's pings), 1,000 such clients speaking its Protobuf encoding (the
``centrifuge-protobuf`` subprotocol, on ``pb-room``), and 1,000 clients of its HTTP-streaming
emulation (raw HTTP/1.1 on
uvloop: ``POST /connection/http_stream`` with the connect command, then the subscribe to
``hs-room`` posted to ``/emulation`` with the connect reply's session; they count the
publications in what arrives). A ``/feed/`` publisher sends chats to one channel, then the
next, at the same rate, in turn for ``--rounds`` rounds; a chat reaches Centrifugo subscribers
as a ``pub`` push of its message. The figure is the server's CPU time per delivered message on each
channel, and the ratios to ``/feed/`` (target: Centrifugo within 1.2x). Bounded throughout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
from pathlib import Path

import uvloop
from picows import WSFrame, WSMsgType, WSTransport, ws_connect

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
from loadgen import Subscriber, Tally, close_all, open_clients  # noqa: E402
from procs import free_port, running  # noqa: E402
from sanic_feeds.centrifugo_pb.centrifugo_client_pb2 import Command  # noqa: E402
from sanic_feeds.centrifugo_protobuf import varint  # noqa: E402

SUBSCRIBE = b'{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"cf-room"}}'


def _protobuf_subscribe() -> bytes:
    connect, subscribe = Command(id=1), Command(id=2)
    connect.connect.SetInParent()
    subscribe.subscribe.channel = "pb-room"
    return b"".join(varint(m.ByteSize()) + m.SerializeToString() for m in (connect, subscribe))


PB_SUBSCRIBE = _protobuf_subscribe()
PB_PING = b"\x00"


class CentrifugoSubscriber(Subscriber):
    """A Centrifugo JSON client: connects, subscribes, answers pings, counts publications."""

    def on_ws_connected(self, transport: WSTransport) -> None:
        super().on_ws_connected(transport)
        transport.send(WSMsgType.TEXT, SUBSCRIBE)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.TEXT:
            payload = frame.get_payload_as_bytes()
            if payload == b"{}":
                transport.send(WSMsgType.TEXT, b"{}")
                return
            if b'{"id":2,"subscribe"' in payload:
                self.tally.welcomed += 1
                self.tally.changed.set()
        super().on_ws_frame(transport, frame)


class ProtobufSubscriber(Subscriber):
    """A Centrifugo Protobuf client: as :class:`CentrifugoSubscriber`, in binary frames (the
    publication's data is the chat's JSON text, stamp and all)."""

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        transport.send(WSMsgType.BINARY, PB_SUBSCRIBE)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not WSMsgType.BINARY:
            super().on_ws_frame(transport, frame)
            return
        payload = frame.get_payload_as_bytes()
        tally = self.tally
        if payload == PB_PING:
            transport.send(WSMsgType.BINARY, PB_PING)
        elif payload.startswith(b"\x08\x02", 1):  # the reply to command 2, the subscribe
            tally.welcomed += 1
            tally.changed.set()
        elif tally.record and STAMP.search(payload):
            tally.deliveries += 1


async def open_centrifugo(
    url: str, count: int, tally: Tally, protobuf: bool = False
) -> list[Subscriber]:
    clients: list[Subscriber] = []
    semaphore = asyncio.Semaphore(200)

    async def one() -> None:
        async with semaphore:
            _, client = await ws_connect(
                lambda: (ProtobufSubscriber if protobuf else CentrifugoSubscriber)(tally),
                url,
                max_frame_size=1 << 20,
                extra_headers={"Sec-WebSocket-Protocol": "centrifuge-protobuf"}
                if protobuf
                else None,
            )
            clients.append(client)  # type: ignore[arg-type]

    await asyncio.gather(*(one() for _ in range(count)))
    async with asyncio.timeout(30):
        while tally.welcomed < count:
            tally.changed.clear()
            await tally.changed.wait()
    return clients


STAMP = re.compile(rb'"(\d+) (\d+) x')
PUB = b'"pub":'
_SESSION = re.compile(rb'"session":"([^"]+)","node":"([^"]+)"')


class StreamClient(asyncio.Protocol):
    """One HTTP-streaming emulation client: connects, has its subscribe posted, counts pubs."""

    def __init__(
        self,
        port: int,
        counts: dict[str, int],
        joined: asyncio.Event,
        posts: set[asyncio.Task[None]],
    ) -> None:
        self.port = port
        self.posts = posts
        self.counts = counts
        self.joined = joined
        self.head = b""
        self.tail = b""
        self.state = "connecting"
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sink: asyncio.Transport = transport  # type: ignore[assignment]  (uvloop's transports)
        self.transport = sink
        body = b'{"id":1,"connect":{}}'
        sink.write(
            b"POST /connection/http_stream HTTP/1.1\r\nHost: bench\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
        )

    def data_received(self, data: bytes) -> None:
        if self.state == "connecting":
            self.head += data
            found = _SESSION.search(self.head)
            if found is None:
                return
            self.state = "subscribing"
            session, node = found.groups()
            post = asyncio.ensure_future(post_subscribe(self.port, session, node))
            self.posts.add(post)
            post.add_done_callback(self.posts.discard)
            data, self.head = self.head[found.end() :], b""
        if self.state == "subscribing" and b'{"id":2,"subscribe"' in data:
            self.state = "subscribed"
            self.counts["subscribed"] += 1
            if self.counts["subscribed"] >= self.counts["expected"]:
                self.joined.set()
        buf = self.tail + data
        self.counts["pubs"] += buf.count(PUB)
        self.tail = buf[-(len(PUB) - 1) :]


async def post_subscribe(port: int, session: bytes, node: bytes) -> None:
    command = json.dumps({"id": 2, "subscribe": {"channel": "hs-room"}})
    body = json.dumps({"session": session.decode(), "node": node.decode(), "data": command})
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /emulation HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%b" % (len(body), body.encode())
    )
    await reader.read()
    writer.close()


async def open_streams(port: int, count: int) -> tuple[list[StreamClient], dict[str, int]]:
    loop = asyncio.get_running_loop()
    counts = {"pubs": 0, "subscribed": 0, "expected": count}
    joined = asyncio.Event()
    clients: list[StreamClient] = []
    posts: set[asyncio.Task[None]] = set()
    semaphore = asyncio.Semaphore(100)

    async def one() -> None:
        async with semaphore:
            _, client = await loop.create_connection(
                lambda: StreamClient(port, counts, joined, posts), "127.0.0.1", port
            )
            clients.append(client)

    await asyncio.gather(*(one() for _ in range(count)))
    async with asyncio.timeout(30):
        await joined.wait()
        while posts:
            await asyncio.wait(set(posts))
    return clients, counts


async def main(args: argparse.Namespace) -> dict[str, object]:
    port = free_port()
    with running("sanic-feeds", server_argv(port), port) as proc:
        feed_tally, cf_tally = Tally(), Tally()
        base = f"ws://127.0.0.1:{port}"
        feed_clients = await open_clients(f"{base}/feed/feed-room", args.clients, feed_tally)
        cf_url = f"{base}/connection/websocket"
        cf_clients = await open_centrifugo(cf_url, args.clients, cf_tally)
        pb_tally = Tally()
        pb_clients = await open_centrifugo(cf_url, args.clients, pb_tally, protobuf=True)
        streams, stream_counts = await open_streams(port, args.clients)
        publishers = {
            room: (await open_clients(f"{base}/feed/{room}", 1, Tally()))[0]
            for room in ("feed-room", "cf-room", "pb-room", "hs-room")
        }
        feed_tally.record = cf_tally.record = pb_tally.record = True
        kinds: dict[str, tuple[Send, Received]] = {
            "feed": (text_sender(publishers["feed-room"]), lambda: feed_tally.deliveries),
            "centrifugo": (text_sender(publishers["cf-room"]), lambda: cf_tally.deliveries),
            "protobuf": (text_sender(publishers["pb-room"]), lambda: pb_tally.deliveries),
            "http_stream": (text_sender(publishers["hs-room"]), lambda: stream_counts["pubs"]),
        }
        per_delivery, delivered = await measure_in_turn(proc.pid, kinds, args)
        close_all([*feed_clients, *cf_clients, *pb_clients, *publishers.values()])
        close_transports(client.transport for client in streams)
        await asyncio.sleep(0.3)
    feed = statistics.median(per_delivery["feed"])
    result: dict[str, object] = {"clients_per_kind": args.clients, "rate_per_s": args.rate}
    for kind, figures in per_delivery.items():
        result[f"{kind}_cpu_us_per_delivery"] = round(statistics.median(figures), 3)
    for kind in ("centrifugo", "protobuf", "http_stream"):
        result[f"{kind}_over_feed"] = round(statistics.median(per_delivery[kind]) / feed, 3)
        result[f"rounds_{kind}_over_feed"] = [
            round(c / f, 3) for c, f in zip(per_delivery[kind], per_delivery["feed"], strict=True)
        ]
    for kind, count in delivered.items():
        result[f"{kind}_deliveries"] = count
    return result


if __name__ == "__main__":
    result = uvloop.run(asyncio.wait_for(main(parse_args(__doc__.splitlines()[0])), 300))
    write_result("centrifugo_fanout", result)
