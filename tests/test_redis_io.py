"""The Redis path under load: bursts are batched, never refused while Redis answers; no key per
message; a lost reply is resolved from the stream, never stored twice; a join is acknowledged
only when it holds.

All against a private redis-server (see conftest.py) and real servers on free ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator

import hiredis
import httpx
import orjson
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect

from sanic_feeds.brokers import HistoryPolicy, create_broker, redis_history
from sanic_feeds.brokers.redis import RedisBroker
from sanic_feeds.brokers.redis_commands import Asked, CommandPool, NotSent
from sanic_feeds.brokers.redis_keys import history_keys
from sanic_feeds.brokers.resp import Endpoint, Reply, ReplyError, encode, too_old
from sanic_feeds.errors import BrokerUnavailable
from sanic_feeds.history import HistoryRules, Stored, newest_after
from support.collect import Deliveries
from support.local_server import local_server
from support.redis_server import RedisServer
from support.server_process import ServerProcess
from support.ws import eventually, is_data, recv_json, recv_until


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def data_body(channel: str, n: int) -> bytes:
    return orjson.dumps({"type": "data", "channel": channel, "data": n})


async def test_thousands_of_concurrent_stored_publishes_all_succeed(
    redis_url: str, redis: Redis
) -> None:
    """5,000 publishes at once on one broker (redis-py's pool refused all past 100): every one is
    stored once, offsets 1..5000, on two connections in far fewer writes than commands."""
    broker = create_broker(redis_url, history=HistoryPolicy(size=10_000))
    await broker.open(None)
    try:
        results = await asyncio.gather(
            *(broker.publish_stored("burst", data_body("burst", i)) for i in range(5000))
        )
        assert sorted(r.offset for r in results) == list(range(1, 5001))
        assert isinstance(broker, RedisBroker)
        stats = broker.statistics()
        assert stats["refused"] == 0
        assert stats["batches"] < stats["commands"] / 20
        clients = await redis.execute_command("CLIENT", "LIST", "TYPE", "normal")
        assert clients.count(b"name=sanic-feeds:") == 2  # the two command connections
    finally:
        await broker.aclose()


async def test_a_full_budget_makes_callers_wait_not_fail(redis_url: str) -> None:
    """With room for 16 commands in flight, 2,000 concurrent calls all complete: the rest wait
    for room (that is how a session ends up not reading its socket), and the budget holds."""
    pool = CommandPool(Endpoint.from_url(redis_url), max_in_flight=16)
    await pool.open()
    peak = 0

    async def one(i: int) -> int:
        nonlocal peak
        peak = max(peak, pool.in_flight)
        count: int = await pool.call(encode(b"INCR", b"budget"))
        return count

    try:
        replies = await asyncio.gather(*(one(i) for i in range(2000)))
        assert sorted(replies) == list(range(1, 2001))
        assert peak <= 16
        assert pool.statistics()["refused"] == 0
        assert pool.in_flight == 0
    finally:
        await pool.aclose()


async def test_publishes_add_no_key_per_message(redis_url: str, redis: Redis) -> None:
    """N stored publishes to one channel leave the same three keys whatever N is; an
    idempotency key exists only when the caller gives one."""
    broker = create_broker(redis_url)
    await broker.open(None)
    try:
        for count in (10, 1000):
            await asyncio.gather(
                *(broker.publish_stored("k", data_body("k", i)) for i in range(count))
            )
            assert await redis.dbsize() == 3  # offset counter, stream, epoch
        first = await broker.publish_stored("k", data_body("k", -1), idempotency_key="abc")
        again = await broker.publish_stored("k", data_body("k", -1), idempotency_key="abc")
        assert first == again
        assert await redis.dbsize() == 4
    finally:
        await broker.aclose()


async def test_a_node_subscribes_and_publishes_on_one_connection(
    redis_url: str, redis: Redis
) -> None:
    """RESP3: a subscribing node holds two connections, not three; the first carries every
    subscription and the stored publishes, so a publish's reply and the node's own copy of the
    message come back on the same socket (the copy first: Redis writes it while the script
    runs)."""
    seen: list[tuple[str, bytes]] = []
    broker = create_broker(redis_url, probe_interval=60)  # no probe publish in between
    await broker.open(lambda channel, payload: seen.append((channel, payload)))
    try:
        await broker.subscribe("one-connection")
        stored = await broker.publish_stored("one-connection", data_body("one-connection", 1))
        assert [channel for channel, _ in seen] == ["one-connection"]  # before the reply
        assert b'"id":%d' % stored.offset in seen[0][1]
        listing = (await redis.execute_command("CLIENT", "LIST")).decode().splitlines()
        ours = [line for line in listing if "name=sanic-feeds:" in line]
        assert len(ours) == 2
        (carrier,) = [line for line in ours if " sub=2 " in line]  # its own channel and ours
        assert " resp=3" in carrier and " cmd=evalsha " in carrier
    finally:
        await broker.aclose()


async def test_a_refused_subscription_is_matched_to_its_command(
    redis_url: str, redis_server: RedisServer
) -> None:
    """An error reply to SUBSCRIBE (an ACL that denies the channel) holds the place of that
    command among the others on the connection: the subscribe fails at once, not after the
    confirmation timeout, and the stored publishes written around it each get their own reply."""
    redis_server.command(
        "ACL", "SETUSER", "narrow", "reset", "on", ">pw", "~*", "resetchannels",
        "&sanic-feeds:node:*", "&sanic-feeds:ch:{open}", "+@all",
    )  # fmt: skip
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    broker = create_broker(f"redis://narrow:pw@127.0.0.1:{port}/0")
    try:
        await broker.open(lambda channel, payload: None)
        await broker.subscribe("open")

        def publishes(numbers: range) -> list[asyncio.Future[Stored]]:
            return [
                asyncio.ensure_future(broker.publish_stored("open", data_body("open", i)))
                for i in numbers
            ]

        before = publishes(range(20))
        await asyncio.sleep(0)  # they queue their commands
        await asyncio.sleep(0)  # the lane writes them
        started = asyncio.get_running_loop().time()
        refused = asyncio.ensure_future(broker.subscribe("closed"))  # written at once
        after = publishes(range(20, 40))  # written at the end of this turn, after the SUBSCRIBE
        with pytest.raises(BrokerUnavailable, match=r"NOPERM|No permissions"):
            await refused
        assert asyncio.get_running_loop().time() - started < 2
        results = await asyncio.gather(*before, *after)
        assert sorted(r.offset for r in results) == list(range(1, 41))
        assert "closed" not in broker.subscriptions
        await broker.subscribe("open")  # the connection is still in order
    finally:
        await broker.aclose()
        redis_server.command("ACL", "DELUSER", "narrow")


async def test_an_acl_that_denies_one_channel_leaves_the_others_subscribed(
    redis_url: str, redis_server: RedisServer, redis: Redis
) -> None:
    """Redis refuses a re-subscription batch as a whole for one denied channel: after an ACL
    change (which makes Redis drop the subscribed connection) the node subscribes the others
    one by one, only the denied channel leaves the books, and the node stays healthy."""
    allow = ["&sanic-feeds:node:*", "&sanic-feeds:ch:{a}", "&sanic-feeds:ch:{b}"]
    redis_server.command(
        "ACL", "SETUSER", "narrowed", "reset", "on", ">pw", "~*", "+@all", "resetchannels",
        *allow, "&sanic-feeds:ch:{c}",
    )  # fmt: skip
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    seen = Deliveries()
    broker = create_broker(
        f"redis://narrowed:pw@127.0.0.1:{port}/0", probe_interval=0.2, probe_timeout=0.5
    )
    try:
        await broker.open(seen)
        for channel in "abc":
            await broker.subscribe(channel)
        assert isinstance(broker, RedisBroker)
        before = broker.reconnects
        redis_server.command("ACL", "SETUSER", "narrowed", "resetchannels", *allow)
        await eventually(lambda: broker.reconnects > before, timeout=10)
        await eventually(lambda: broker.subscriptions == {"a", "b"}, timeout=10)
        stored = await broker.publish_stored("a", data_body("a", 1))
        await redis.publish("sanic-feeds:ch:{b}", b" 0\n" + data_body("b", 2))
        await eventually(lambda: len(seen.payloads("a")) == len(seen.payloads("b")) == 1, timeout=5)
        assert stored.offset == 1
        await asyncio.sleep(0.5)  # probes go round: the node stays up
        await broker.check()
    finally:
        await broker.aclose()
        redis_server.command("ACL", "DELUSER", "narrowed")


class _Wire:
    """The socket side of a lane, for feeding it a sequence of replies by hand."""

    usable, closed = True, False

    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def abort(self, reason: str) -> None:
        raise AssertionError(f"the lane dropped its connection: {reason}")


def _push(*parts: bytes | int) -> Reply:
    reader = hiredis.Reader()
    items = [
        b":%d\r\n" % p if isinstance(p, int) else b"$%d\r\n%b\r\n" % (len(p), p) for p in parts
    ]
    reader.feed(b">%d\r\n" % len(parts) + b"".join(items))
    return reader.gets()


async def test_a_push_redis_sends_of_its_own_accord_never_shifts_the_replies() -> None:
    """Redis pushes ``sunsubscribe`` for a shard channel whose slot left, then answers our own
    SUNSUBSCRIBE of it with MOVED. That push must not be taken for the answer: the command is
    ended by the PING written after it, and the publishes behind it get their own replies."""
    pool = CommandPool(Endpoint())
    lane = pool._lanes[0]
    wire = _Wire()
    lane.conn = wire  # type: ignore[assignment]
    refused: list[bytes] = []

    class Listener:
        def on_push(self, push: Reply, owed: Asked | None) -> None: ...
        def on_refused(self, asked: Asked, error: ReplyError) -> None:
            refused.append(asked.keys[0])

        def on_connected(self) -> None: ...
        def on_disconnected(self, reason: str) -> None: ...

    pool.carry(Listener())
    assert lane.ask(Asked(b"SUNSUBSCRIBE", (b"x",), b"sunsubscribe"), encode(b"SUNSUBSCRIBE", b"x"))
    assert wire.written.endswith(encode(b"PING"))
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    lane.sent.extend([first, second])
    pool.in_flight = 2
    lane.on_reply(_push(b"sunsubscribe", b"x", 0))  # of Redis's own accord
    lane.on_reply(ReplyError("MOVED 1234 10.0.0.2:6379"))  # the answer to our SUNSUBSCRIBE
    lane.on_reply(b"PONG")
    lane.on_reply([5, b"epoch-a"])
    lane.on_reply([9, b"epoch-b"])
    assert (first.result(), second.result()) == ([5, b"epoch-a"], [9, b"epoch-b"])
    assert refused == [b"x"] and pool.in_flight == 0 and not lane.sent


async def test_killed_command_connections_store_nothing_twice(redis_url: str, redis: Redis) -> None:
    """Redis kills the command connections twice in the middle of a burst. Replies are lost;
    each publish is then looked up in the stream (by its nonce) or, when Redis has no trace of
    it, sent once more. Every publish succeeds, and the stream holds each message once."""
    broker = create_broker(redis_url, history=HistoryPolicy(size=10_000))
    await broker.open(None)
    assert isinstance(broker, RedisBroker)
    count = 10_000
    try:
        # Where the kills land depends on the machine's load: a burst whose replies were all
        # read before a kill loses nothing, so the burst is repeated (on a fresh channel)
        # until one does, a few times at most.
        for attempt in range(4):
            channel = f"kill-{attempt}"
            writes = broker.statistics()["batches"]
            tasks = [
                asyncio.ensure_future(broker.publish_stored(channel, data_body(channel, i)))
                for i in range(count)
            ]
            # First as soon as the burst is written (Redis is still working through it), then
            # again once half of it has been answered.
            async with asyncio.timeout(20):
                while broker.statistics()["batches"] == writes:
                    await asyncio.sleep(0)
            await redis.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            async with asyncio.timeout(20):
                while sum(t.done() for t in tasks) < count / 2:
                    await asyncio.sleep(0.001)
            await redis.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            results = await asyncio.gather(*tasks)
            assert sorted(r.offset for r in results) == list(range(1, count + 1))
            entries = await redis.xrange(next(iter(await redis.keys(f"*hist:{{{channel}}}"))))
            assert entries is not None
            bodies = [orjson.loads(fields[b"d"])["data"] for _, fields in entries if fields]
            assert sorted(bodies) == list(range(count))
            if broker.lost_replies > 0:
                break
        assert broker.lost_replies > 0  # the kills did land mid-burst
    finally:
        await broker.aclose()


async def test_recovery_reads_from_the_readers_position() -> None:
    """The history walk stops at the reader's position: a reader 10 behind touches 10 entries
    (and one more to know there were no more than the limit), not the whole history."""
    touched = 0

    class Counting(list[tuple[int, bytes]]):
        def __reversed__(self) -> Iterator[tuple[int, bytes]]:
            nonlocal touched
            for entry in super().__reversed__():
                touched += 1
                yield entry

    entries = Counting((i, b"x") for i in range(1, 1001))
    assert [o for o, _ in newest_after(entries, 990, 1001)] == list(range(1000, 990, -1))
    assert touched == 11


async def test_messages_right_after_the_welcome_reach_the_member(redis_url: str) -> None:
    """The welcome means the join holds: 100 times, a message published on another instance
    the moment the welcome arrives reaches the new member, and the other instance's presence
    lists it."""
    async with (
        local_server(broker=redis_url, join_leave=False) as one,
        local_server(broker=redis_url, join_leave=False) as two,
    ):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{two.port}") as http:
            listed = 0
            for trial in range(100):
                channel = f"fresh-{trial}"
                async with connect(one.ws_url(channel)) as ws:
                    welcome = await recv_json(ws)
                    assert welcome["type"] == "system"
                    if trial < 20:
                        presence = (await http.get(f"/api/channels/{channel}/presence")).json()
                        clients = [m["client"] for m in presence["clients"]]
                        listed += clients == [welcome["client"]]
                    await two.feeds.publish(channel, {"trial": trial})
                    got = await recv_json(ws, timeout=5)
                    assert got["data"] == {"trial": trial}
            assert listed == 20


async def test_a_subscribe_is_acknowledged_when_it_holds(redis_url: str) -> None:
    """Same for ``subscribe``: once ``subscribed`` arrives, a publish from another instance
    reaches the socket."""
    async with (
        local_server(broker=redis_url, join_leave=False) as one,
        local_server(broker=redis_url, join_leave=False) as two,
    ):
        async with connect(one.ws_url("home")) as ws:
            await recv_json(ws)
            for trial in range(30):
                channel = f"extra-{trial}"
                await ws.send(orjson.dumps({"type": "subscribe", "channel": channel}).decode())
                assert await recv_json(ws) == {"type": "subscribed", "channel": channel}
                await two.feeds.publish(channel, trial)
                got = await recv_until(ws, is_data(trial), timeout=5)
                assert got["channel"] == channel


async def test_simultaneous_chats_over_two_instances_are_all_delivered(redis_url: str) -> None:
    """500 clients in 100 rooms of 5, spread over two instances, each send one chat at the same
    moment: all 2,500 deliveries arrive and nobody gets an error (before: 990 arrived, 302
    chats were refused with broker_unavailable while Redis was healthy)."""
    rooms, per_room = 100, 5
    async with (
        local_server(broker=redis_url, join_leave=False) as one,
        local_server(broker=redis_url, join_leave=False) as two,
    ):
        sockets = []
        for i in range(rooms * per_room):
            server = (one, two)[i % 2]
            ws = await connect(server.ws_url(f"room-{i // per_room}", user=f"u{i}"))
            sockets.append(ws)
        try:
            for ws in sockets:
                await recv_json(ws)
            frame = orjson.dumps({"type": "chat", "message": "hi"}).decode()
            await asyncio.gather(*(ws.send(frame) for ws in sockets))

            async def receive(ws: ClientConnection) -> list[dict[str, object]]:
                return [await recv_json(ws, timeout=20) for _ in range(per_room)]

            received = await asyncio.gather(*(receive(ws) for ws in sockets))
            chats = [m for got in received for m in got]
            assert all(m["type"] == "chat" for m in chats)
            assert len(chats) == rooms * per_room * per_room
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets))


class Stampede:
    """Many HTTP connections opened first, then one POST on each at the same moment."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.open = 0
        self.all_open = asyncio.Event()
        self.go = asyncio.Event()
        self._opening = asyncio.Semaphore(200)

    async def post(self, port: int, path: str, body: bytes) -> int:
        async with self._opening:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        self.open += 1
        if self.open == self.count:
            self.all_open.set()
        try:
            await self.go.wait()
            head = (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            async with asyncio.timeout(30):
                status = await reader.readline()
            return int(status.split()[1])
        finally:
            writer.close()


async def test_concurrent_http_publishes_are_all_answered_2xx(redis_url: str) -> None:
    """2,000 HTTP publishes sent at the same moment on 2,000 connections to a real server
    process are all accepted (before: 244 answered 2xx, the rest 503)."""
    with ServerProcess(redis_url) as server:
        stampede = Stampede(2000)
        requests = [
            asyncio.ensure_future(
                stampede.post(server.port, f"/api/channels/c{i % 50}/publish", b'{"n":1}')
            )
            for i in range(stampede.count)
        ]
        async with asyncio.timeout(30):
            await stampede.all_open.wait()
        stampede.go.set()
        statuses = await asyncio.gather(*requests)
        assert sorted(set(statuses)) == [200]


async def test_frozen_redis_refuses_within_a_bound_and_recovers(
    redis_server: RedisServer, redis_url: str
) -> None:
    """While Redis is frozen (SIGSTOP) publishes fail within the command timeout instead of
    hanging, and once it resumes they succeed again."""
    broker = create_broker(redis_url)
    assert isinstance(broker, RedisBroker)
    broker._commands.command_timeout = 1.0  # keep the test short; the default is 5 s
    got = Deliveries()
    await broker.open(got)
    try:
        await broker.publish_stored("f", data_body("f", 0))
        redis_server.pause()
        try:
            async with asyncio.timeout(6):
                with pytest.raises(BrokerUnavailable):
                    await broker.publish_stored("f", data_body("f", 1))
        finally:
            redis_server.resume()
        stored = None
        for _ in range(50):
            try:
                stored = await broker.publish_stored("f", data_body("f", 2))
                break
            except BrokerUnavailable:
                await asyncio.sleep(0.1)
        assert stored is not None
    finally:
        await broker.aclose()


def test_a_redis_too_old_is_named_as_such() -> None:
    """The handshake's HELLO answer tells a Redis before 6.2 (no NOMKSTREAM) or before 6.0 (no
    HELLO at all) apart, so the server refuses it with a sentence, not a script error later."""
    assert too_old({b"server": b"redis", b"version": b"7.0.15", b"proto": 3}) is None
    assert too_old({b"server": b"redis", b"version": b"6.2.0", b"proto": 3}) is None
    assert "Redis 6.0.9 is too old" in (too_old({b"version": b"6.0.9"}) or "")
    assert "predates 6.0" in (too_old(ReplyError("ERR unknown command 'HELLO'")) or "")
    assert too_old(b"OK") is None and too_old(ReplyError("NOAUTH Authentication required.")) is None


def test_endpoint_reads_credentials_and_database() -> None:
    """The URL forms redis-py takes: password, user, database, unix sockets."""
    plain = Endpoint.from_url("redis://127.0.0.1:6390/3")
    assert (plain.host, plain.port, plain.db, plain.password) == ("127.0.0.1", 6390, 3, None)
    auth = Endpoint.from_url(f"redis://me:{secrets.token_hex(4)}@h:1/0")
    assert auth.username == "me" and auth.password
    unix = Endpoint.from_url("unix:///tmp/redis.sock?db=2")
    assert (unix.path, unix.db) == ("/tmp/redis.sock", 2)
    assert Endpoint.from_url("rediss://h:1/0?ssl_cert_reqs=none").tls is not None


async def test_an_error_reply_to_the_probe_is_a_failed_probe_not_the_end_of_probing(
    redis_server: RedisServer, redis_url: str, redis: Redis
) -> None:
    """While Redis runs a long script it answers BUSY: health turns unavailable, and once the
    script is over the probe (which keeps running) clears it."""
    broker = create_broker(redis_url, probe_interval=0.1, probe_timeout=1.0)
    await broker.open(Deliveries())
    await redis.config_set("lua-time-limit", 100)
    other = Redis.from_url(redis_url)
    spin = "local t = redis.call('TIME')[1] while redis.call('TIME')[1] - t < 2 do end"
    busy = asyncio.ensure_future(other.eval(spin, 0))
    try:
        await asyncio.sleep(0.5)

        async def unhealthy() -> bool:
            try:
                await broker.check()
            except BrokerUnavailable:
                return True
            return False

        await eventually(unhealthy, timeout=5)
        assert isinstance(broker, RedisBroker)
        probe = broker._probe
        assert probe is not None

        def probe_saw_it() -> bool:
            return probe.error is not None and "BUSY" in probe.error

        await eventually(probe_saw_it, timeout=5)
        await busy

        async def healthy() -> bool:
            return not await unhealthy()

        await eventually(healthy, timeout=5)
        assert probe.error is None  # the probe kept running and cleared it
    finally:
        with contextlib.suppress(Exception):  # whatever happened, let the script end first
            await busy
        await redis.config_set("lua-time-limit", 5000)
        await other.aclose()
        await broker.aclose()


async def test_closing_the_pool_fails_the_callers_waiting_for_room(redis_url: str) -> None:
    """A caller waiting for room when the pool closes gets NotSent at once, never hangs."""
    pool = CommandPool(Endpoint.from_url(redis_url), max_in_flight=1)
    await pool.open()
    holder = asyncio.ensure_future(pool.call(encode(b"BLPOP", b"nothing", b"2")))
    await asyncio.sleep(0.05)
    waiting = asyncio.ensure_future(pool.call(encode(b"PING")))
    await asyncio.sleep(0.05)
    await pool.aclose()
    async with asyncio.timeout(1):
        with pytest.raises(NotSent):
            await waiting
        with pytest.raises(BrokerUnavailable):
            await holder


async def test_a_lost_offset_counter_starts_the_history_anew(redis_url: str, redis: Redis) -> None:
    """If the counter key is lost (evicted) while the stream survives, the next publish starts
    a new history (new epoch) instead of failing until the counter passes the stream's top."""
    broker = create_broker(redis_url)
    await broker.open(None)
    try:
        for n in range(5):
            old = await broker.publish_stored("evicted", data_body("evicted", n))
        (seq_key,) = await redis.keys("*hist:{evicted}:seq")
        await redis.delete(seq_key)
        new = await broker.publish_stored("evicted", data_body("evicted", 5))
        assert new.epoch != old.epoch and new.offset == 1
        page = await broker.history("evicted", None, None, 100)
        assert page.offsets == [1] and page.epoch == new.epoch
    finally:
        await broker.aclose()


async def test_expiry_is_renewed_once_a_window_and_set_on_every_key_made(
    redis_url: str, redis: Redis
) -> None:
    """A node renews a channel's expiry at most once a second (no expiry command per publish),
    yet every key a publish creates gets its expiry at once: a new history, and a stream
    evicted on its own between two renewals, so nothing outlives the channel."""
    broker = create_broker(redis_url, history=HistoryPolicy(size=100, ttl=600))
    await broker.open(None)
    try:
        await broker.publish_stored("renewed", data_body("renewed", 0))
        keys = sorted(await redis.keys("*hist:{renewed}*"))
        assert len(keys) == 3
        assert all(590_000 < ttl <= 600_000 for ttl in [await redis.pttl(k) for k in keys])
        for key in keys:
            await redis.pexpire(key, 300_000)  # as if the window had run down by half
        await broker.publish_stored("renewed", data_body("renewed", 1))
        # not renewed: this node renewed them under a second ago
        assert all(ttl <= 300_000 for ttl in [await redis.pttl(k) for k in keys])
        _, stream, _ = history_keys("sanic-feeds:", "renewed")
        await redis.delete(stream)  # evicted alone
        await broker.publish_stored("renewed", data_body("renewed", 2))
        assert 590_000 < await redis.pttl(stream) <= 600_000
        page = await broker.history("renewed", None, None, 10)
        assert page.offsets == [3]
    finally:
        await broker.aclose()


class Clock:
    """A monotonic clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


async def test_prepared_publishes_are_bounded_and_renew_once_a_window(
    redis_url: str, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node encodes each channel's keys and settings once. Past ``PREPARED_KEPT`` channels it
    forgets those it has not used for a second: the bound holds, and a channel prepared again
    keeps its namespace's settings and its history. The expiry is renewed once a window per
    channel (``PEXPIRE`` counted by Redis), and a keyed publish (the other encoding) agrees."""
    clock = Clock()
    monkeypatch.setattr(redis_history, "time", clock)
    monkeypatch.setattr(redis_history, "PREPARED_KEPT", 4)
    rules = HistoryRules(HistoryPolicy(size=100, ttl=600), {"short": HistoryPolicy(size=5, ttl=60)})
    broker = create_broker(redis_url, history=rules)
    await broker.open(None)
    assert isinstance(broker, RedisBroker)

    def prepared() -> dict[str, object]:
        return dict(broker._streams._prepared)

    def channel(n: int) -> str:
        return f"short:bound{n}" if n % 2 else f"bound{n}"

    async def expiries() -> int:
        return int((await redis.info("commandstats")).get("cmdstat_pexpire", {}).get("calls", 0))

    try:
        for n in range(4):
            assert (await broker.publish_stored(channel(n), data_body(channel(n), 0))).offset == 1
        assert len(prepared()) == 4
        clock.now += 5  # all four stale
        before = await expiries()
        await broker.publish_stored(channel(4), data_body(channel(4), 0))
        assert list(prepared()) == [channel(4)]
        await broker.publish_stored(channel(4), data_body(channel(4), 1))  # within its window
        assert await expiries() - before == 3  # the first one's, on its three keys
        clock.now += 1.5
        await broker.publish_stored(channel(4), data_body(channel(4), 2))
        assert await expiries() - before == 6
        for n in range(4):  # prepared again: the same keys, settings and history
            stored = await broker.publish_stored(channel(n), data_body(channel(n), 1))
            assert stored.offset == 2 and len(stored.epoch) == 8 and int(stored.epoch, 16) >= 0
            ttl = 60_000 if n % 2 else 600_000
            for key in history_keys("sanic-feeds:", channel(n)):
                assert ttl - 10_000 < await redis.pttl(key) <= ttl
            page = await broker.history(channel(n), None, None, 10)
            assert page.offsets == [1, 2]
        assert len(prepared()) == 5  # at the bound, nothing stale to forget: all kept, + 1
        keyed = await broker.publish_stored("bound0", data_body("bound0", 2), idempotency_key="k")
        again = await broker.publish_stored("bound0", data_body("bound0", 3), idempotency_key="k")
        assert keyed == again and keyed.offset == 3
    finally:
        await broker.aclose()


async def test_a_node_id_given_again_makes_new_nonces_and_epochs(
    redis_url: str, redis: Redis
) -> None:
    """A process started with the node id of an earlier one counts its nonces from 1 again: a
    random salt keeps them (and the epoch of a history that starts anew) its own."""
    epochs = []
    for _ in range(2):
        broker = RedisBroker(redis_url, node_id="fixed-node")
        await broker.open(None)
        try:
            epochs.append((await broker.publish_stored("renamed", data_body("renamed", 0))).epoch)
        finally:
            await broker.aclose()
        await redis.delete(*history_keys("sanic-feeds:", "renamed"))  # the history is lost
    assert epochs[0] != epochs[1]


async def test_waiting_callers_get_the_room_in_their_order(redis_url: str) -> None:
    """With the budget full, callers are served first come, first served: a freed slot is
    reserved for the longest waiter, and a newcomer queues behind the waiters."""
    pool = CommandPool(Endpoint.from_url(redis_url), max_in_flight=1)
    await pool.open()
    order: list[int] = []

    async def one(n: int) -> None:
        await pool.call(encode(b"PING"))
        order.append(n)

    try:
        holder = asyncio.ensure_future(pool.call(encode(b"BLPOP", b"nothing", b"0.3")))
        await asyncio.sleep(0.05)
        waiters = [asyncio.ensure_future(one(n)) for n in range(5)]
        await asyncio.sleep(0.05)
        await holder
        late = asyncio.ensure_future(one(99))  # arrives while the waiters are being served
        await asyncio.gather(*waiters, late)
        assert order == [0, 1, 2, 3, 4, 99]
        assert pool.in_flight == 0
    finally:
        await pool.aclose()
