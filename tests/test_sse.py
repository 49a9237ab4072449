"""Server-Sent Events streams: format, ids and Last-Event-ID recovery, limits, ends, clusters.

Real servers (in-process, or ``sanic-feeds serve`` processes on a private Redis), read by
httpx-sse (an SSE client library), by raw HTTP where the exact bytes matter, and by
Chromium's own EventSource.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
import pytest
from httpx_sse import EventSource, ServerSentEvent, aconnect_sse

from sanic_feeds.sse import SSE, BadEventId, Position, StreamCursor, parse_last_event_id
from support.browser import launched_chromium, needs_chromium
from support.local_server import local_server
from support.server_process import ServerProcess

SECRET = "test-secret-please-change-0123456789"
TIMEOUT = 10.0


class Stream:
    """One open event stream, read with httpx-sse; every read is bounded."""

    def __init__(self, source: EventSource) -> None:
        self.source = source
        self.response = source.response
        self._events = self._dispatched(source)

    @staticmethod
    async def _dispatched(source: EventSource) -> AsyncIterator[ServerSentEvent]:
        """The events EventSource would dispatch: httpx-sse also yields data-less ones
        (the ``retry:`` line)."""
        async for event in source.aiter_sse():
            if event.data:
                yield event

    async def next(self, timeout: float = TIMEOUT) -> ServerSentEvent:
        async with asyncio.timeout(timeout):
            return await anext(self._events)

    async def message(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        event = await self.next(timeout)
        body: dict[str, Any] = json.loads(event.data)
        return body

    async def until(self, kind: str, timeout: float = TIMEOUT) -> list[ServerSentEvent]:
        """Events up to and including the first whose JSON ``type`` is ``kind``."""
        seen: list[ServerSentEvent] = []
        async with asyncio.timeout(timeout):
            async for event in self._events:
                seen.append(event)
                if json.loads(event.data)["type"] == kind:
                    return seen
        raise AssertionError(f"the stream ended before a {kind!r} event: {seen}")

    async def rest(self, timeout: float = TIMEOUT) -> list[ServerSentEvent]:
        """Every event until the stream ends."""
        async with asyncio.timeout(timeout):
            return [event async for event in self._events]


@asynccontextmanager
async def stream(
    url: str, headers: dict[str, str] | None = None, client: httpx.AsyncClient | None = None
) -> AsyncIterator[Stream]:
    async with (
        httpx.AsyncClient(timeout=TIMEOUT) if client is None else _same(client) as http,
        aconnect_sse(http, "GET", url, headers=dict(headers or {})) as source,
    ):
        source.response.raise_for_status()
        yield Stream(source)


@asynccontextmanager
async def _same(client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    yield client


async def publish(base: str, channel: str, data: object) -> None:
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        reply = await http.post(f"{base}/api/channels/{channel}/publish", json=data)
        reply.raise_for_status()


def data_of(events: list[ServerSentEvent]) -> list[object]:
    return [m["data"] for m in map(json.loads, (e.data for e in events)) if m["type"] == "data"]


async def wait_for(predicate: Any, timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


# -- the pure part ---------------------------------------------------------------------------------


def test_wire_frames_stored_messages_with_their_position() -> None:
    """A stored message is one event with id <epoch>:<offset>; others carry no id."""
    stored = b'{"id":7,"epoch":"9f3c2a1b","type":"data","channel":"x","data":1}'
    assert SSE.frame(stored) == b"id: 9f3c2a1b:7\ndata: " + stored + b"\n\n"
    notice = b'{"type":"user_joined","channel":"x","client":"c","user":"u"}'
    assert SSE.frame(notice) == b"data: " + notice + b"\n\n"
    assert SSE.body_of(SSE.frame(stored)) == stored
    assert SSE.body_of(SSE.frame(notice)) == notice
    report = b'{"type":"recovered","channel":"x","recovered":true,"count":2,'
    report += b'"epoch":"ab","offset":9}'
    assert SSE.frame(report).startswith(b"id: ab:9\n")


def test_last_event_id_parsing() -> None:
    """Both id forms read back; anything this server never wrote is refused."""
    assert parse_last_event_id("", ["a"]) == {}
    assert parse_last_event_id("ab12:41", ["a", "b"]) == {"a": Position("ab12", 41)}
    assert parse_last_event_id("room:1=ab:3,b=cd:0,zz=ef:9", ["room:1", "b"]) == {
        "room:1": Position("ab", 3),
        "b": Position("cd", 0),
    }
    for bad in ("41", "ab:x", ":3", "ab:-1", "a=b", "bad name=ab:1", "ab!:1"):
        with pytest.raises(BadEventId):
            parse_last_event_id(bad, ["a"])


def test_cursor_names_every_channel_in_each_id() -> None:
    """On a stream of several channels each stored event's id holds every channel's position."""
    cursor = StreamCursor(["a", "b"], {"b": Position("e2", 4)})
    one = SSE.frame(b'{"id":1,"epoch":"e1","type":"data","channel":"a","data":"\\n"}')
    # A client-supplied value that looks like a channel key comes after the real one.
    two = SSE.frame(
        b'{"id":5,"epoch":"e2","type":"chat","channel":"b","message":",\\"channel\\":\\"a"}'
    )
    notice = SSE.frame(b'{"type":"user_left","channel":"a","client":"c","user":"u"}')
    out = cursor.restamp(one + notice + two)
    assert out.split(b"\n\n")[0].startswith(b"id: a=e1:1,b=e2:4\n")
    assert out.split(b"\n\n")[1].startswith(b"data: ")
    assert out.split(b"\n\n")[2].startswith(b"id: a=e1:1,b=e2:5\n")
    assert cursor.event_id() == "a=e1:1,b=e2:5"


# -- one server ------------------------------------------------------------------------------------


async def test_event_format() -> None:
    """Welcome first (no id), then stored messages with ids, notices without; all unnamed."""
    async with local_server() as server, stream(server.http_url + "/sse/lobby?user=ann") as s:
        assert s.response.headers["content-type"].startswith("text/event-stream")
        assert s.response.headers["cache-control"] == "no-cache"
        welcome = await s.next()
        assert welcome.event == "message" and welcome.id == ""
        assert json.loads(welcome.data)["type"] == "system"
        assert json.loads(welcome.data)["user"] == "ann"
        async with stream(server.http_url + "/sse/lobby?user=bob"):
            joined = await s.next()
            assert json.loads(joined.data)["type"] == "user_joined" and joined.id == ""
        await publish(server.http_url, "lobby", {"n": 1})
        events = await s.until("data")
        message = json.loads(events[-1].data)
        assert events[-1].id == f"{message['epoch']}:{message['id']}"
        assert message["data"] == {"n": 1}


async def test_several_channels_and_their_recovery() -> None:
    """/sse?channel=a&channel=b: welcome for a, subscribed for b, ids that recover both."""
    async with local_server() as server:
        base = server.http_url
        async with stream(base + "/sse?channel=a&channel=b") as s:
            assert json.loads((await s.next()).data)["type"] == "system"
            assert json.loads((await s.next()).data) == {"type": "subscribed", "channel": "b"}
            await publish(base, "a", 1)
            await publish(base, "b", 2)
            events = await s.until("data") + await s.until("data")
            assert data_of(events) == [1, 2]
            last = events[-1].id
            assert last.startswith("a=") and ",b=" in last
        for n in range(3, 7):
            await publish(base, "a" if n % 2 else "b", n)
        async with stream(base + "/sse?channel=a&channel=b", {"last-event-id": last}) as s:
            got = await s.until("subscribed")
            kinds = [json.loads(e.data)["type"] for e in got]
            assert kinds[0] == "system" and kinds.count("recovered") == 2
            assert sorted(x for x in data_of(got) if isinstance(x, int)) == [3, 4, 5, 6]
            assert all(json.loads(e.data)["recovered"] for e in got if "recovered" in e.data)


async def test_last_event_id_recovers_exactly_under_traffic() -> None:
    """Reconnecting with Last-Event-ID while messages keep coming: nothing lost or doubled."""
    async with local_server() as server:
        base = server.http_url
        stop = asyncio.Event()

        async def publisher() -> None:
            n = 0
            while not stop.is_set() and n < 400:
                n += 1
                await publish(base, "feed", n)

        task = asyncio.create_task(publisher())
        received: list[object] = []
        last = ""
        for _ in range(4):
            header = {"last-event-id": last} if last else {}
            async with stream(base + "/sse/feed", header) as s:
                for _ in range(30):
                    event = await s.next()
                    body = json.loads(event.data)
                    if body["type"] == "data":
                        received.append(body["data"])
                        last = event.id
                    elif body["type"] == "recovered":
                        assert body["recovered"], body
        stop.set()
        await task
        first = received[0]
        assert isinstance(first, int)
        assert received == list(range(first, first + len(received)))


async def test_last_event_id_query_parameter_and_too_far_back() -> None:
    """?lastEventId= works as the header does; past the history, recovered is false."""
    async with local_server(history_size=5) as server:
        base = server.http_url
        for n in range(1, 4):
            await publish(base, "c", n)
        async with stream(base + "/sse/c") as s:
            await s.next()
            await publish(base, "c", 4)
            event = (await s.until("data"))[-1]
        epoch = event.id.split(":")[0]
        async with stream(f"{base}/sse/c?lastEventId={epoch}:2") as s:
            got = await s.until("recovered")
            assert data_of(got) == [3, 4]
            assert json.loads(got[-1].data)["recovered"] is True
            assert got[-1].id == f"{epoch}:4"
        for n in range(5, 20):
            await publish(base, "c", n)
        async with stream(base + "/sse/c", {"last-event-id": f"{epoch}:2"}) as s:
            got = await s.until("recovered")
            assert json.loads(got[-1].data)["recovered"] is False
            assert data_of(got) == list(range(15, 20))


async def test_refusals_are_http_errors_before_the_stream() -> None:
    """Bad channels, Last-Event-ID or too many channels: a JSON problem, no stream."""
    async with local_server(max_channels=2) as server, httpx.AsyncClient() as http:
        base = server.http_url
        cases = {
            "/sse/bad%20name": (400, "invalid_channel"),
            "/sse": (400, "missing_field"),
            "/sse?channel=a&channel=-b": (400, "invalid_channel"),
            "/sse?channel=a&channel=b&channel=c": (400, "too_many_channels"),
            "/sse/a?lastEventId=nonsense": (400, "invalid_request"),
        }
        for path, (status, code) in cases.items():
            reply = await http.get(base + path)
            assert (reply.status_code, reply.json()["error"]) == (status, code), path
        assert not server.node.sessions


async def test_token_auth_in_query_or_header() -> None:
    async with local_server(auth="token", tokens=("s3cret=ann",)) as server:
        base = server.http_url
        async with httpx.AsyncClient() as http:
            reply = await http.get(base + "/sse/lobby?user=mallory")
            assert (reply.status_code, reply.json()["message"]) == (401, "authentication required")
            reply = await http.get(base + "/sse/lobby?token=wrong")
            assert (reply.status_code, reply.json()["message"]) == (401, "invalid token")
        async with stream(base + "/sse/lobby?token=s3cret&user=mallory") as s:
            assert (await s.message())["user"] == "ann"
        async with stream(base + "/sse/lobby", {"authorization": "Bearer s3cret"}) as s:
            assert (await s.message())["user"] == "ann"


async def test_jwt_channel_claims_refuse_other_channels() -> None:
    token = jwt.encode({"sub": "u1", "channels": ["room-*"]}, SECRET, algorithm="HS256")
    async with local_server(auth="jwt", jwt_secret=SECRET) as server, httpx.AsyncClient() as http:
        base = server.http_url
        reply = await http.get(f"{base}/sse/lobby?token={token}")
        assert (reply.status_code, reply.json()["error"]) == (403, "forbidden")
        reply = await http.get(f"{base}/sse?channel=room-1&channel=lobby&token={token}")
        assert reply.status_code == 403
        async with stream(f"{base}/sse/room-1?token={token}") as s:
            assert (await s.message())["user"] == "u1"


async def test_server_full_ends_the_stream_for_a_retry() -> None:
    """Over --max-connections: the stream opens and ends with close 1013 (EventSource retries)."""
    async with local_server(max_connections=1) as server:
        async with stream(server.http_url + "/sse/a") as first:
            await first.next()
            async with stream(server.http_url + "/sse/a") as second:
                events = await second.rest()
                assert [json.loads(e.data) for e in events] == [
                    {"type": "close", "code": 1013, "reason": "server full"}
                ]


async def test_drain_ends_the_stream_cleanly() -> None:
    """Shutdown: a close event with 1001, then the response ends (terminal chunk)."""
    async with local_server() as server, stream(server.http_url + "/sse/a") as s:
        await s.next()
        drained = asyncio.create_task(server.node.drain())
        events = await s.rest()
        assert json.loads(events[-1].data) == {
            "type": "close",
            "code": 1001,
            "reason": "server shutting down",
        }
        async with asyncio.timeout(TIMEOUT):
            await drained
        assert not server.node.sessions


async def test_client_that_goes_away_leaves_its_channels() -> None:
    async with local_server() as server:
        async with stream(server.http_url + "/sse/a") as s:
            await s.next()
            assert server.node.hub.members("a") == 1
        await wait_for(lambda: not server.node.sessions and server.node.hub.members("a") == 0)


async def raw_request(port: int, path: str, rcvbuf: int | None = None) -> socket.socket:
    """A blocking socket that sent a GET for ``path`` (to leave unread on purpose)."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


async def read_until(sock: socket.socket, marker: bytes, timeout: float = TIMEOUT) -> bytes:
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    data = b""
    async with asyncio.timeout(timeout):
        while marker not in data:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                break
            data += chunk
    return data


async def test_keepalive_comments_on_a_quiet_stream() -> None:
    async with local_server(ping_interval=0.2) as server:
        sock = await raw_request(server.port, "/sse/quiet")
        try:
            data = await read_until(sock, b": keepalive\n\n", timeout=3)
            assert b": keepalive\n\n" in data
            assert b"transfer-encoding: chunked" in data.lower()
        finally:
            sock.close()


async def test_slow_consumer_stream_ends_after_the_close_event() -> None:
    """A client that stops reading is cut off at client_buffer; the stream then ends with 4001."""
    async with local_server(client_buffer=64 * 1024, close_timeout=5) as server:
        sock = await raw_request(server.port, "/sse/flood", rcvbuf=4096)
        try:
            await wait_for(lambda: server.node.hub.members("flood") == 1)
            big = "x" * 8000
            for _ in range(400):
                await server.feeds.publish("flood", big)
                await asyncio.sleep(0)  # the stream's writes run between publishes
                if server.node.stats.slow_disconnects:
                    break
            assert server.node.stats.slow_disconnects == 1
            data = await read_until(sock, b"\r\n0\r\n\r\n")
            tail = data[-200:]
            assert b'data: {"type":"close","code":4001,"reason":"slow consumer"}\n\n' in tail
            assert data.endswith(b"\r\n0\r\n\r\n")
        finally:
            sock.close()
        await wait_for(lambda: not server.node.sessions)


# -- two instances on Redis ------------------------------------------------------------------------


async def test_two_instances_and_a_restart_with_last_event_id(redis_url: str) -> None:
    """A message published on the other instance arrives; when the client's instance restarts,
    the client reconnects with Last-Event-ID and gets exactly what it missed, then live."""
    args = ("--log-level", "warning", "--drain-time", "0")
    with (
        ServerProcess(redis_url, extra_args=args) as one,
        ServerProcess(redis_url, extra_args=args) as two,
    ):
        async with stream(one.http_url + "/sse/news") as s:
            await s.next()
            await publish(two.http_url, "news", 1)
            got = await s.until("data")
            last = got[-1].id
            assert data_of(got) == [1]
            await asyncio.to_thread(one.stop)
            assert json.loads((await s.rest())[-1].data)["code"] == 1001
        for n in range(2, 6):
            await publish(two.http_url, "news", n)
        again = ServerProcess(redis_url, port=one.port, extra_args=args)
        with again:
            async with stream(again.http_url + "/sse/news", {"last-event-id": last}) as s:
                got = await s.until("recovered")
                assert data_of(got) == [2, 3, 4, 5]
                assert json.loads(got[-1].data)["recovered"] is True
                await publish(two.http_url, "news", 6)
                assert data_of(await s.until("data")) == [6]


# -- Chromium's EventSource ------------------------------------------------------------------------


COLLECT = """
([url]) => {
  window.got = []; window.errors = 0; window.opens = 0;
  const source = new EventSource(url);
  source.onopen = () => { window.opens += 1; };
  source.onerror = () => { window.errors += 1; };
  source.onmessage = (e) => { window.got.push({id: e.lastEventId, body: JSON.parse(e.data)}); };
}
"""


@needs_chromium
async def test_chromium_eventsource_reconnects_by_itself_and_recovers(redis_url: str) -> None:
    args = ("--log-level", "warning", "--drain-time", "0")
    with (
        ServerProcess(redis_url, extra_args=args) as one,
        ServerProcess(redis_url, extra_args=args) as two,
    ):
        async with launched_chromium() as browser:
            page = await browser.new_page()
            await page.goto(one.http_url + "/health")
            await page.evaluate(COLLECT, [one.http_url + "/sse/tv"])
            await page.wait_for_function("window.got.length >= 1", timeout=10_000)
            await publish(two.http_url, "tv", 1)
            await page.wait_for_function(
                "window.got.some(m => m.body.type === 'data')", timeout=10_000
            )
            await asyncio.to_thread(one.stop)
            for n in range(2, 5):
                await publish(two.http_url, "tv", n)
            again = ServerProcess(redis_url, port=one.port, extra_args=args)
            with again:
                await page.wait_for_function(
                    "window.got.some(m => m.body.type === 'recovered')", timeout=15_000
                )
                await publish(two.http_url, "tv", 5)
                await page.wait_for_function(
                    "window.got.some(m => m.body.data === 5)", timeout=10_000
                )
                got = await page.evaluate("window.got")
    bodies = [m["body"] for m in got]
    assert [b["data"] for b in bodies if b["type"] == "data"] == [1, 2, 3, 4, 5]
    assert [b["code"] for b in bodies if b["type"] == "close"] == [1001]
    recovered = next(b for b in bodies if b["type"] == "recovered")
    assert recovered["recovered"] is True and recovered["count"] == 3
    assert all(m["id"] for m in got if m["body"]["type"] == "data")


NO_WEBSOCKET = """
window.WebSocket = class extends EventTarget {
  static OPEN = 1;
  constructor() {
    super();
    this.readyState = 3;
    setTimeout(() => this.dispatchEvent(Object.assign(new Event("close"), {code: 1006})), 5);
  }
  send() {}
  close() {}
};
"""


@needs_chromium
async def test_page_falls_back_to_sse_when_websocket_cannot_connect(redis_url: str) -> None:
    """The page at / whose WebSockets never open reads over SSE and sends over HTTP; it and a
    WebSocket page on another instance hear each other."""
    from playwright.async_api import Page, expect

    async def join(page: Page, url: str, user: str) -> None:
        await page.goto(url)
        await page.fill("#channel", "lobby")
        await page.fill("#user", user)
        await page.click("#join")
        await expect(page.locator("#state")).to_have_attribute(
            "data-state", "connected", timeout=15_000
        )

    async def say(page: Page, text: str) -> None:
        await page.fill("#message", text)
        await page.keyboard.press("Enter")

    args = ("--log-level", "warning")
    with (
        ServerProcess(redis_url, extra_args=args) as one,
        ServerProcess(redis_url, extra_args=args) as two,
    ):
        async with launched_chromium() as browser:
            sse_page = await browser.new_page()
            await sse_page.add_init_script(NO_WEBSOCKET)
            ws_page = await browser.new_page()
            await join(sse_page, one.http_url + "/", "ann")
            await expect(sse_page.locator("#state")).to_have_text("connected (SSE)")
            await join(ws_page, two.http_url + "/", "bob")
            await expect(sse_page.locator("#present")).to_contain_text("bob", timeout=10_000)
            await say(ws_page, "hello over websocket")
            await expect(
                sse_page.locator('#log [data-type="chat"]', has_text="hello over websocket")
            ).to_have_count(1, timeout=10_000)
            await say(sse_page, "hello over sse")
            await expect(
                ws_page.locator('#log [data-type="data"]', has_text="hello over sse")
            ).to_have_count(1, timeout=10_000)
            forced = await browser.new_page()
            await join(forced, two.http_url + "/?transport=sse", "cy")
            await expect(forced.locator("#state")).to_have_text("connected (SSE)")
