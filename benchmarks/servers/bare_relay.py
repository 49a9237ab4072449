"""Floor: the chat scenario's topology with no product logic at all, to tell what moving each
chat through Redis to two processes costs by itself.

    python benchmarks/servers/bare_relay.py PORT memory://
    python benchmarks/servers/bare_relay.py PORT redis://127.0.0.1:PORT/0

picows on uvloop (the fastest WebSocket stack Python has) and hiredis. A member joins the room
named by the last part of its path; ``{"type":"ping"}`` is answered ``{"type":"pong"}``; a chat
is parsed, numbered and serialized (orjson) as a product must, and then, on ``memory://``,
written to every member of its room, or, on Redis, sent with a plain ``PUBLISH`` (no history, no
reply awaited) on one RESP3 connection that also carries the process's subscriptions; a pushed
message is written to the process's members of that room. Nothing else: no history, presence,
auth, limits, metrics, backpressure or error handling. What the two instances cost over one on
the memory path here is the part of sanic-feeds' figure that comes with the topology (the
extra wake-ups, reads and writes) and not with its code.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import hiredis
import orjson
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

TEXT = WSMsgType.TEXT
PONG = b'{"type":"pong"}'
rooms: dict[bytes, list[WSTransport]] = {}


def command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def fan_out(room: bytes, body: bytes) -> None:
    for member in rooms.get(room, ()):
        member.send(TEXT, body)


class Redis(asyncio.Protocol):
    """One RESP3 connection: the publishes go out on it, the subscribed messages come in."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(command(b"HELLO", b"3"))

    def send(self, *args: bytes) -> None:
        assert self.transport is not None
        self.transport.write(command(*args))

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if type(reply) is hiredis.PushNotification and reply[0] == b"message":
                fan_out(reply[1], reply[2])


class Member(WSListener):
    def __init__(self, room: bytes, redis: Redis | None) -> None:
        self.room, self.redis, self.sent = room, redis, 0

    def on_ws_connected(self, transport: WSTransport) -> None:
        members = rooms.setdefault(self.room, [])
        if not members and self.redis is not None:
            self.redis.send(b"SUBSCRIBE", self.room)
        members.append(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        members = rooms.get(self.room, [])
        if transport in members:
            members.remove(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not TEXT:
            return
        message = orjson.loads(frame.get_payload_as_bytes())
        if message.get("type") == "ping":
            transport.send(TEXT, PONG)
            return
        self.sent += 1
        chat = {"type": "chat", "id": self.sent, "message": message.get("message")}
        body = orjson.dumps(chat)
        if self.redis is None:
            fan_out(self.room, body)
        else:
            self.redis.send(b"PUBLISH", self.room, body)


async def main(port: int, broker: str) -> None:
    redis = None
    if broker.startswith("redis://"):
        host, _, redis_port = broker.removeprefix("redis://").split("/")[0].partition(":")
        loop = asyncio.get_running_loop()
        _, redis = await loop.create_connection(Redis, host, int(redis_port or 6379))

    def member(request: WSUpgradeRequest) -> Member:
        path = request.path.decode() if isinstance(request.path, bytes) else str(request.path)
        return Member(path.partition("?")[0].rsplit("/", 1)[-1].encode(), redis)

    server = await ws_create_server(member, "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2]))
