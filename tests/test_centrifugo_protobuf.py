"""Centrifugo's Protobuf encoding: the translation to and from JSON without sockets;
centrifuge-python with ``use_protobuf``; and centrifuge-js's protobuf build (in Node, over
WebSocket and over HTTP streaming with commands posted to the other instance) beside a JSON
client, on two instances on one private Redis: connect, join, publish every way, presence,
history, RPC, recovery, a refused token (tests/js/check_protobuf.js). The Node run is skipped
where Node or ``npm ci`` is missing.
"""

from __future__ import annotations

import asyncio
import time

import jwt
import orjson
from centrifuge import Client, PublicationContext, SubscriptionEventHandler

from sanic_feeds import FeedsConfig
from sanic_feeds.centrifugo_pb.centrifugo_client_pb2 import Command, Reply
from sanic_feeds.centrifugo_protobuf import (
    commands_as_json,
    delimited,
    reply_as_json,
    reply_of,
    varint,
)
from sanic_feeds.centrifugo_wire import PROTOBUF_FRAMING
from sanic_feeds.frames import payload_of
from sanic_feeds.protocol import chat
from sanic_feeds.rpc import ClientCall
from support.centrifuge_js import needs_node, run_check
from support.local_server import local_server

SECRET = "centrifugo-protobuf-test-secret-32b"


def token(sub: str) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + 300)}, SECRET)


def test_commands_become_the_json_frame() -> None:
    """Varint-delimited commands become one JSON command per line; bytes fields carry JSON."""
    connect = Command(id=1)
    connect.connect.token = "t"
    connect.connect.data = b'{"a":1}'
    publish = Command(id=2)
    publish.publish.channel = "room"
    publish.publish.data = b"not json"
    frame = b"".join(
        varint(len(raw)) + raw
        for raw in (m.SerializeToString() for m in (connect, publish, Command()))
    )
    lines = commands_as_json(frame)
    assert isinstance(lines, str)
    assert lines.splitlines() == [
        '{"id":1,"connect":{"token":"t","data":{"a":1}}}',
        '{"id":2,"publish":{"channel":"room","data":"not json"}}',
        "{}",
    ]
    assert commands_as_json(b"\x05\x08") == b"\x05\x08"  # truncated: left for the machine's 3501


def test_replies_and_pushes_become_protobuf() -> None:
    """Replies, empty results, maps and pushes keep every field; a ping is an empty Reply."""
    connect = b'{"id":3,"connect":{"client":"c1","subs":{"a":{"offset":7,"epoch":"e"}},"ping":1}}'
    (raw,) = delimited(reply_of(connect))
    reply = Reply()
    reply.ParseFromString(raw)
    assert (reply.id, reply.connect.client, reply.connect.subs["a"].offset) == (3, "c1", 7)
    assert reply_as_json(reply_of(b'{"id":5,"publish":{}}')) == b'{"id":5,"publish":{}}'
    assert PROTOBUF_FRAMING.ping == b"\x82\x01\x00"
    stored = b'{"id":4,"epoch":"e1",' + chat("a", "c2", "bob", {"text": "hi"})[1:]
    pushed = PROTOBUF_FRAMING.pushes.frame(stored)
    pub = orjson.loads(reply_as_json(payload_of(pushed)))["push"]["pub"]
    assert pub["data"] == {"text": "hi"} and pub["offset"] == 4 and pub["info"]["user"] == "bob"
    assert PROTOBUF_FRAMING.pushes.body_of(pushed) == b'{"id":4,"epoch":"e1"}'


@needs_node
async def test_the_javascript_sdk_speaks_protobuf(redis_url: str) -> None:
    """A Protobuf client and a JSON client share a channel across instances."""
    config = FeedsConfig(broker=redis_url, auth="jwt", jwt_secret=SECRET, ping_interval=1)
    async with local_server(config) as one, local_server(config) as two:
        for server in (one, two):

            @server.feeds.rpc("whoami")
            async def whoami(call: ClientCall) -> object:
                return {"user": call.user, "asked": call.data}

        given = {
            "one": f"ws://127.0.0.1:{one.port}/connection/websocket",
            "two": f"ws://127.0.0.1:{two.port}/connection/websocket",
            "one_stream": f"{one.http_url}/connection/http_stream",
            "two_emulation": f"{two.http_url}/emulation",
            "ann": token("ann"),
            "bob": token("bob"),
            "carol": token("carol"),
            "bad": jwt.encode({"sub": "ann"}, "not-the-secret-but-long-enough-for-hs256"),
        }
        results = await run_check("check_protobuf.js", given)
    assert results["client"] is True
    assert results["join_user"] == "bob"
    assert results["carol_transport"] == "http_stream"
    assert results["ann_received"] == [
        {"data": {"text": "hi"}, "user": "bob", "offset": 1},
        {"data": {"text": "yo"}, "user": "ann", "offset": 2},
        {"data": {"text": "hey"}, "user": "carol", "offset": 3},
    ]
    said = [{"text": "hi"}, {"text": "yo"}, {"text": "hey"}]
    assert results["bob_received"] == results["carol_received"] == said
    assert results["presence_users"] == ["ann", "bob", "carol"]
    assert results["history"] == said
    assert results["rpc"] == {"user": "ann", "asked": {"x": 1}}
    assert results["recovery"] == {"wasRecovering": True, "recovered": True, "data": [0, 1, 2]}
    assert results["refused"] == 3500


async def test_the_python_sdk_speaks_protobuf() -> None:
    """centrifuge-python with ``use_protobuf``: connect, subscribe, publish, and receive what
    the application publishes, as JSON text in bytes."""

    class Heard(SubscriptionEventHandler):  # type: ignore[misc]  # the SDK ships no types
        def __init__(self) -> None:
            self.publications: asyncio.Queue[PublicationContext] = asyncio.Queue()

        async def on_publication(self, ctx: PublicationContext) -> None:
            await self.publications.put(ctx)

    config = FeedsConfig(auth="jwt", jwt_secret=SECRET)
    async with local_server(config) as server:
        url = f"ws://127.0.0.1:{server.port}/connection/websocket"
        sdk = Client(url, token=token("ann"), use_protobuf=True)
        try:
            await sdk.connect()
            heard = Heard()
            sub = sdk.new_subscription("py-room", events=heard)
            await sub.subscribe()
            await sub.publish(b'{"text":"hi"}')
            await server.feeds.publish("py-room", {"n": 1})
            got = [await asyncio.wait_for(heard.publications.get(), 5) for _ in range(2)]
            assert [orjson.loads(ctx.pub.data) for ctx in got] == [{"text": "hi"}, {"n": 1}]
            assert got[0].pub.info.user == "ann"
            history = await sub.history(limit=10)
            assert [orjson.loads(p.data) for p in history.publications] == [
                {"text": "hi"},
                {"n": 1},
            ]
        finally:
            await sdk.disconnect()
