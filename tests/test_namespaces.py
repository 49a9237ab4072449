"""Channel namespaces: each option pinned, as rules (pure) and over real sockets."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sanic_feeds.auth import Identity
from sanic_feeds.brokers import MemoryBus
from sanic_feeds.history import HistoryPolicy
from sanic_feeds.namespaces import (
    OPEN_CHANNELS,
    ChannelOptions,
    Namespace,
    Namespaces,
    UnknownNamespace,
)
from sanic_feeds.permissions import Allowed, Permissions, Refusal
from sanic_feeds.protocol import CloseCode, ErrorCode
from sanic_feeds.ratelimit import Rate
from support.local_server import LocalServer, local_server
from support.ws import recv_json, recv_until

ANN = Identity(user="ann", subject="ann")
ANONYMOUS = Identity(user="")


# -- rules ---------------------------------------------------------------------------------------


def test_a_channel_takes_its_namespace_options_and_unknown_ones_are_refused() -> None:
    chat = ChannelOptions(history_size=10, history_ttl=60)
    namespaces = Namespaces(OPEN_CHANNELS, [Namespace("chat", chat)])
    assert namespaces.options("lobby") is OPEN_CHANNELS
    assert namespaces.options("chat:42") is chat
    assert namespaces.options("chat:a:b") is chat  # the first ':' separates
    with pytest.raises(UnknownNamespace) as caught:
        namespaces.options("chta:42")
    assert caught.value.namespace == "chta"
    assert not namespaces.known("chta:42") and namespaces.known("chat:1") and namespaces.known("x")


def test_namespace_definitions_are_checked() -> None:
    with pytest.raises(ValueError, match="defined twice"):
        Namespaces(OPEN_CHANNELS, [Namespace("aa"), Namespace("aa")])
    for bad in ("a", "a b", "ns:x", "é-é", ""):
        with pytest.raises(ValueError, match="namespace name"):
            Namespace(bad)
    with pytest.raises(ValueError, match="channel_regex"):
        ChannelOptions(channel_regex="(")
    with pytest.raises(ValueError, match="unknown channel option"):
        Namespace.from_mapping({"name": "ok", "histroy_size": 1})
    with pytest.raises(ValueError, match="history_size must be int"):
        Namespace.from_mapping({"name": "ok", "history_size": "10"})
    with pytest.raises(ValueError, match="presence must be bool"):
        Namespace.from_mapping({"name": "ok", "presence": 1})


def test_history_needs_both_size_and_ttl() -> None:
    assert ChannelOptions(history_size=10).history == HistoryPolicy(0, 0.0)
    assert ChannelOptions(history_ttl=10).history == HistoryPolicy(0, 0.0)
    assert ChannelOptions(history_size=10, history_ttl=5).history == HistoryPolicy(10, 5.0)
    rules = Namespaces(
        OPEN_CHANNELS, [Namespace("hi", ChannelOptions(history_size=5000, history_ttl=1))]
    ).history_rules
    assert rules.for_channel("hi:x") == HistoryPolicy(5000, 1.0)
    assert rules.for_channel("x") == HistoryPolicy(1000, 600.0)
    assert rules.widest == HistoryPolicy(5000, 600.0)


def test_default_namespace_options_allow_nothing() -> None:
    """A namespace allows only what it says, as in Centrifugo."""
    permissions = Permissions(Namespaces(OPEN_CHANNELS, [Namespace("ns")]))
    for identity in (ANN, ANONYMOUS):
        assert isinstance(permissions.subscribe(identity, "ns:x"), Refusal)
        assert isinstance(permissions.publish(identity, "ns:x", subscribed=True), Refusal)
        assert permissions.presence(identity, "ns:x", subscribed=True) == Refusal(
            ErrorCode.NOT_AVAILABLE, "Presence is off for this channel"
        )
        assert permissions.history(identity, "ns:x", subscribed=True).code == "not_available"  # type: ignore[union-attr]
    insecure = Permissions(permissions.namespaces, insecure=True)
    assert isinstance(insecure.subscribe(ANONYMOUS, "ns:x"), Allowed)
    assert isinstance(insecure.publish(ANONYMOUS, "ns:x", subscribed=False), Allowed)
    assert isinstance(insecure.subscribe(ANONYMOUS, "nope:x"), Refusal)  # names still count


def test_anonymous_connections_need_the_anonymous_options() -> None:
    ns = ChannelOptions(
        allow_subscribe_for_client=True, allow_publish_for_subscriber=True, presence=True
    )
    permissions = Permissions(Namespaces(OPEN_CHANNELS, [Namespace("ns", ns)]))
    assert isinstance(permissions.subscribe(ANN, "ns:x"), Allowed)
    assert isinstance(permissions.subscribe(ANONYMOUS, "ns:x"), Refusal)
    assert isinstance(permissions.publish(ANN, "ns:x", subscribed=True), Allowed)
    assert permissions.publish(ANN, "ns:x", subscribed=False) == Refusal(
        ErrorCode.NOT_SUBSCRIBED, "Not subscribed to this channel"
    )
    assert isinstance(permissions.publish(ANONYMOUS, "ns:x", subscribed=True), Refusal)


def test_channel_regex_is_searched_in_the_name_after_the_namespace() -> None:
    ns = ChannelOptions(allow_subscribe_for_client=True, channel_regex=r"^\d+$")
    permissions = Permissions(Namespaces(OPEN_CHANNELS, [Namespace("user", ns)]))
    assert isinstance(permissions.subscribe(ANN, "user:42"), Allowed)
    assert permissions.subscribe(ANN, "user:4x2") == Refusal(
        ErrorCode.FORBIDDEN, "This channel name is not allowed here"
    )


def test_credential_claims_narrow_what_a_namespace_allows() -> None:
    from sanic_feeds.channels import ChannelPatterns

    narrow = Identity(user="ann", subject="ann", channels=ChannelPatterns(["a*"]))
    permissions = Permissions(Namespaces(OPEN_CHANNELS))
    assert isinstance(permissions.subscribe(narrow, "abc"), Allowed)
    assert isinstance(permissions.subscribe(narrow, "xyz"), Refusal)


option_values: dict[str, st.SearchStrategy[Any]] = {
    name: (
        st.booleans()
        if isinstance(getattr(ChannelOptions(), name), bool)
        else st.integers(0, 10_000)
        if name in ("history_size", "max_message_size", "max_members")
        else st.floats(0, 1e6)
        if name == "history_ttl"
        else st.just("")
        if name == "channel_regex"
        else st.none() | st.builds(Rate, st.integers(1, 100), st.floats(0.1, 100))
    )
    for name in (
        "history_size",
        "history_ttl",
        "presence",
        "allow_subscribe_for_client",
        "allow_subscribe_for_anonymous",
        "allow_publish_for_subscriber",
        "allow_publish_for_client",
        "allow_publish_for_anonymous",
        "allow_presence_for_subscriber",
        "allow_presence_for_client",
        "allow_presence_for_anonymous",
        "allow_history_for_subscriber",
        "allow_history_for_client",
        "allow_history_for_anonymous",
        "channel_regex",
        "rate_limit",
        "max_members",
    )
}


@given(
    st.fixed_dictionaries({}, optional=option_values),
    st.sampled_from(["ns:1", "ns:x.y", "other:1", "lobby", "-bad", ""]),
    st.booleans(),
    st.booleans(),
)
def test_permissions_never_raise_and_never_allow_unknown_channels(
    values: dict[str, Any], channel: str, anonymous: bool, subscribed: bool
) -> None:
    """Whatever the options, every check answers Allowed or a documented Refusal, and a channel
    of an unknown namespace or a bad name is never allowed."""
    options = ChannelOptions(**values)
    permissions = Permissions(Namespaces(OPEN_CHANNELS, [Namespace("ns", options)]))
    identity = ANONYMOUS if anonymous else ANN
    verdicts = [
        permissions.subscribe(identity, channel),
        permissions.publish(identity, channel, subscribed=subscribed),
        permissions.presence(identity, channel, subscribed=subscribed),
        permissions.history(identity, channel, subscribed=subscribed),
    ]
    for verdict in verdicts:
        assert isinstance(verdict, Allowed | Refusal)
        if channel in ("other:1", "-bad", ""):
            assert isinstance(verdict, Refusal)
            assert verdict.code in ("unknown_namespace", "invalid_channel")


# -- over real sockets ---------------------------------------------------------------------------

NAMESPACES = (
    # A ticker: no history, no presence, no notices, no client publishing.
    Namespace(
        "ticker",
        ChannelOptions(allow_subscribe_for_client=True, allow_subscribe_for_anonymous=True),
    ),
    # A chat room: everything on, small history, a cap on members and message size, a rate.
    Namespace(
        "room",
        ChannelOptions(
            history_size=3,
            history_ttl=60,
            presence=True,
            join_leave=True,
            allow_subscribe_for_client=True,
            allow_subscribe_for_anonymous=True,
            allow_publish_for_subscriber=True,
            allow_publish_for_anonymous=True,
            allow_presence_for_subscriber=True,
            allow_presence_for_anonymous=True,
            max_members=2,
            max_message_size=200,
            rate_limit=Rate(2, 60),
        ),
    ),
    # Digits only after "user:", for authenticated users only.
    Namespace("user", ChannelOptions(allow_subscribe_for_client=True, channel_regex=r"^\d+$")),
)


async def send(ws: ClientConnection, **frame: Any) -> None:
    await ws.send(orjson.dumps(frame).decode())


async def opened(server: LocalServer, channel: str, **query: str) -> ClientConnection:
    ws = await connect(server.ws_url(channel, **query), max_queue=None)
    welcome = await recv_json(ws)
    assert welcome["type"] == "system", welcome
    return ws


async def closed_with(server: LocalServer, channel: str) -> tuple[int | None, str | None]:
    async with connect(server.ws_url(channel)) as ws:
        with pytest.raises(ConnectionClosed):
            await recv_json(ws)
        return ws.close_code, ws.close_reason


@pytest.fixture
async def server() -> Any:
    async with local_server(namespaces=NAMESPACES, ping_interval=60) as running:
        yield running


async def test_an_unknown_namespace_closes_4404_and_is_an_error_in_frames(
    server: LocalServer,
) -> None:
    code, reason = await closed_with(server, "tikcer:x")
    assert code == CloseCode.UNKNOWN_NAMESPACE
    assert int(CloseCode.UNKNOWN_NAMESPACE) == 4404
    assert reason == "unknown namespace 'tikcer'"
    ws = await opened(server, "lobby")
    await send(ws, type="subscribe", channel="tikcer:x")
    error = await recv_json(ws)
    assert (error["type"], error["code"], error["channel"]) == (
        "error",
        "unknown_namespace",
        "tikcer:x",
    )
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        status = await http.post("/api/channels/tikcer:x/publish", json={"a": 1})
    assert (status.status_code, status.json()["error"]) == (400, "unknown_namespace")
    with pytest.raises(ValueError, match="unknown namespace"):
        await server.feeds.publish("tikcer:x", 1)
    await ws.close()


async def test_history_off_means_no_ids_and_no_recovery(server: LocalServer) -> None:
    ws = await opened(server, "ticker:aapl")
    await server.feeds.publish("ticker:aapl", {"p": 1})
    data = await recv_json(ws)
    assert data["type"] == "data" and "id" not in data and "epoch" not in data
    await ws.close()
    again = await opened(server, "ticker:aapl", since="1")
    recovered = await recv_until(again, lambda m: m["type"] == "recovered")
    assert recovered["recovered"] is False and recovered["count"] == 0
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        history = await http.get("/api/channels/ticker:aapl/history")
    assert (history.status_code, history.json()["error"]) == (404, "not_available")
    await again.close()


async def test_publishing_refused_where_not_allowed(server: LocalServer) -> None:
    ws = await opened(server, "ticker:aapl")
    await send(ws, type="chat", message="hi")
    error = await recv_json(ws)
    assert (error["code"], error["channel"]) == ("forbidden", "ticker:aapl")
    await server.feeds.publish("ticker:aapl", "from the backend")  # the server may
    assert (await recv_json(ws))["data"] == "from the backend"
    await ws.close()


async def test_presence_refused_where_off_and_join_leave_per_namespace(server: LocalServer) -> None:
    ticker = await opened(server, "ticker:aapl")
    await send(ticker, type="presence")
    assert (await recv_json(ticker))["code"] == "not_available"
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        presence = await http.get("/api/channels/ticker:aapl/presence")
    assert (presence.status_code, presence.json()["error"]) == (404, "not_available")
    other = await opened(server, "ticker:aapl")  # no notice in a namespace without join_leave
    room = await opened(server, "room:1")
    second = await opened(server, "room:1")
    joined = await recv_json(room)
    assert joined["type"] == "user_joined"
    await send(second, type="presence")
    listed = await recv_until(second, lambda m: m["type"] == "presence")
    assert len(listed["clients"]) == 2
    await send(ticker, type="ping")
    assert (await recv_json(ticker))["type"] == "pong"  # nothing else came first
    for ws in (ticker, other, room, second):
        await ws.close()


async def test_max_members_max_message_size_and_namespace_rate(server: LocalServer) -> None:
    one = await opened(server, "room:full")
    two = await opened(server, "room:full")
    code, _ = await closed_with(server, "room:full")
    assert code == CloseCode.CHANNEL_FULL
    assert int(CloseCode.CHANNEL_FULL) == 4409
    lobby = await opened(server, "lobby")
    await send(lobby, type="subscribe", channel="room:full")
    assert (await recv_json(lobby))["code"] == "channel_full"
    await send(one, type="chat", message="x" * 300)
    assert (await recv_until(one, lambda m: m["type"] == "error"))["code"] == "message_too_large"
    for n in range(2):
        await send(one, type="chat", message=n)
        await recv_until(one, lambda m: m.get("message") in (0, 1))
    await send(one, type="chat", message="third")
    limited = await recv_until(one, lambda m: m["type"] == "error")
    assert limited["code"] == "rate_limited" and limited["retry_after"] > 0
    for ws in (one, two, lobby):
        await ws.close()


async def test_history_size_is_per_namespace(server: LocalServer) -> None:
    for n in range(5):
        await server.feeds.publish("room:h", n)
    ws = await opened(server, "room:h", since="0")
    replay = [m async for m in _until_recovered(ws)]
    assert [m["data"] for m in replay[:-1]] == [2, 3, 4]  # the namespace keeps 3
    assert replay[-1]["recovered"] is False
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        top = await http.get("/api/channels/lobby/history")
    assert top.status_code == 200  # the top level keeps its own history
    await ws.close()


async def _until_recovered(ws: ClientConnection) -> Any:
    while True:
        message = await recv_json(ws)
        yield message
        if message["type"] == "recovered":
            return


async def test_channel_regex_and_anonymous_subscribe(server: LocalServer) -> None:
    code, reason = await closed_with(server, "user:42")  # anonymous: not for user:
    assert (code, reason) == (CloseCode.POLICY_VIOLATION, "forbidden: this channel")
    async with local_server(
        namespaces=NAMESPACES, auth="token", tokens=("t=ann",), ping_interval=60
    ) as authed:
        ws = await opened(authed, "user:42", token="t")
        await send(ws, type="subscribe", channel="user:abc")
        error = await recv_json(ws)
        assert (error["code"], error["message"]) == (
            "forbidden",
            "This channel name is not allowed here",
        )
        await ws.close()


async def test_namespaces_span_instances(broker_url: str) -> None:
    """Two instances on one broker: a namespace's history and cap hold on both."""
    bus = MemoryBus() if broker_url == "memory://" else None
    async with AsyncExitStack() as stack:
        one, two = [
            await stack.enter_async_context(
                local_server(broker=broker_url, bus=bus, namespaces=NAMESPACES, ping_interval=60)
            )
            for _ in range(2)
        ]
        first = await stack.enter_async_context(connect(one.ws_url("room:x"), max_queue=None))
        second = await stack.enter_async_context(connect(two.ws_url("room:x"), max_queue=None))
        await recv_json(first)
        await recv_json(second)
        await asyncio.sleep(0.3)  # the reports of members on the other instance
        code, _ = await closed_with(two, "room:x")
        assert code == CloseCode.CHANNEL_FULL
        await send(first, type="chat", message="across")
        got = await recv_until(second, lambda m: m["type"] == "chat")
        assert got["message"] == "across" and got["id"] == 1
