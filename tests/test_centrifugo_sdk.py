"""Centrifugo's own Python SDK (centrifuge-python, from PyPI) against two instances on one
private Redis: the protocol as a real client speaks it, and one world with ``/feed/``.

The two servers are shared by every test of the module (each test uses its own channels).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import jwt
import orjson
import pytest
import pytest_asyncio
from centrifuge import (
    Client,
    ClientEventHandler,
    ClientState,
    ConnectedContext,
    DisconnectedContext,
    JoinContext,
    LeaveContext,
    PublicationContext,
    ReplyError,
    ServerPublicationContext,
    ServerSubscribedContext,
    ServerUnsubscribedContext,
    SubscribedContext,
    SubscriptionEventHandler,
    SubscriptionState,
)
from websockets.asyncio.client import ClientConnection, connect

from sanic_feeds import FeedsConfig
from sanic_feeds.centrifugo_session import CentrifugoSession
from sanic_feeds.namespaces import ChannelOptions, Namespace
from sanic_feeds.rpc import ClientCall, RpcError
from support.local_server import LocalServer, local_server
from support.redis_server import RedisServer
from support.ws import recv_until

pytestmark = pytest.mark.asyncio(loop_scope="module")

T = TypeVar("T")

SECRET = "centrifugo-test-secret-of-32-bytes!"
SHORT = Namespace(
    "short",
    ChannelOptions(
        history_size=3,
        history_ttl=60,
        presence=True,
        join_leave=True,
        allow_subscribe_for_client=True,
        allow_publish_for_subscriber=True,
        allow_history_for_subscriber=True,
    ),
)


def token(sub: str, ttl: float = 300, **claims: object) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + ttl), **claims}, SECRET)


@dataclass
class Servers:
    one: LocalServer
    two: LocalServer

    def url(self, server: LocalServer) -> str:
        return f"ws://127.0.0.1:{server.port}/connection/websocket"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def servers(redis_server: RedisServer) -> AsyncIterator[Servers]:
    if not redis_server.is_running:
        redis_server.start()
    config = FeedsConfig(
        broker=redis_server.url,
        auth="jwt",
        jwt_secret=SECRET,
        ping_interval=1,
        namespaces=(SHORT,),
    )
    async with local_server(config) as one, local_server(config) as two:
        for server in (one, two):

            @server.feeds.rpc("whoami")
            async def whoami(call: ClientCall) -> object:
                return {"user": call.user, "echo": call.data}

            @server.feeds.rpc("refuse")
            async def refuse(call: ClientCall) -> object:
                raise RpcError(1001, "no thanks")

        yield Servers(one, two)


@dataclass
class Events(ClientEventHandler):  # type: ignore[misc]  # the SDK ships no types
    """The client events a test waits for."""

    connected: asyncio.Queue[ConnectedContext] = field(default_factory=asyncio.Queue)
    disconnected: asyncio.Queue[DisconnectedContext] = field(default_factory=asyncio.Queue)
    subscribed: asyncio.Queue[ServerSubscribedContext] = field(default_factory=asyncio.Queue)
    unsubscribed: asyncio.Queue[ServerUnsubscribedContext] = field(default_factory=asyncio.Queue)
    publications: asyncio.Queue[ServerPublicationContext] = field(default_factory=asyncio.Queue)

    async def on_connected(self, ctx: ConnectedContext) -> None:
        await self.connected.put(ctx)

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        await self.disconnected.put(ctx)

    async def on_subscribed(self, ctx: ServerSubscribedContext) -> None:
        await self.subscribed.put(ctx)

    async def on_unsubscribed(self, ctx: ServerUnsubscribedContext) -> None:
        await self.unsubscribed.put(ctx)

    async def on_publication(self, ctx: ServerPublicationContext) -> None:
        await self.publications.put(ctx)


@dataclass
class SubEvents(SubscriptionEventHandler):  # type: ignore[misc]  # the SDK ships no types
    subscribed: asyncio.Queue[SubscribedContext] = field(default_factory=asyncio.Queue)
    publications: asyncio.Queue[PublicationContext] = field(default_factory=asyncio.Queue)
    joins: asyncio.Queue[JoinContext] = field(default_factory=asyncio.Queue)
    leaves: asyncio.Queue[LeaveContext] = field(default_factory=asyncio.Queue)

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        await self.subscribed.put(ctx)

    async def on_publication(self, ctx: PublicationContext) -> None:
        await self.publications.put(ctx)

    async def on_join(self, ctx: JoinContext) -> None:
        await self.joins.put(ctx)

    async def on_leave(self, ctx: LeaveContext) -> None:
        await self.leaves.put(ctx)


async def next_of(queue: asyncio.Queue[T], timeout: float = 5.0) -> T:
    return await asyncio.wait_for(queue.get(), timeout)


@asynccontextmanager
async def client(url: str, **options: Any) -> AsyncIterator[tuple[Client, Events]]:
    events = Events()
    sdk = Client(url, events=events, **options)
    try:
        yield sdk, events
    finally:
        await sdk.disconnect()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_connect_with_a_token(servers: Servers) -> None:
    """A valid token connects; the reply negotiates the server's pings, which keep it up."""
    async with client(servers.url(servers.one), token=token("ann")) as (sdk, events):
        await sdk.connect()
        connected = await next_of(events.connected)
        assert connected.client in servers.one.node.sessions
        await asyncio.sleep(2.5)  # pings every second, pongs back: still the same connection
        assert sdk.state == ClientState.CONNECTED
        assert sdk.client_id == connected.client


async def test_a_refused_token_is_terminal(servers: Servers) -> None:
    """An invalid token ends in 3500 and the SDK stops; no token at all ends in 101."""
    bad = jwt.encode({"sub": "ann"}, "another-secret-of-at-least-32-bytes")
    async with client(servers.url(servers.one), token=bad) as (sdk, events):
        await sdk.connect()
        gone = await next_of(events.disconnected)
        assert gone.code == 3500
        await asyncio.sleep(0.5)
        assert sdk.state == ClientState.DISCONNECTED
        assert events.connected.empty()
    async with client(servers.url(servers.one)) as (sdk, events):
        await sdk.connect()
        assert (await next_of(events.disconnected)).code == 101
        assert sdk.state == ClientState.DISCONNECTED


async def test_publish_crosses_instances(servers: Servers) -> None:
    """A publish on instance two reaches a subscriber on instance one, with the publisher's
    info and the message's offset."""
    async with (
        client(servers.url(servers.one), token=token("ann")) as (ann, _),
        client(servers.url(servers.two), token=token("bob", info={"role": "x"})) as (bob, _),
    ):
        await ann.connect()
        await bob.connect()
        heard = SubEvents()
        sub = ann.new_subscription("cross", events=heard)
        await sub.subscribe()
        await next_of(heard.subscribed)
        bob_sub = bob.new_subscription("cross")
        await bob_sub.subscribe()
        await bob_sub.publish({"text": "hi"})
        got = await next_of(heard.publications)
        assert got.pub.data == {"text": "hi"}
        assert got.pub.info is not None
        assert (got.pub.info.user, got.pub.info.conn_info) == ("bob", {"role": "x"})
        assert got.pub.offset == 1


async def test_one_world_with_feed_sockets(servers: Servers) -> None:
    """A /feed/ chat reaches an SDK subscriber as a publication of its message, and an SDK
    publish reaches /feed/ members as a chat whose message is the publication's data."""
    async with client(servers.url(servers.one), token=token("ann")) as (ann, _):
        await ann.connect()
        heard = SubEvents()
        sub = ann.new_subscription("world", events=heard)
        await sub.subscribe()
        await next_of(heard.subscribed)
        feed_token = token("zoe", name="Zoe")
        async with connect(servers.two.ws_url("world", token=feed_token)) as zoe:
            await recv_until(zoe, lambda m: m["type"] == "system")
            await zoe.send(orjson.dumps({"type": "chat", "message": {"n": 1}}).decode())
            got = await next_of(heard.publications)
            assert got.pub.data == {"n": 1}
            assert got.pub.info is not None and got.pub.info.user == "Zoe"
            await sub.publish("from the sdk")
            chat = await recv_until(zoe, lambda m: m["type"] == "chat" and m["user"] == "ann")
            assert chat["message"] == "from the sdk"
            assert chat["client"] == ann.client_id


async def test_recovery_after_a_disconnect(servers: Servers) -> None:
    """Back from a disconnect, a recoverable subscription gets exactly what it missed, with
    ``recovered`` true; past the channel's history, ``recovered`` is false."""
    for channel, missed, complete in (("recover", 3, True), ("short:recover", 5, False)):
        async with client(servers.url(servers.one), token=token("ann")) as (sdk, _):
            await sdk.connect()
            heard = SubEvents()
            sub = sdk.new_subscription(channel, events=heard, recoverable=True)
            await sub.subscribe()
            await next_of(heard.subscribed)
            await servers.two.feeds.publish(channel, "before")
            assert (await next_of(heard.publications)).pub.data == "before"
            await sdk.disconnect()
            for n in range(missed):
                await servers.two.feeds.publish(channel, n)
            await sdk.connect()
            back = await next_of(heard.subscribed)
            assert (back.was_recovering, back.recovered) == (True, complete)
            if complete:
                got = [(await next_of(heard.publications)).pub.data for _ in range(missed)]
                assert got == list(range(missed))
            await servers.one.feeds.publish(channel, "after")
            assert (await next_of(heard.publications)).pub.data == "after"
            assert heard.publications.empty()


async def test_join_leave_presence_and_history(servers: Servers) -> None:
    """Join and leave pushes for a subscriber that asked; presence and its stats over both
    instances; history with a limit, and reversed. A member's connection info (its token's
    ``info``) and channel info (its subscription token's) are in its join and leave pushes
    and in presence on the other instance, for SDKs, the server API and ``/feed/`` alike."""
    seat = jwt.encode({"sub": "bob", "channel": "room", "info": {"seat": 7}}, SECRET)
    async with (
        client(servers.url(servers.one), token=token("ann")) as (ann, _),
        client(servers.url(servers.two), token=token("bob", info={"role": "b"})) as (bob, _),
    ):
        await ann.connect()
        await bob.connect()
        heard = SubEvents()
        sub = ann.new_subscription("room", events=heard, join_leave=True)
        await sub.subscribe()
        await next_of(heard.subscribed)
        bob_sub = bob.new_subscription("room", token=seat)
        await bob_sub.subscribe()
        joined = await next_of(heard.joins)
        bob_info = ("bob", {"role": "b"}, {"seat": 7})
        assert (joined.info.user, joined.info.conn_info, joined.info.chan_info) == bob_info

        async def both_present() -> bool:
            presence = await sub.presence()
            return {info.user for info in presence.clients.values()} == {"ann", "bob"}

        await eventually(both_present)
        listed = (await sub.presence()).clients[bob.client_id]
        assert (listed.user, listed.conn_info, listed.chan_info) == bob_info
        stats = await sub.presence_stats()
        assert (stats.num_clients, stats.num_users) == (2, 2)
        async with httpx.AsyncClient(timeout=5) as http:
            api = await http.post(f"{servers.one.http_url}/api/presence", json={"channel": "room"})
        entry = api.json()["result"]["presence"][bob.client_id]
        assert (entry["user"], entry["conn_info"], entry["chan_info"]) == bob_info
        async with connect(servers.one.ws_url("room", token=token("zoe"))) as zoe:
            await recv_until(zoe, lambda m: m["type"] == "system")
            await zoe.send('{"type": "presence"}')
            clients = (await recv_until(zoe, lambda m: m["type"] == "presence"))["clients"]
            [member] = [c for c in clients if c["client"] == bob.client_id]
            assert (member["user"], member["info"], member["chan_info"]) == bob_info
            await bob_sub.unsubscribe()
            left = await recv_until(zoe, lambda m: m["type"] == "user_left")
            assert (left["user"], left["info"], left["chan_info"]) == bob_info
        gone = await next_of(heard.leaves)  # bob's: zoe was still there
        assert (gone.info.user, gone.info.conn_info, gone.info.chan_info) == bob_info

        for n in range(4):
            await servers.two.feeds.publish("room", n)
        history = await sub.history(limit=2)
        assert [p.data for p in history.publications] == [0, 1]
        assert history.offset == 4
        newest = await sub.history(limit=2, reverse=True)
        assert [p.data for p in newest.publications] == [3, 2]


async def test_server_side_subscription_from_the_token(servers: Servers) -> None:
    """The token's ``channels`` subscribe the connection at connect; their publications come
    as server-side publications. A ``subs`` entry's ``info`` is that subscription's channel
    info (``chan_info`` in presence)."""
    ann_token = token("ann", channels=["alerts"], subs={"alerts": {"info": {"tier": 1}}})
    async with client(servers.url(servers.one), token=ann_token) as (sdk, events):
        await sdk.connect()
        subscribed = await next_of(events.subscribed)
        assert subscribed.channel == "alerts"
        await servers.two.feeds.publish("alerts", {"level": "high"})
        got = await next_of(events.publications)
        assert (got.channel, got.pub.data) == ("alerts", {"level": "high"})
        listed = (await sdk.presence("alerts")).clients[sdk.client_id]
        assert listed.chan_info == {"tier": 1}


async def test_rpc(servers: Servers) -> None:
    """A registered method answers with its handler's value (or its RpcError); another one
    is error 104."""
    async with client(servers.url(servers.two), token=token("ann")) as (sdk, _):
        await sdk.connect()
        result = await sdk.rpc("whoami", {"x": 1})
        assert result.data == {"user": "ann", "echo": {"x": 1}}
        with pytest.raises(ReplyError) as refused:
            await sdk.rpc("refuse", None)
        assert refused.value.code == 1001
        with pytest.raises(ReplyError) as missing:
            await sdk.rpc("nope", None)
        assert missing.value.code == 104


async def test_token_refresh_keeps_the_connection(servers: Servers) -> None:
    """A connection whose token expires asks getToken for a fresh one and goes on."""
    calls: list[float] = []

    async def get_token() -> str:
        calls.append(time.time())
        return token("ann", ttl=60)

    async with client(
        servers.url(servers.one), token=token("ann", ttl=1.5), get_token=get_token
    ) as (sdk, events):
        await sdk.connect()
        first = (await next_of(events.connected)).client
        await eventually(lambda: _true(bool(calls)), timeout=5)
        session = servers.one.node.sessions[first]
        assert isinstance(session, CentrifugoSession)
        await eventually(lambda: _true((session.state.expires_at or 0) > time.time() + 30))
        assert sdk.state == ClientState.CONNECTED and sdk.client_id == first
        assert events.disconnected.empty()


async def test_subscription_token_refresh_keeps_the_subscription(servers: Servers) -> None:
    """A subscription whose token expires asks its getToken for a fresh one (``sub_refresh``)
    and stays, receiving on; the server then holds the new expiry."""
    calls: list[str] = []

    def sub_token(ttl: float) -> str:
        claims = {"sub": "ann", "channel": "room", "exp": int(time.time() + ttl)}
        return jwt.encode(claims, SECRET)

    async def get_token(channel: str) -> str:
        calls.append(channel)
        return sub_token(60)

    async with client(servers.url(servers.one), token=token("ann")) as (sdk, events):
        await sdk.connect()
        first = (await next_of(events.connected)).client
        heard = SubEvents()
        sub = sdk.new_subscription("room", events=heard, token=sub_token(1.5), get_token=get_token)
        await sub.subscribe()
        await next_of(heard.subscribed)
        session = servers.one.node.sessions[first]
        assert isinstance(session, CentrifugoSession)
        held = session.state.channels.channels["room"]
        await eventually(lambda: _true((held.expires_at or 0) > time.time() + 30), timeout=8)
        assert calls == ["room"]
        await servers.two.feeds.publish("room", "after the refresh")
        assert (await next_of(heard.publications)).pub.data == "after the refresh"
        assert sub.state == SubscriptionState.SUBSCRIBED and sdk.client_id == first


async def _true(value: bool) -> bool:
    return value


async def test_bad_frames_get_documented_codes_and_the_server_survives(servers: Servers) -> None:
    """Garbage, binary frames and commands before connect are closed with 3501 (bad request,
    which SDKs do not retry); an unknown command after connect is error 104; the server goes
    on serving."""
    url = servers.url(servers.one)
    before_connect: list[str | bytes] = [
        "nope",
        "[1]",
        '{"id":1,"subscribe":{"channel":"a"}}',
        b"\x01\x02",
        '{"id":"x"}',
    ]
    for garbage in before_connect:
        async with connect(url) as raw:
            await raw.send(garbage)
            await raw.wait_closed()
            assert raw.close_code == 3501, garbage
    async with connect(url) as raw:
        connect_command = {"id": 1, "connect": {"token": token("ann")}}
        await raw.send(orjson.dumps(connect_command).decode())
        assert (await reply_of(raw))["id"] == 1
        await raw.send('{"id":2,"frobnicate":{}}\n{"id":3,"subscribe":{"channel":7}}')
        codes = [(await reply_of(raw))["error"]["code"] for _ in range(2)]
        assert codes == [104, 107]
    async with client(url, token=token("ann")) as (sdk, events):
        await sdk.connect()
        await next_of(events.connected)


async def reply_of(raw: ClientConnection) -> dict[str, Any]:
    """The next reply, past the server's pings (``{}``)."""
    while True:
        message = await asyncio.wait_for(raw.recv(), 5)
        if message.strip() != "{}":
            found: dict[str, Any] = orjson.loads(message)
            return found


async def test_server_api_acts_on_sdk_connections_on_both_instances(servers: Servers) -> None:
    """The server API's subscribe reaches the user's SDK connections on both instances as a
    server-side subscription (its ``data`` in the subscribe push, its ``info`` their channel
    info in presence), unsubscribe ends it, and disconnect closes them with 3503 (the
    SDK does not reconnect)."""
    from cent import AsyncClient, DisconnectRequest, SubscribeRequest, UnsubscribeRequest

    one, two = servers.one, servers.two
    async with (
        client(servers.url(one), token=token("carol")) as (first, first_events),
        client(servers.url(two), token=token("carol")) as (second, second_events),
        AsyncClient(f"{one.http_url}/api", "") as api,
    ):
        await first.connect()
        await second.connect()
        await next_of(first_events.connected)
        await next_of(second_events.connected)
        request = SubscribeRequest(
            user="carol", channel="briefing", info={"desk": 7}, data={"welcome": True}
        )
        await api.subscribe(request)
        for events in (first_events, second_events):
            subscribed = await next_of(events.subscribed)
            assert (subscribed.channel, subscribed.data) == ("briefing", {"welcome": True})
        listed = (await first.presence("briefing")).clients
        assert sorted(c.chan_info["desk"] for c in listed.values()) == [7, 7]
        await one.feeds.publish("briefing", {"n": 1})
        for events in (first_events, second_events):
            got = await next_of(events.publications)
            assert (got.channel, got.pub.data) == ("briefing", {"n": 1})
        await api.unsubscribe(UnsubscribeRequest(user="carol", channel="briefing"))
        for events in (first_events, second_events):
            assert (await next_of(events.unsubscribed)).channel == "briefing"
        await api.disconnect(DisconnectRequest(user="carol"))
        for events in (first_events, second_events):
            gone = await next_of(events.disconnected)
            assert gone.code == 3503
        await asyncio.sleep(0.3)
        assert first.state == ClientState.DISCONNECTED and second.state == ClientState.DISCONNECTED


async def test_reconnect_after_an_instance_restarts(servers: Servers) -> None:
    """The SDK's instance stops (3001 shutdown: the SDK reconnects) and starts again on the
    same address; the SDK comes back by itself and recovers what the other instance
    published meanwhile, then goes on live."""
    config = servers.one.feeds.config
    async with local_server(config) as first:
        port = first.port
        url = f"ws://127.0.0.1:{port}/connection/websocket"
        sdk = Client(url, events=Events(), token=token("ann"), max_reconnect_delay=0.5)
        heard = SubEvents()
        sub = sdk.new_subscription("short:restart", events=heard, recoverable=True)
        await sdk.connect()
        await sub.subscribe()
        await next_of(heard.subscribed)
        await servers.two.feeds.publish("short:restart", "before")
        assert (await next_of(heard.publications)).pub.data == "before"
    try:
        await servers.two.feeds.publish("short:restart", "while down")
        async with local_server(config, port=port):
            back = await next_of(heard.subscribed, timeout=10)
            assert (back.was_recovering, back.recovered) == (True, True)
            assert (await next_of(heard.publications)).pub.data == "while down"
            await servers.two.feeds.publish("short:restart", "after")
            assert (await next_of(heard.publications)).pub.data == "after"
    finally:
        await sdk.disconnect()


async def test_a_message_to_a_user_reaches_feed_sockets_on_every_instance(servers: Servers) -> None:
    """Feeds.send_message on one instance reaches the user's /feed/ socket on the other as a
    ``message`` frame, and nobody else's."""
    one, two = servers.one, servers.two
    async with (
        connect(two.ws_url("lobby", token=token("erin"))) as erin,
        connect(two.ws_url("lobby", token=token("frank"))) as frank,
    ):
        await recv_until(erin, lambda m: m["type"] == "system")
        await recv_until(frank, lambda m: m["type"] == "system")
        await one.feeds.send_message("erin", {"note": 1})
        got = await recv_until(erin, lambda m: m["type"] == "message")
        assert got == {"type": "message", "data": {"note": 1}}
        await frank.send(orjson.dumps({"type": "ping"}).decode())
        assert (await recv_until(frank, lambda m: m["type"] in ("pong", "message")))[
            "type"
        ] == "pong"
