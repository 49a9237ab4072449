"""The server API with Centrifugo's own Python client (``cent``), against two instances on one
private Redis: every method, its errors, and what it does to real WebSocket clients on both.

The two instances are shared by the module's tests (each test uses its own channels and users).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from cent import (
    AsyncClient,
    BatchRequest,
    BroadcastRequest,
    ChannelsRequest,
    Disconnect,
    DisconnectRequest,
    HistoryRemoveRequest,
    HistoryRequest,
    InfoRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
    RefreshRequest,
    StreamPosition,
    SubscribeRequest,
    UnsubscribeRequest,
)
from cent.exceptions import CentApiResponseError, CentUnauthorizedError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sanic_feeds.protocol import CloseCode
from support.redis_server import RedisServer
from support.server_process import ServerProcess
from support.ws import eventually, recv_json, recv_until

KEY = "test-api-key"
NAMESPACES = '[{"name": "quiet"}]'
"""``quiet:*`` channels: a namespace with every feature off (presence and history: 108)."""

Servers = tuple[ServerProcess, ServerProcess]


@pytest.fixture(scope="module")
def servers(redis_server: RedisServer) -> Iterator[Servers]:
    if redis_server.is_paused:
        redis_server.resume()
    if not redis_server.is_running:
        redis_server.start()
    redis_server.command("FLUSHALL")
    args = ["--api-key", KEY, "--node-ttl", "3", "--namespaces", NAMESPACES]
    with (
        ServerProcess(redis_server.url, extra_args=args) as one,
        ServerProcess(redis_server.url, extra_args=args) as two,
    ):
        yield one, two


@pytest.fixture
async def cents(servers: Servers) -> AsyncIterator[tuple[AsyncClient, AsyncClient]]:
    """One ``cent`` client per instance."""
    one, two = servers
    async with (
        AsyncClient(f"{one.http_url}/api", KEY) as first,
        AsyncClient(f"{two.http_url}/api", KEY) as second,
    ):
        yield first, second


async def joined(server: ServerProcess, channel: str, user: str) -> ClientConnection:
    ws, _ = await joined_as(server, channel, user)
    return ws


async def joined_as(server: ServerProcess, channel: str, user: str) -> tuple[ClientConnection, str]:
    """A member of ``channel`` and its client id (from the welcome)."""
    ws = await connect(server.ws_url(channel, user=user))
    welcome = await recv_json(ws)
    assert welcome["type"] == "system"
    return ws, str(welcome["client"])


async def closed_with(ws: ClientConnection, timeout: float = 5.0) -> int | None:
    """Read until the server closes ``ws``; its close code. The socket is closed too before
    this returns: one left to the garbage collector warns in a later test."""
    try:
        while True:
            await recv_json(ws, timeout)
    except ConnectionClosed:
        pass
    await asyncio.wait_for(ws.wait_closed(), timeout)
    return ws.close_code


def is_data(channel: str) -> Any:
    return lambda m: m["type"] == "data" and m["channel"] == channel


# -- publishing and history ----------------------------------------------------------------------


async def test_publish_broadcast_history_and_history_remove(
    servers: Servers, cents: tuple[AsyncClient, AsyncClient]
) -> None:
    """publish reaches members on both instances and answers its offset and epoch; broadcast
    answers per channel (an unknown namespace is 102 there); history iterates as Centrifugo's;
    history_remove leaves an empty history."""
    one, two = servers
    api, other = cents
    a, b = await joined(one, "pub-news", "ann"), await joined(two, "pub-news", "bob")
    async with a, b:
        first = await api.publish(PublishRequest(channel="pub-news", data={"n": 1}))
        assert first.offset == 1 and first.epoch
        for ws in (a, b):
            got = await recv_until(ws, is_data("pub-news"))
            assert (got["data"], got["id"], got["epoch"]) == ({"n": 1}, 1, first.epoch)
        again = await other.publish(
            PublishRequest(channel="pub-news", data={"n": 2}, idempotency_key="k1")
        )
        retry = await api.publish(
            PublishRequest(channel="pub-news", data={"n": 2}, idempotency_key="k1")
        )
        assert (again.offset, retry.offset) == (2, 2)
        skipped = await api.publish(
            PublishRequest(channel="pub-news", data={"n": 0}, skip_history=True)
        )
        assert skipped.offset == 0  # not stored: no offset
        reply = await api.broadcast(
            BroadcastRequest(channels=["pub-news", "pub-other", "nope:x"], data={"n": 3})
        )
        ok, fresh, unknown = reply.responses
        assert ok.result is not None and ok.result.offset == 3
        assert fresh.result is not None and fresh.result.offset == 1
        assert unknown.error is not None and unknown.error.code == 102
        for ws in (a, b):
            got = await recv_until(ws, lambda m: m.get("data") == {"n": 3})
            assert got["id"] == 3

    position = await api.history(HistoryRequest(channel="pub-news"))
    assert (position.offset, position.epoch, position.publications) == (3, first.epoch, [])
    every = await other.history(HistoryRequest(channel="pub-news", limit=-1))
    assert [(p.offset, p.data) for p in every.publications] == [
        (1, {"n": 1}),
        (2, {"n": 2}),
        (3, {"n": 3}),
    ]
    since = StreamPosition(offset=1, epoch=first.epoch)
    after = await api.history(HistoryRequest(channel="pub-news", limit=1, since=since))
    assert [p.offset for p in after.publications] == [2]
    newest = await api.history(HistoryRequest(channel="pub-news", limit=2, reverse=True))
    assert [p.offset for p in newest.publications] == [3, 2]
    with pytest.raises(CentApiResponseError) as wrong_epoch:
        await api.history(
            HistoryRequest(channel="pub-news", limit=1, since=StreamPosition(offset=1, epoch="x"))
        )
    assert wrong_epoch.value.code == 112

    await other.history_remove(HistoryRemoveRequest(channel="pub-news"))
    for client in (api, other):
        emptied = await client.history(HistoryRequest(channel="pub-news", limit=-1))
        assert (emptied.publications, emptied.offset) == ([], 0)


# -- presence, channels, info --------------------------------------------------------------------


async def test_presence_channels_and_info_cover_both_instances(
    servers: Servers, cents: tuple[AsyncClient, AsyncClient]
) -> None:
    """presence and presence_stats list the members of both instances; channels counts them
    (filtered by pattern); info lists both nodes with their connections."""
    one, two = servers
    api, _ = cents
    members = [
        await joined_as(one, "look-room", "ann"),
        await joined_as(two, "look-room", "bob"),
        await joined_as(two, "look-room", "ann"),
    ]
    ids = {client for _, client in members}
    sockets = [ws for ws, _ in members] + [await joined(one, "look-else", "cid")]
    try:

        async def everyone_listed() -> bool:
            found = await api.presence(PresenceRequest(channel="look-room"))
            return set(found.presence) == ids

        await eventually(everyone_listed, timeout=10)
        listed = (await api.presence(PresenceRequest(channel="look-room"))).presence
        assert {c.user for c in listed.values()} == {"ann", "bob"}
        stats = await api.presence_stats(PresenceStatsRequest(channel="look-room"))
        assert (stats.num_clients, stats.num_users) == (3, 2)

        async def counted() -> bool:
            found = await api.channels(ChannelsRequest(pattern="look-*"))
            counts = {name: info.num_clients for name, info in found.channels.items()}
            return counts == {"look-room": 3, "look-else": 1}

        await eventually(counted, timeout=10)
        only = await api.channels(ChannelsRequest(pattern="look-e*"))
        assert set(only.channels) == {"look-else"}

        async def both_nodes() -> bool:
            nodes = (await api.info(InfoRequest())).nodes
            return len(nodes) == 2 and all(n.num_clients >= 1 and n.version for n in nodes)

        await eventually(both_nodes, timeout=10)
        nodes = (await api.info(InfoRequest())).nodes
        assert sum(n.num_clients for n in nodes) >= 4
        assert len({n.uid for n in nodes}) == 2
    finally:
        for ws in sockets:
            await ws.close()


# -- a user's connections on every instance ------------------------------------------------------


async def test_subscribe_and_unsubscribe_reach_the_user_on_both_instances(
    servers: Servers, cents: tuple[AsyncClient, AsyncClient]
) -> None:
    """subscribe makes the user's connections on both instances receive a channel they never
    asked for, with a subscribed notice marked as the server's; other users are untouched;
    unsubscribe stops it, with an unsubscribed notice."""
    one, two = servers
    api, other = cents
    sam1, sam2 = await joined(one, "sub-home", "sam"), await joined(two, "sub-home", "sam")
    tom = await joined(one, "sub-home", "tom")
    async with sam1, sam2, tom:
        await api.subscribe(SubscribeRequest(user="sam", channel="sub-extra"))
        for ws in (sam1, sam2):
            notice = await recv_until(ws, lambda m: m["type"] == "subscribed")
            assert notice == {"type": "subscribed", "channel": "sub-extra", "server": True}
        await other.publish(PublishRequest(channel="sub-extra", data="for sam"))
        for ws in (sam1, sam2):
            assert (await recv_until(ws, is_data("sub-extra")))["data"] == "for sam"

        await other.unsubscribe(UnsubscribeRequest(user="sam", channel="sub-extra"))
        for ws in (sam1, sam2):
            notice = await recv_until(ws, lambda m: m["type"] == "unsubscribed")
            assert notice == {"type": "unsubscribed", "channel": "sub-extra", "server": True}
        await api.publish(PublishRequest(channel="sub-extra", data="not any more"))
        await api.publish(PublishRequest(channel="sub-home", data="marker"))
        for ws in (sam1, sam2, tom):
            got = await recv_until(ws, lambda m: m["type"] == "data")
            assert (got["channel"], got["data"]) == ("sub-home", "marker")


async def test_subscribe_of_one_client_only(
    servers: Servers, cents: tuple[AsyncClient, AsyncClient]
) -> None:
    """With ``client``, only that connection of the user is subscribed."""
    one, two = servers
    api, _ = cents
    first = await joined(one, "one-home", "uma")
    second, second_id = await joined_as(two, "one-home", "uma")
    async with first, second:
        await api.subscribe(SubscribeRequest(user="uma", channel="one-extra", client=second_id))
        notice = await recv_until(second, lambda m: m["type"] == "subscribed")
        assert notice["channel"] == "one-extra"
        await api.publish(PublishRequest(channel="one-extra", data="only second"))
        await api.publish(PublishRequest(channel="one-home", data="marker"))
        assert (await recv_until(second, is_data("one-extra")))["data"] == "only second"
        got = await recv_until(first, lambda m: m["type"] in ("data", "subscribed"))
        assert (got["type"], got["channel"]) == ("data", "one-home")


async def test_disconnect_closes_the_user_on_both_instances_with_the_code(
    servers: Servers, cents: tuple[AsyncClient, AsyncClient]
) -> None:
    """disconnect closes every connection of the user, on both instances, with the given code
    and reason; another user's stay open. Without a code, 4410."""
    one, two = servers
    api, _ = cents
    dan1, dan2 = await joined(one, "dis-room", "dan"), await joined(two, "dis-room", "dan")
    eve = await joined(two, "dis-room", "eve")
    async with eve:
        await api.disconnect(
            DisconnectRequest(user="dan", disconnect=Disconnect(code=4321, reason="go away"))
        )
        for ws in (dan1, dan2):
            assert await closed_with(ws) == 4321
            assert ws.close_reason == "go away"
        await eve.send('{"type":"ping"}')
        assert (await recv_until(eve, lambda m: m["type"] == "pong")) == {"type": "pong"}
        kim = await joined(one, "dis-room", "kim")
        await api.disconnect(DisconnectRequest(user="kim"))
        assert await closed_with(kim) == CloseCode.DISCONNECTED


async def test_refresh_expired_closes_and_expire_at_closes_later(
    servers: Servers, cents: tuple[AsyncClient, AsyncClient]
) -> None:
    """refresh with expired closes the user's connections on both instances with 4401 (token
    expired); with expire_at they close with 4401 when it passes."""
    one, two = servers
    api, _ = cents
    ray1, ray2 = await joined(one, "ref-room", "ray"), await joined(two, "ref-room", "ray")
    await api.refresh(RefreshRequest(user="ray", expired=True))
    for ws in (ray1, ray2):
        assert await closed_with(ws) == CloseCode.TOKEN_EXPIRED
    liz = await joined(two, "ref-room", "liz")
    started = time.monotonic()
    await api.refresh(RefreshRequest(user="liz", expire_at=int(time.time()) + 2))
    assert await closed_with(liz, timeout=6) == CloseCode.TOKEN_EXPIRED
    assert time.monotonic() - started >= 0.9  # at expire_at (whole seconds), not at once


async def test_batch_runs_commands_in_order(cents: tuple[AsyncClient, AsyncClient]) -> None:
    api, _ = cents
    reply = await api.batch(
        BatchRequest(
            requests=[
                PublishRequest(channel="batch-a", data=1),
                PublishRequest(channel="batch-a", data=2),
                HistoryRequest(channel="batch-a", limit=-1),
            ],
        )
    )
    first, second, history = reply.replies
    assert (first.offset, second.offset) == (1, 2)  # type: ignore[attr-defined]  # PublishResult
    assert [p.data for p in history.publications] == [1, 2]  # type: ignore[attr-defined]


# -- errors ----------------------------------------------------------------------------------------


async def test_errors_are_centrifugos(
    servers: Servers, cents: tuple[AsyncClient, AsyncClient]
) -> None:
    """A wrong key is 401; an unknown namespace 102; a feature off 108; a malformed field 107;
    an unknown method 404 with 104; a body that is not JSON 400 with 107."""
    one, _ = servers
    api, _ = cents
    async with AsyncClient(f"{one.http_url}/api", "wrong") as stranger:
        with pytest.raises(CentUnauthorizedError):
            await stranger.info(InfoRequest())
    off = Disconnect(code=1, reason="")
    calls: list[tuple[Callable[[], Awaitable[object]], int]] = [
        (lambda: api.publish(PublishRequest(channel="nope:x", data=1)), 102),
        (lambda: api.subscribe(SubscribeRequest(user="u", channel="nope:x")), 102),
        (lambda: api.presence(PresenceRequest(channel="quiet:x")), 108),
        (lambda: api.history(HistoryRequest(channel="quiet:x")), 108),
        (lambda: api.history_remove(HistoryRemoveRequest(channel="quiet:x")), 108),
        (lambda: api.publish(PublishRequest(channel="bad name!", data=1)), 107),
        (lambda: api.disconnect(DisconnectRequest(user="u", disconnect=off)), 107),
    ]
    for call, code in calls:
        with pytest.raises(CentApiResponseError) as refused:
            await call()
        assert refused.value.code == code
    async with httpx.AsyncClient(base_url=one.http_url, trust_env=False) as http:
        cases: list[tuple[str, dict[str, str], bytes, int, int | None]] = [
            ("/api/info", {}, b"{}", 401, 101),
            ("/api/nothing", {"X-API-Key": KEY}, b"{}", 404, 104),
            ("/api/publish", {"X-API-Key": KEY}, b"{not json", 400, 107),
            ("/api/publish", {"X-API-Key": KEY}, b"[1, 2]", 400, 107),
            ("/api/publish", {"X-API-Key": KEY}, b"{}", 200, 107),
            ("/api/info", {"Authorization": f"apikey {KEY}"}, b"{}", 200, None),
        ]
        for path, headers, body, status, expected in cases:
            response = await http.post(path, content=body, headers=headers)
            assert response.status_code == status, (path, body)
            answer = response.json()
            if expected is None:
                assert "result" in answer
            else:
                assert answer["error"]["code"] == expected, answer
        old = await http.post(
            "/api/channels/err-old/publish",
            json={"x": 1},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert old.json() == {"ok": True, "channel": "err-old"}


# -- bad input -----------------------------------------------------------------------------------

METHODS = [
    "publish", "broadcast", "subscribe", "unsubscribe", "disconnect", "refresh", "presence",
    "presence_stats", "history", "history_remove", "channels", "info", "batch",
]  # fmt: skip
FIELDS = [
    "channel", "channels", "data", "user", "client", "limit", "since", "reverse", "pattern",
    "disconnect", "expire_at", "expired", "idempotency_key", "skip_history", "whitelist",
    "recover_since", "commands", "parallel", "code", "reason", "offset", "epoch", "b64data",
]  # fmt: skip
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
JSON = st.recursive(
    SCALARS | st.sampled_from(["news", "quiet:x", "nope:y", "u", "-bad"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=5), inner, max_size=5)
        | st.dictionaries(st.sampled_from(METHODS), inner, max_size=1)
    ),
    max_leaves=12,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(method=st.sampled_from(METHODS), body=st.dictionaries(st.sampled_from(FIELDS), JSON) | JSON)
def test_any_body_gets_a_documented_answer(servers: Servers, method: str, body: object) -> None:
    """Whatever JSON a method gets, the answer is a result or a documented error (never a
    500), and the server keeps serving."""
    one, _ = servers
    with httpx.Client(base_url=one.http_url, trust_env=False, timeout=10) as http:
        response = http.post(
            f"/api/{method}", content=orjson.dumps(body), headers={"X-API-Key": KEY}
        )
        assert response.status_code in (200, 400), response.text
        answer = response.json()
        if "error" in answer:
            assert answer["error"]["code"] in (100, 102, 104, 106, 107, 108, 112), answer
            assert response.status_code == 200 or answer["error"]["code"] == 107
        else:
            assert response.status_code == 200
            assert "result" in answer or "replies" in answer
            for reply in answer.get("replies", ()):
                if "error" in reply:
                    assert reply["error"]["code"] in (100, 102, 104, 106, 107, 108, 112), reply
        assert http.get("/health").status_code == 200
