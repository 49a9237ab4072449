"""Centrifugo's bidirectional emulation with its JavaScript SDK (npm ``centrifuge``, in Node),
over HTTP streaming and over SSE, against two instances on one private Redis: connect,
subscribe, publish both ways, join, presence, recovery after a disconnect, a refused token,
and commands posted to the other instance's ``/emulation`` (forwarded through the broker).
One Node run per transport (tests/js/check_emulation.js). The pure parts are pinned without
sockets. Skipped where Node or the installed packages (``npm ci`` in tests/js) are missing.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import jwt
import orjson
import pytest

from sanic_feeds import FeedsConfig
from sanic_feeds.centrifugo_emulation import (
    BadEmulationRequest,
    EmulatedSessions,
    EmulationRequest,
    farewell,
    parse_protobuf_request,
    parse_request,
)
from sanic_feeds.centrifugo_pb.centrifugo_client_pb2 import EmulationRequest as ProtobufRequest
from sanic_feeds.centrifugo_wire import HTTP_STREAM_FRAMING, SSE_FRAMING
from sanic_feeds.hooks import SubscribeRequest
from support.centrifuge_js import needs_node, run_check
from support.local_server import local_server

SECRET = "centrifugo-emulation-test-secret-32b"


def node_has_eventsource() -> bool:
    if shutil.which("node") is None:
        return False
    probe = ["node", "--experimental-eventsource", "-e", "new EventSource('http://127.0.0.1:9')"]
    return subprocess.run(probe, capture_output=True, timeout=20).returncode == 0


def token(sub: str) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + 300)}, SECRET)


@needs_node
@pytest.mark.parametrize("transport", ["http_stream", "sse"])
async def test_the_javascript_sdk_over_emulation(redis_url: str, transport: str) -> None:
    """The SDK works over the emulation transport as over a WebSocket, across instances; hooks
    are told the transport's name."""
    flags = []
    if transport == "sse":
        if not node_has_eventsource():
            pytest.skip("this Node has no EventSource (--experimental-eventsource)")
        flags = ["--experimental-eventsource", "--no-warnings"]
    config = FeedsConfig(broker=redis_url, auth="jwt", jwt_secret=SECRET, ping_interval=1)
    async with local_server(config) as one, local_server(config) as two:
        hooked: set[str] = set()

        async def note(request: SubscribeRequest) -> None:
            hooked.add(request.transport)

        one.feeds.on_subscribe(note)
        two.feeds.on_subscribe(note)
        path = f"/connection/{transport}"
        given = {
            "transport": transport,
            "one_stream": one.http_url + path,
            "two_stream": two.http_url + path,
            "one_emulation": one.http_url + "/emulation",
            "two_emulation": two.http_url + "/emulation",
            "ann": token("ann"),
            "bob": token("bob"),
            "bad": jwt.encode({"sub": "ann"}, "not-the-secret-but-long-enough-for-hs256"),
        }
        results = await run_check("check_emulation.js", given, flags=flags)
        forwarded = one.feeds._centrifugo_streams.sessions.delivered
    assert results["transport"] == transport
    assert results["join_user"] == "bob"
    assert results["ann_received"] == [{"text": "hi"}, {"text": "yo"}]
    assert results["bob_received"] == [{"text": "hi"}, {"text": "yo"}]
    assert results["presence_users"] == ["ann", "bob"]
    assert results["recovery"] == {"wasRecovering": True, "recovered": True, "data": [0, 1, 2]}
    assert results["refused"] == 3500
    assert results["refused_attempts"] == 1
    assert forwarded > 0  # ann's commands reached instance one through the broker
    assert hooked == {transport}


def test_requests_are_read_strictly() -> None:
    """An /emulation body must name a session, a node id and the commands (JSON strings, or
    an EmulationRequest in the Protobuf encoding)."""
    request = parse_request(b'{"session":"s1","node":"host-1-ab","data":"{\\"id\\":1}"}')
    assert request == EmulationRequest("host-1-ab", "s1", '{"id":1}')
    assert parse_request(request.encode()) == request
    for bad in (b"[]", b"nope", b'{"session":"s","node":"n"}', b'{"session":"s","node":"a b"}'):
        with pytest.raises(BadEmulationRequest):
            parse_request(bad)
    binary = ProtobufRequest(node="host-1-ab", session="s1", data=b"\x02\x08\x01")
    request = parse_protobuf_request(binary.SerializeToString())
    assert request == EmulationRequest("host-1-ab", "s1", b"\x02\x08\x01")
    assert parse_request(request.encode()) == request  # forwarded to another node as base64
    with pytest.raises(BadEmulationRequest):
        parse_protobuf_request(b"\xff\xff")


def test_a_forwarded_request_reaches_only_its_session() -> None:
    """Forwarded requests go to the named session; unknown ones and garbage are dropped."""

    class Seen:
        def __init__(self) -> None:
            self.got: list[str | bytes] = []

        def receive(self, message: str | bytes) -> None:
            self.got.append(message)

    sessions, mine, other = EmulatedSessions(), Seen(), Seen()
    sessions.add("s1", mine)
    sessions.add("s2", other)
    sessions.forwarded(EmulationRequest("n", "s1", "{}").encode())
    sessions.forwarded(EmulationRequest("n", "s3", "{}").encode())
    sessions.forwarded(b"garbage")
    sessions.remove("s2")
    assert not sessions.deliver("s2", "{}")
    assert (mine.got, other.got, sessions.delivered) == (["{}"], [], 1)


def test_streams_end_with_a_disconnect_push() -> None:
    """A close is a disconnect push in the transport's framing; below 3000, nothing."""
    sse = farewell(SSE_FRAMING)(3500, "invalid token")
    assert sse.startswith(b"data: ") and sse.endswith(b"\n\n")
    pushed = orjson.loads(sse[6:])["push"]["disconnect"]
    assert pushed == {"code": 3500, "reason": "invalid token", "reconnect": False}
    line = farewell(HTTP_STREAM_FRAMING)(3001, "shutdown")
    assert orjson.loads(line)["push"]["disconnect"]["reconnect"] is True
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert farewell(HTTP_STREAM_FRAMING)(1013, "full") == b""
    assert HTTP_STREAM_FRAMING.ping == b"{}\n"
    assert SSE_FRAMING.ping == b"data: {}\n\n"
