"""Event webhooks from two instances on a private Redis: one "occupied" when a channel's first
member arrives anywhere, one "vacated" when its last leaves anywhere (or its last holder
crashes), user events, signatures, and every event delivered after a receiver that was down
comes back.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import pytest_asyncio
from sanic import Request, Sanic
from sanic.response import HTTPResponse, empty
from sanic.server.async_server import AsyncioServer
from websockets.asyncio.client import connect

from sanic_feeds import FeedsConfig
from sanic_feeds.errors import BrokerUnavailable
from sanic_feeds.protocol import CloseCode
from sanic_feeds.webhooks import SIGNATURE_HEADER, signature
from support.local_server import LocalServer, local_server
from support.ports import free_port
from support.redis_server import RedisServer
from support.server_process import ServerProcess
from support.ws import recv_until
from test_hooks import is_type

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "webhook-test-secret"
_apps = itertools.count(1)


@dataclass
class Receiver:
    port: int
    events: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0
    server: AsyncioServer | None = None

    async def start(self) -> None:
        app: Sanic[Any, Any] = Sanic(f"webhook_receiver_{next(_apps)}")
        app.config.MOTD = False
        app.config.TOUCHUP = False

        async def hook(request: Request) -> HTTPResponse:
            given = request.headers.get(SIGNATURE_HEADER, "")
            if not hmac.compare_digest(signature(SECRET, request.body), given):
                self.bad_signatures += 1
                return empty(status=401)
            event = orjson.loads(request.body)
            if all(e["id"] != event["id"] for e in self.events):  # at least once: drop repeats
                self.events.append(event)
            return empty()

        app.add_route(hook, "/hook", methods=["POST"])
        server = await app.create_server(
            host="127.0.0.1", port=self.port, return_asyncio_server=True, access_log=False
        )
        assert server is not None
        await server.startup()
        await server.start_serving()
        self.server = server

    async def stop(self) -> None:
        """Down for every sender: no new connections, and the kept-alive ones cut."""
        server, self.server = self.server, None
        if server is not None:
            await server.close()
            for connection in list(server.connections):
                connection.abort()

    def of(self, channel: str) -> list[str]:
        return [e["type"] for e in self.events if e.get("channel") == channel]


@dataclass
class Cluster:
    one: LocalServer
    two: LocalServer
    receiver: Receiver


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(redis_server: RedisServer) -> AsyncIterator[Cluster]:
    if not redis_server.is_running:
        redis_server.start()
    receiver = Receiver(free_port())
    await receiver.start()
    config = FeedsConfig(
        broker=redis_server.url,
        webhook_endpoint=f"http://127.0.0.1:{receiver.port}/hook",
        webhook_secret=SECRET,
        drain_time=0.5,
    )
    try:
        async with local_server(config) as one, local_server(config) as two:
            yield Cluster(one, two, receiver)
    finally:
        await receiver.stop()


async def until(check: Any, timeout: float = 8.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


async def member(server: LocalServer | ServerProcess, channel: str, user: str) -> Any:
    ws = await connect(server.ws_url(channel, user=user))
    await recv_until(ws, is_type("system"))
    return ws


async def test_occupied_and_vacated_once_over_the_cluster(cluster: Cluster) -> None:
    """Members arrive at once on both instances, more come and go: exactly one "occupied",
    then exactly one "vacated" after the last leaves anywhere; signed; user events too."""
    channel = "wh-room"
    one, two = cluster.one, cluster.two
    first = await asyncio.gather(
        member(one, channel, "ann"), member(two, channel, "bob"), member(one, channel, "cy")
    )
    await until(lambda: cluster.receiver.of(channel) == ["channel.occupied"])
    await first[0].close()
    later = await member(two, channel, "dee")
    for ws in first[1:]:
        await ws.close()
    await asyncio.sleep(0.3)
    assert cluster.receiver.of(channel) == ["channel.occupied"]  # dee is still there
    await later.close()
    await until(lambda: cluster.receiver.of(channel) == ["channel.occupied", "channel.vacated"])
    await until(lambda: sum(1 for e in cluster.receiver.events if "user" in e) == 8)
    users = [(e["type"], e["user"]) for e in cluster.receiver.events if "user" in e]
    kinds = ("user.connected", "user.disconnected")
    assert sorted(users) == sorted((k, u) for u in ("ann", "bob", "cy", "dee") for k in kinds)
    assert cluster.receiver.bad_signatures == 0


async def test_a_receiver_that_was_down_gets_every_event(cluster: Cluster) -> None:
    """While the receiver is down the events wait and are retried with backoff; when it comes
    back each arrives, in order per channel; /metrics counts the retries."""
    receiver = cluster.receiver
    await receiver.stop()
    waiting = await asyncio.to_thread(_waiting, cluster.one.http_url)
    for round_ in range(2):
        ws = await member(cluster.one, "wh-down", f"u{round_}")
        await ws.close()
        # The close handshake ends before the server has counted the leave: a second member
        # counted first would find the channel never vacated. Its four events (occupied,
        # vacated, connected, disconnected) queued say it was counted.
        waiting += 4
        await until_async(lambda n=waiting: _waiting(cluster.one.http_url) >= n)
    await asyncio.sleep(1.0)
    await receiver.start()
    expected = ["channel.occupied", "channel.vacated"] * 2
    # The backoff doubles while the receiver is down, so the next attempt may come about as
    # long after its return as it was down (seconds, on a loaded machine): bounded well past it.
    try:
        await until(lambda: receiver.of("wh-down") == expected, timeout=30)
    except TimeoutError:
        raise AssertionError(f"arrived: {receiver.of('wh-down')}") from None
    metrics = await asyncio.to_thread(_metrics, cluster.one.http_url)
    retried = [line for line in metrics.splitlines() if line.startswith("sanic_feeds_webhooks_r")]
    assert retried and float(retried[0].split()[1]) > 0, retried


def _metrics(url: str) -> str:
    import httpx

    return httpx.get(f"{url}/metrics").text


def _waiting(url: str) -> float:
    """The ``sanic_feeds_webhooks_waiting`` gauge of the instance at ``url``."""
    for line in _metrics(url).splitlines():
        if line.startswith("sanic_feeds_webhooks_waiting "):
            return float(line.split()[1])
    raise AssertionError("no sanic_feeds_webhooks_waiting in /metrics")


async def until_async(check: Any, timeout: float = 8.0) -> None:
    """:func:`until` for a blocking check, run in a thread."""
    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(check):
            await asyncio.sleep(0.05)


CRASH_TTL = 1.5
"""node_ttl of the instances in the crash test: the crashed one's report expires this long
after its last write at most, and survivors sweep every third of it."""


async def test_vacated_once_when_the_last_members_instance_crashes(
    redis_server: RedisServer,
) -> None:
    """An instance is killed (SIGKILL) while it holds the only members of one channel and some
    of another: two survivors race to notice its report expire, and exactly one "vacated" of
    the first channel arrives, within node_ttl and a sweep; none of the second, whose members
    on a survivor stay. A member arriving later gives "occupied" again."""
    if not redis_server.is_running:
        redis_server.start()
    receiver = Receiver(free_port())
    await receiver.start()
    endpoint = f"http://127.0.0.1:{receiver.port}/hook"
    prefix = f"crash-{secrets.token_hex(3)}:"  # apart from the module's instances
    config = FeedsConfig(
        broker=redis_server.url,
        redis_prefix=prefix,
        node_ttl=CRASH_TTL,
        webhook_endpoint=endpoint,
        webhook_secret=SECRET,
        drain_time=0.5,
    )
    flags = ["--node-ttl", str(CRASH_TTL), "--redis-prefix", prefix]
    flags += ["--webhook-endpoint", endpoint, "--webhook-secret", SECRET]
    doomed = ServerProcess(redis_server.url, extra_args=flags)
    sockets: list[Any] = []
    try:
        await asyncio.to_thread(doomed.start)
        async with local_server(config) as one, local_server(config) as two:
            sockets += [await member(doomed, "crash-only", "ann")]
            sockets += [await member(doomed, "crash-shared", "bob")]
            sockets += [await member(one, "crash-shared", "cy")]
            occupied = ["channel.occupied"]
            both = ("crash-only", "crash-shared")
            await until(lambda: all(receiver.of(c) == occupied for c in both))
            await asyncio.to_thread(doomed.kill)
            killed = asyncio.get_running_loop().time()
            vacated = [*occupied, "channel.vacated"]
            await until(lambda: receiver.of("crash-only") == vacated, timeout=CRASH_TTL + 4)
            took = asyncio.get_running_loop().time() - killed
            assert took < CRASH_TTL + 2.5, f"vacated {took:.1f} s after the crash"
            await asyncio.sleep(CRASH_TTL / 3 + 0.3)  # another sweep: nothing more comes
            assert receiver.of("crash-only") == vacated
            assert receiver.of("crash-shared") == occupied
            sockets += [await member(two, "crash-only", "dee")]
            await until(lambda: receiver.of("crash-only") == [*vacated, "channel.occupied"])
            for ws in sockets:
                await ws.close()
    finally:
        await asyncio.to_thread(doomed.close)
        await receiver.stop()
    assert receiver.bad_signatures == 0


CUT_TTL = 1.0
"""node_ttl of the instances in the cut-off test: short, so that the cut-off lasts ~2 s."""


async def test_an_instance_cut_off_past_node_ttl_counts_itself_again(
    redis_server: RedisServer,
) -> None:
    """One instance's presence reports fail for longer than node_ttl (its sockets stay open):
    the other takes it for dead and sends "vacated" for the channel only it held; when its
    reports come back it counts itself again: one "occupied" for that channel, nothing for the
    channel the other kept, the per-user limit refuses again at the right count, and its last
    leave sends one "vacated"."""
    if not redis_server.is_running:
        redis_server.start()
    receiver = Receiver(free_port())
    await receiver.start()
    config = FeedsConfig(
        broker=redis_server.url,
        redis_prefix=f"cut-{secrets.token_hex(3)}:",
        node_ttl=CUT_TTL,
        user_connection_limit=2,
        auth="token",
        tokens=("t-ann=ann", "t-bob=bob", "t-cy=cy"),
        webhook_endpoint=f"http://127.0.0.1:{receiver.port}/hook",
        webhook_secret=SECRET,
        drain_time=0.5,
    )
    sockets: list[Any] = []
    try:
        async with local_server(config) as cut, local_server(config) as other:

            async def joined(server: LocalServer, channel: str, user: str) -> Any:
                ws = await connect(server.ws_url(channel, token=f"t-{user}"))
                await recv_until(ws, is_type("system"))
                return ws

            sockets += [await joined(cut, "cut-only", "ann"), await joined(cut, "cut-only", "ann")]
            sockets += [await joined(cut, "cut-kept", "bob"), await joined(other, "cut-kept", "cy")]
            occupied = ["channel.occupied"]
            await until(lambda: all(receiver.of(c) == occupied for c in ("cut-only", "cut-kept")))
            presence = cut.node.presence
            report = presence.report_rooms
            failing = True

            async def cut_off(*args: Any, **kwargs: Any) -> None:
                if failing:
                    raise BrokerUnavailable("cut off (test)")
                await report(*args, **kwargs)

            presence.report_rooms = cut_off  # type: ignore[method-assign]  # the cut-off
            vacated = [*occupied, "channel.vacated"]
            await until(lambda: receiver.of("cut-only") == vacated, timeout=CUT_TTL + 4)
            failing = False
            back = [*vacated, "channel.occupied"]
            await until(lambda: receiver.of("cut-only") == back, timeout=CUT_TTL + 4)
            assert cut.node.reaper.recount.recounts >= 1
            async with asyncio.timeout(5), connect(other.ws_url("x", token="t-ann")) as third:
                await third.wait_closed()
                assert third.close_code == CloseCode.CONNECTION_LIMIT
            await asyncio.sleep(CUT_TTL / 3 + 0.3)  # another sweep: nothing more comes
            assert receiver.of("cut-only") == back
            assert receiver.of("cut-kept") == occupied
            for ws in sockets[:2]:
                await ws.close()
            await until(lambda: receiver.of("cut-only") == [*back, "channel.vacated"])
            for ws in sockets[2:]:
                await ws.close()
            await until(lambda: receiver.of("cut-kept") == vacated)
            await asyncio.sleep(0.3)
            assert receiver.of("cut-only") == [*back, "channel.vacated"]
    finally:
        await receiver.stop()
    assert receiver.bad_signatures == 0
