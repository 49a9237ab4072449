"""The lean /feed/ socket (connection.FeedSocket behind FeedsWebSocketProtocol) over real TCP,
and the same server behaviour with Sanic's default WebSocket protocol
(websocket_protocol.SanicSocket)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sanic.request import Request
from sanic.server.protocols.websocket_protocol import WebSocketProtocol
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sanic_feeds.auth import Handshake, Identity, NoAuth
from sanic_feeds.websocket_protocol import FeedsWebSocketProtocol
from support.local_server import local_server
from support.raw_ws import RawClient, close_code_of, masked_frame
from support.stalled import StalledClient
from support.ws import eventually, recv_json, recv_until

TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


async def chats_received(ws: ClientConnection, count: int) -> list[object]:
    """The messages of the next ``count`` chats ``ws`` receives (other types skipped)."""
    got: list[object] = []
    async with asyncio.timeout(5):
        while len(got) < count:
            message = await recv_json(ws)
            if message["type"] == "chat":
                got.append(message["message"])
    return got


async def read_until_closed(ws: ClientConnection) -> None:
    async with asyncio.timeout(5):
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.recv()


def of_type(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda message: message.get("type") == kind


def chat(message: object) -> bytes:
    return orjson.dumps({"type": "chat", "message": message})


async def next_json(client: RawClient, kind: str) -> dict[str, object]:
    """The next text message of type ``kind`` (skipping others)."""
    for _ in range(50):
        payload = await client.read_until(TEXT)
        message = orjson.loads(payload)
        if message["type"] == kind:
            return dict(message)
    raise AssertionError(f"no {kind} message")


async def test_frames_pipelined_with_the_handshake_are_not_lost() -> None:
    """A client that sends frames right behind its upgrade request: they count."""
    async with local_server(join_leave=False) as server:
        client = await RawClient.connect(
            server.port, "/feed/pipe", pipelined=masked_frame(0x81, chat("early"))
        )
        try:
            assert client.status == 101
            assert (await next_json(client, "system"))["channel"] == "pipe"
            assert (await next_json(client, "chat"))["message"] == "early"
        finally:
            client.abort()


class SlowAuth(NoAuth):
    """Takes its time, as a remote token check would."""

    async def authenticate(self, handshake: Handshake) -> Identity:
        await asyncio.sleep(0.3)
        return await super().authenticate(handshake)


async def test_messages_sent_during_authentication_wait_and_all_arrive_in_order() -> None:
    """A client that pipelines a burst behind its handshake while the server is still checking
    its credential: the socket holds some, stops reading, and loses nothing."""
    count = 10_000  # about 450 KB: more than one read, so the pause matters
    burst = b"".join(masked_frame(0x81, chat(n)) for n in range(count))
    async with local_server(join_leave=False, authenticator=SlowAuth()) as server:
        client = await RawClient.connect(server.port, "/feed/burst", pipelined=burst)
        assert server.node.sessions == {}  # still authenticating
        try:
            await next_json(client, "system")
            got = [(await next_json(client, "chat"))["message"] for _ in range(count)]
            assert got == list(range(count))
        finally:
            client.abort()


@pytest.mark.parametrize("ending", ["close frame", "violation", "abort"])
async def test_messages_sent_just_before_the_end_are_all_published(
    ending: str, broker_url: str
) -> None:
    """Chats followed at once by a close frame, by a protocol violation, or by the connection
    dropping: every chat the server received whole still reaches the other members."""
    count = 50
    burst = b"".join(masked_frame(0x81, chat(n)) for n in range(count))
    tail = {
        "close frame": masked_frame(0x88, (1000).to_bytes(2, "big")),
        "violation": masked_frame(0x81, b"{}", mask=False),
        "abort": b"",
    }[ending]
    async with local_server(broker=broker_url, join_leave=False) as server:
        async with connect(server.ws_url("last"), max_queue=None) as other:
            await recv_json(other)
            client = await RawClient.connect(server.port, "/feed/last")
            try:
                await next_json(client, "system")
                await eventually(lambda: len(server.node.sessions) == 2, timeout=5)
                client.writer.write(burst + tail)
                await client.writer.drain()
                if ending == "abort":
                    await asyncio.sleep(0.05)  # let the bytes arrive, then vanish
            finally:
                client.abort()
            assert await chats_received(other, count) == list(range(count))
            await eventually(lambda: len(server.node.sessions) == 1, timeout=10)


async def test_chats_queued_when_the_server_shuts_down_are_still_published(
    redis_url: str,
) -> None:
    """An instance closing its sockets (1001) still publishes what they had sent it: members on
    the other instance get every chat."""
    count = 30
    burst = b"".join(masked_frame(0x81, chat(n)) for n in range(count))
    async with (
        local_server(broker=redis_url, join_leave=False, close_timeout=1) as leaving,
        local_server(broker=redis_url, join_leave=False) as staying,
    ):
        async with connect(staying.ws_url("handover"), max_queue=None) as other:
            await recv_json(other)
            client = await RawClient.connect(leaving.port, "/feed/handover")
            try:
                await next_json(client, "system")
                stats = leaving.node.stats
                seen = stats.client_messages
                client.writer.write(burst)
                async with asyncio.timeout(5):
                    while stats.client_messages == seen:  # the first one is being handled
                        await asyncio.sleep(0)
                await leaving.node.drain()
            finally:
                client.abort()
            assert await chats_received(other, count) == list(range(count))


async def test_ping_gets_its_pong_and_fragments_make_one_message() -> None:
    async with local_server(join_leave=False) as server:
        client = await RawClient.connect(server.port, "/feed/frag")
        try:
            await next_json(client, "system")
            await client.send(0x89, b"are you there")
            assert await client.read_until(PONG) == b"are you there"
            whole = chat("split in three")
            await client.send(0x01, whole[:5])  # text, not final
            await client.send(0x89, b"in between")  # a control frame may come between
            await client.send(0x00, whole[5:12])  # continuation
            await client.send(0x80, whole[12:])  # final continuation
            assert (await next_json(client, "chat"))["message"] == "split in three"
        finally:
            client.abort()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (masked_frame(0x81, b"{}", mask=False), 1002),  # clients must mask
        (masked_frame(0x83, b""), 1002),  # unknown opcode
        (masked_frame(0x81, b"\xff\xfe"), 1007),  # invalid UTF-8
        (masked_frame(0x81, b"x" * 2000), 1009),  # over max_message_size
    ],
    ids=["unmasked", "bad-opcode", "bad-utf8", "too-big"],
)
async def test_protocol_violations_close_with_their_code_and_spare_the_others(
    frame: bytes, code: int
) -> None:
    async with local_server(join_leave=False, max_message_size=1024) as server:
        async with connect(server.ws_url("room")) as other:
            await recv_json(other)
            client = await RawClient.connect(server.port, "/feed/room")
            try:
                await next_json(client, "system")
                client.writer.write(frame)
                assert close_code_of(await client.read_until(CLOSE)) == code
                await client.read_eof()
            finally:
                client.abort()
            await other.send(chat("still here").decode())
            assert (await recv_until(other, of_type("chat")))["message"] == "still here"
            await eventually(lambda: len(server.node.sessions) == 1, timeout=5)


async def test_a_protocol_failure_with_more_data_behind_it_still_delivers_the_close() -> None:
    """A bad frame followed by more than the server reads at once: the server half-closes and
    discards the rest, so the client reads the 1002 close frame and then a clean end of stream,
    never a TCP reset (which a close with unread input would cause). Repeated: the reset is a
    matter of timing."""
    behind = masked_frame(0x81, chat("after the bad frame")) * 20_000  # about 800 KB
    async with local_server(join_leave=False, close_timeout=5) as server:
        for _ in range(20):
            client = await RawClient.connect(server.port, "/feed/reset")
            try:
                await next_json(client, "system")
                client.writer.write(masked_frame(0x81, b"{}", mask=False) + behind)
                await client.writer.drain()  # a reset would fail this or the reads below
                assert close_code_of(await client.read_until(CLOSE)) == 1002
                await client.read_eof()
            finally:
                client.abort()
        await eventually(lambda: not server.node.sessions, timeout=5)


async def test_invalid_utf8_in_a_first_fragment_closes_before_the_last_one() -> None:
    """The server answers 1007 to a bad first fragment at once: the client gets the close
    frame while its message is still unfinished."""
    async with local_server(join_leave=False) as server:
        client = await RawClient.connect(server.port, "/feed/utf8")
        try:
            await next_json(client, "system")
            await client.send(0x01, b'{"type":"chat","message":"\xff')  # text, not final
            assert close_code_of(await client.read_until(CLOSE)) == 1007
            await client.read_eof()
        finally:
            client.abort()


async def test_close_handshake_from_the_client() -> None:
    """The server answers a close with the same code and ends the TCP connection."""
    async with local_server(join_leave=False) as server:
        client = await RawClient.connect(server.port, "/feed/bye")
        try:
            await next_json(client, "system")
            await client.send(0x88, (4000).to_bytes(2, "big") + b"done")
            assert close_code_of(await client.read_until(CLOSE)) == 4000
            await client.read_eof()
        finally:
            client.abort()
        await eventually(lambda: not server.node.sessions, timeout=5)


async def test_keepalive_pings_idle_clients_and_drops_silent_ones() -> None:
    """An idle client that answers pings stays; one that ignores them is closed with 1011."""
    async with local_server(join_leave=False, ping_interval=0.2, ping_timeout=0.2) as server:
        async with connect(server.ws_url("idle"), ping_interval=None) as polite:
            await recv_json(polite)
            deaf = await RawClient.connect(server.port, "/feed/idle")
            try:
                await next_json(deaf, "system")
                assert await deaf.read_until(PING, timeout=3) == b""
                # It never answers: closed with 1011 once the ping has gone unanswered.
                assert close_code_of(await deaf.read_until(CLOSE, timeout=3)) == 1011
            finally:
                deaf.abort()
            await eventually(lambda: len(server.node.sessions) == 1, timeout=5)
            await asyncio.sleep(1.0)  # five intervals: the polite one answered every ping
            await polite.send(chat("alive").decode())
            assert (await recv_until(polite, of_type("chat")))["message"] == "alive"


async def http_exchange(port: int, request: bytes) -> bytes:
    """Send one raw HTTP request; the response head (through the blank line)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        async with asyncio.timeout(5):
            return await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.transport.abort()


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ("Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", 426),
        ("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n", 400),
    ],
    ids=["old-version", "bad-key"],
)
async def test_bad_upgrade_requests_are_answered_without_an_error_log(
    headers: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A bad upgrade is the client's mistake: its HTTP status (426 naming the version we
    speak, RFC 6455 4.4), one INFO line, and no ERROR record or traceback."""
    caplog.set_level(logging.INFO)
    async with local_server(join_leave=False) as server:
        request = (
            f"GET /feed/bad HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\n{headers}\r\n"
        ).encode()
        head = (await http_exchange(server.port, request)).decode().lower()
    assert head.startswith(f"http/1.1 {status} ")
    assert ("sec-websocket-version: 13\r\n" in head) == (status == 426)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert not any(r.exc_info for r in caplog.records)
    assert any("refused a WebSocket upgrade" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ("bearer.secret-token", None),
        ("chat, bearer.secret-token", None),
        ("chat, sanic-feeds, bearer.secret-token", "sanic-feeds"),
        (None, None),
    ],
    ids=["token-only", "unknown-and-token", "sanic-feeds-offered", "none-offered"],
)
async def test_subprotocol_is_sanic_feeds_or_none_and_never_the_token(
    offered: str | None, chosen: str | None
) -> None:
    """The 101 names ``sanic-feeds`` when it was offered and no subprotocol otherwise: never a
    ``bearer.<token>`` entry (a credential) nor one the server does not speak."""
    async with local_server(join_leave=False) as server:
        extra = f"Sec-WebSocket-Protocol: {offered}\r\n" if offered else ""
        client = await RawClient.connect(server.port, "/feed/sub", extra_headers=extra)
        try:
            assert client.status == 101
            head = client.response_head.decode()
            assert "secret-token" not in head
            named = [
                line.split(":", 1)[1].strip()
                for line in head.split("\r\n")
                if line.lower().startswith("sec-websocket-protocol:")
            ]
            assert named == ([chosen] if chosen else [])
            await next_json(client, "system")
        finally:
            client.abort()


async def test_sanic_lets_go_of_feed_sockets() -> None:
    """Once a feed socket has joined, no Sanic request or protocol object is kept for it."""
    gc.collect()

    def alive(kind: type) -> int:
        return sum(1 for o in gc.get_objects() if isinstance(o, kind))

    async with local_server(join_leave=False) as server:
        clients = [await connect(server.ws_url("mem")) for _ in range(20)]
        try:
            for ws in clients:
                await recv_json(ws)
            gc.collect()
            assert len(server.node.sessions) == 20
            assert alive(Request) <= 1  # none per socket (at most a request in flight)
            assert alive(FeedsWebSocketProtocol) <= 1
        finally:
            for ws in clients:
                await ws.close()


# -- Sanic's default protocol class (apps that do not pass protocol=FeedsWebSocketProtocol) -----


async def test_default_sanic_protocol_chat_presence_and_cleanup(broker_url: str) -> None:
    async with local_server(
        broker=broker_url, join_leave=True, protocol=WebSocketProtocol
    ) as server:
        async with connect(server.ws_url("plain")) as a, connect(server.ws_url("plain")) as b:
            await recv_json(a)
            await recv_json(b)
            await a.send(chat("hello").decode())
            for ws in (a, b):
                assert (await recv_until(ws, of_type("chat")))["message"] == "hello"
            await b.send('{"type": "presence"}')
            assert len((await recv_until(b, of_type("presence")))["clients"]) == 2
            await b.send("not json")
            assert (await recv_until(b, of_type("error")))["code"] == "invalid_json"
        await eventually(lambda: not server.node.sessions and not server.node.hub.rooms(), 5)


async def test_default_sanic_protocol_slow_consumer_and_rate_limit() -> None:
    async with local_server(
        join_leave=False,
        protocol=WebSocketProtocol,
        client_buffer=64 * 1024,
        close_timeout=0.5,
        rate_limit="5/60",
        rate_limit_violations=2,
    ) as server:
        stalled = await StalledClient.connect(server.port, "/feed/flood")
        try:
            for n in range(300):
                await server.feeds.publish("flood", "x" * 1000 + str(n))
            data = await stalled.read_all(timeout=5)
            assert b"\x88" in data and (4001).to_bytes(2, "big") in data
        finally:
            stalled.close()
        async with connect(server.ws_url("limits")) as ws:
            await recv_json(ws)
            with contextlib.suppress(ConnectionClosed):
                for n in range(20):
                    await ws.send(chat(n).decode())
                    await asyncio.sleep(0.01)
            await read_until_closed(ws)
            assert ws.close_code == 4429
        await eventually(lambda: not server.node.sessions, timeout=5)


async def test_default_sanic_protocol_shutdown_closes_with_1001() -> None:
    async with local_server(join_leave=False, protocol=WebSocketProtocol) as server:
        ws = await connect(server.ws_url("down"))
        await recv_json(ws)
        await server.node.drain()
        await read_until_closed(ws)
        assert ws.close_code == 1001


# -- generated byte streams after the handshake ------------------------------------------------

DOCUMENTED_TYPES = {"system", "chat", "error", "pong", "subscribed", "unsubscribed", "presence"}
FRAME_CLOSES = {1000, 1002, 1007, 1009, 4429}

good_frames = st.one_of(
    st.builds(lambda m: masked_frame(0x81, chat(m)), st.text(max_size=40)),
    st.builds(lambda p: masked_frame(0x89, p), st.binary(max_size=125)),
    st.builds(lambda p: masked_frame(0x82, p), st.binary(max_size=60)),
    st.builds(lambda t: masked_frame(0x81, t.encode()), st.text(max_size=60)),
    st.builds(lambda t: masked_frame(0x01, t.encode()), st.text(max_size=20)),  # not final
    st.builds(lambda t: masked_frame(0x80, t.encode()), st.text(max_size=20)),  # continuation
)
bad_frames = st.one_of(
    st.binary(min_size=1, max_size=40),
    st.builds(lambda f, p: masked_frame(f, p), st.integers(0, 255), st.binary(max_size=200)),
    st.builds(lambda p: masked_frame(0x81, p, mask=False), st.binary(max_size=30)),
)
streams = st.lists(st.one_of(good_frames, good_frames, bad_frames), min_size=1, max_size=8).map(
    b"".join
)


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Split what the server wrote into (opcode, payload), checking the framing as we go."""
    frames = []
    at = 0
    while at < len(data):
        first, second = data[at], data[at + 1]
        assert first & 0x80 and not first & 0x70, "final frames, no reserved bits"
        assert not second & 0x80, "server frames are not masked"
        size, at = second & 0x7F, at + 2
        if size == 126:
            size, at = int.from_bytes(data[at : at + 2], "big"), at + 2
        elif size == 127:
            size, at = int.from_bytes(data[at : at + 8], "big"), at + 8
        frames.append((first & 0x0F, data[at : at + size]))
        at += size
    return frames


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs=st.lists(streams, min_size=5, max_size=5))
async def test_generated_byte_streams_get_documented_answers(inputs: list[bytes]) -> None:
    """Any bytes after the handshake: only documented messages and close codes come back, the
    server stays up and a well-behaved member keeps chatting."""
    async with local_server(join_leave=False, max_message_size=512) as server:
        async with connect(server.ws_url("fuzz")) as member:
            await recv_json(member)
            for data in inputs:
                client = await RawClient.connect(server.port, "/feed/fuzz")
                try:
                    client.writer.write(data)
                    client.writer.write_eof()  # then the server sees the end of the stream
                    async with asyncio.timeout(5):
                        written = await client.reader.read()
                finally:
                    client.abort()
                for opcode, payload in server_frames(written):
                    if opcode == TEXT:
                        message = orjson.loads(payload)
                        assert message["type"] in DOCUMENTED_TYPES, message
                    elif opcode == CLOSE:
                        assert close_code_of(payload) in FRAME_CLOSES, payload
                    else:
                        assert opcode == PONG, opcode
            await member.send(chat("survived").decode())
            async with asyncio.timeout(5):
                while (await recv_json(member)).get("message") != "survived":
                    pass
            await eventually(lambda: len(server.node.sessions) == 1, timeout=5)
