"""Scenarios of the Redis path, each beside the memory broker in the same run.

sanic-feeds only: two instances (``sanic-feeds serve``) on a private Redis against one instance
on the memory broker, measured through the public interfaces (WebSocket ``/feed/<channel>``, the
HTTP API) and from outside (/proc for the servers' CPU, ``INFO cpu`` and ``DBSIZE`` for Redis'):

- ``redis_burst_100x5``: 500 members of 100 rooms send one chat each at the same moment (chats
  delivered, error frames), then 2,000 concurrent HTTP publishes to one instance (how many 2xx);
- ``redis_chat_50x4_at_2k``: 50 rooms x 4 members chatting at 2,000 chats/s in all: server CPU
  per chat, Redis CPU per stored chat against a plain PUBLISH sent one per round trip with
  redis-py to the same Redis, keys added per chat;
- ``redis_keys_per_publish``: keys added (``DBSIZE``) by 1,000 and by 5,000 HTTP publishes;
- ``redis_reconnect_storm_200``: 200 clients reconnecting at once with ``since`` 10 messages
  behind, on a channel with 1,000 stored messages and on one with 20: server CPU per reconnect.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from loadgen import MESSAGE_SIZE, message
from procs import cpu_seconds_fine, free_port, private_redis, running

PY = sys.executable
MEMORY = "memory"
REDIS = "redis"
BARE_MEMORY = "bare_memory"
BARE_REDIS = "bare_redis"
CHAT_SIDES = (MEMORY, REDIS, BARE_MEMORY, BARE_REDIS)
"""The chat scenario's runs: sanic-feeds on each broker, and the bare relay (the floor) on each."""
_TEXT = WSMsgType.TEXT
PING = b'{"type":"ping"}'


# -- the servers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    pid: int
    port: int


@contextmanager
def instances(count: int, broker: str, *extra: str) -> Iterator[list[Instance]]:
    """``count`` instances of ``sanic-feeds serve`` on ``broker``, with the benchmark's settings
    (as run.py's: notices off, 4 MiB client buffers) and ``extra`` options."""
    with ExitStack() as stack:
        started = []
        for _ in range(count):
            port = free_port()
            argv = [
                PY, "-m", "sanic_feeds", "serve", "--port", str(port), "--broker", broker,
                "--join-leave", "off", "--log-level", "WARNING", "--client-buffer", "4MiB", *extra,
            ]  # fmt: skip
            proc = stack.enter_context(running("sanic-feeds", argv, port))
            started.append(Instance(proc.pid, port))
        yield started


@contextmanager
def bare_relays(count: int, broker: str) -> Iterator[list[Instance]]:
    """``count`` processes of servers/bare_relay.py on ``broker``: the chat scenario's topology
    with no product logic, as the floor of what two instances cost over one."""
    relay = str(Path(__file__).resolve().parent / "servers" / "bare_relay.py")
    with ExitStack() as stack:
        started = []
        for _ in range(count):
            port = free_port()
            proc = stack.enter_context(running("bare relay", [PY, relay, str(port), broker], port))
            started.append(Instance(proc.pid, port))
        yield started


def server_cpu(servers: list[Instance]) -> float:
    return sum(cpu_seconds_fine(s.pid) for s in servers)


class RedisMeter:
    """Redis' own CPU time (``INFO cpu``: used_cpu_sys + used_cpu_user) and key count."""

    def __init__(self, url: str | None) -> None:
        self.client = redis.Redis.from_url(url) if url else None

    def cpu(self) -> float:
        if self.client is None:
            return 0.0
        info = self.client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def keys(self) -> int:
        return int(self.client.dbsize()) if self.client is not None else 0

    def script_seconds(self) -> float:
        """Time Redis spent running scripts (``INFO commandstats``, ``EVALSHA``): the part of
        its CPU that the stored-publish script itself takes, commands it calls included."""
        if self.client is None:
            return 0.0
        stats = self.client.info("commandstats").get("cmdstat_evalsha", {})
        return float(stats.get("usec", 0)) / 1e6

    def publish_baseline(self, size: int, count: int, subscribers: int = 0) -> float:
        """Redis CPU (µs) per plain PUBLISH of ``size`` bytes, one per round trip, to a channel
        with ``subscribers`` subscriber connections (a chat on two instances reaches two)."""
        assert self.client is not None
        payload = b"x" * size
        listeners = [self.client.pubsub() for _ in range(subscribers)]
        for listener in listeners:
            listener.subscribe("bench:baseline")
        before = self.cpu()
        for _ in range(count):
            self.client.publish("bench:baseline", payload)
        spent = self.cpu() - before
        for listener in listeners:
            listener.close()
        return spent / count * 1e6

    async def paced_publish_baseline(
        self,
        url: str,
        size: int,
        rate: float,
        seconds: float,
        subscribers: int = 2,
        script: bytes | None = None,
    ) -> float:
        """Redis CPU (µs) per plain PUBLISH sent one per round trip at ``rate`` a second, to
        ``subscribers`` connections that read as the instances do: what a chat costs Redis at
        the scenario's pace without the history (sparse commands cost Redis more per command
        than back-to-back ones: each wakes it up on its own).

        With ``script`` (:data:`APPEND_AND_PUBLISH`), the same paced ``EVALSHA``s of it
        instead: a stored publish with nothing but the stream append and the publish."""
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(url)
        listeners = [client.pubsub() for _ in range(subscribers)]
        for listener in listeners:
            await listener.subscribe("bench:paced")

        async def drain(listener: Any) -> None:
            while True:
                await listener.get_message(timeout=1.0)

        readers = [asyncio.create_task(drain(listener)) for listener in listeners]
        payload = b"x" * size
        sha = await client.script_load(script) if script is not None else None
        loop = asyncio.get_running_loop()
        try:
            before = self.cpu()
            started, sent = loop.time(), 0
            while loop.time() < started + seconds:
                await asyncio.sleep(max(0.0, started + sent / rate - loop.time()))
                if sha is None:
                    await client.publish("bench:paced", payload)
                else:
                    await client.evalsha(sha, 1, "bench:stream", 1000, "bench:paced", payload)
                sent += 1
            await asyncio.sleep(0.2)
            spent = self.cpu() - before
        finally:
            for task in readers:
                task.cancel()
            for listener in listeners:
                await listener.aclose()
            await client.delete("bench:stream")
            await client.aclose()
        return spent / max(sent, 1) * 1e6


APPEND_AND_PUBLISH = b"""
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'd', ARGV[3])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""
"""The least a stored publish can be in one script: append to a stream, publish. No offset
counter and no epoch (which sanic-feeds' dense offsets and recovery need), no nonce."""


# -- WebSocket members ---------------------------------------------------------------------------


@dataclass
class Counts:
    """What the members of one run received, by message type."""

    chats: int = 0
    data: int = 0
    pongs: int = 0
    recovered: int = 0
    recovered_complete: int = 0
    replayed: int = 0
    """The ``count`` fields of the ``recovered`` frames."""
    chat_bytes: int = 0
    """The size of the last chat frame received (the stored message, as clients get it)."""
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ns: list[int] = field(default_factory=list)
    record: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class Member(WSListener):
    def __init__(self, counts: Counts) -> None:
        self.counts = counts
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def send(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.send(_TEXT, payload)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not _TEXT:
            return
        received = time.perf_counter_ns()
        payload = frame.get_payload_as_bytes()
        msg = orjson.loads(payload)
        kind = msg.get("type")
        counts = self.counts
        if kind == "chat":
            counts.chats += 1
            counts.chat_bytes = len(payload)
            text = msg.get("message")
            if counts.record and isinstance(text, str) and text[:1].isdigit():
                sent_ns = int(text.split(" ", 2)[1])
                counts.latencies_ns.append(received - sent_ns)
        elif kind == "data":
            counts.data += 1
        elif kind == "pong":
            counts.pongs += 1
        elif kind == "recovered":
            counts.recovered += 1
            counts.recovered_complete += msg.get("recovered") is True
            counts.replayed += int(msg.get("count") or 0)
        elif kind == "error":
            counts.errors[str(msg.get("code"))] += 1
        counts.changed.set()


async def connect(urls: list[str], counts: Counts, parallel: int = 100) -> list[Member]:
    semaphore = asyncio.Semaphore(parallel)

    async def one(url: str) -> Member:
        async with semaphore:
            _, client = await ws_connect(
                lambda: Member(counts), url, max_frame_size=1 << 20, websocket_handshake_timeout=30
            )
            return client  # type: ignore[return-value]

    return list(await asyncio.gather(*(one(url) for url in urls)))


async def until(counts: Counts, done: Callable[[], bool], seconds: float) -> bool:
    """Wait (at most ``seconds``) until ``done()``; False when it never was."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not done():
        left = end - loop.time()
        if left <= 0:
            return False
        counts.changed.clear()
        try:
            await asyncio.wait_for(counts.changed.wait(), left)
        except TimeoutError:
            return done()
    return True


async def joined(members: list[Member], counts: Counts) -> None:
    """The answer to a first frame comes once the URL channel is joined: ping every member."""
    target = counts.pongs + len(members)
    for member in members:
        member.send(PING)
    if not await until(counts, lambda: counts.pongs >= target, 30):
        raise RuntimeError(f"only {len(members) - (target - counts.pongs)} members joined")


def close(members: list[Member]) -> None:
    for member in members:
        if member.transport is not None:
            member.transport.disconnect()


def url(server: Instance, channel: str, query: str = "") -> str:
    return f"ws://127.0.0.1:{server.port}/feed/{channel}?user=bench{query}"


# -- HTTP ----------------------------------------------------------------------------------------


class Http:
    """HTTP/1.1 on one keep-alive connection: just enough for the publish and history API."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Http:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def send(self, method: str, path: str, body: bytes = b"", headers: str = "") -> None:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)

    async def response(self) -> tuple[int, bytes]:
        status = await self.reader.readline()
        if not status:
            raise ConnectionError("closed")
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return int(status.split()[1]), await self.reader.readexactly(length)

    async def request(self, method: str, path: str, body: bytes = b"", headers: str = "") -> Any:
        self.send(method, path, body, headers)
        status, answer = await self.response()
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {answer[:200]!r}")
        return orjson.loads(answer)

    def close(self) -> None:
        self.writer.close()


def data_body(n: int) -> bytes:
    """A JSON body of about 128 bytes."""
    head = b'{"n":%d,"pad":"' % n
    return head + b"x" * (MESSAGE_SIZE - len(head) - 2) + b'"}'


async def publish_many(
    port: int, channel: str, count: int, connections: int = 8, keyed: bool = False
) -> Counter[int]:
    """``count`` HTTP publishes over ``connections`` keep-alive connections: statuses."""
    statuses: Counter[int] = Counter()
    numbers = iter(range(count))

    async def worker() -> None:
        http = await Http.open(port)
        try:
            for n in numbers:
                key = f"Idempotency-Key: bench-{channel}-{n}\r\n" if keyed else ""
                http.send("POST", f"/api/channels/{channel}/publish", data_body(n), key)
                statuses[(await http.response())[0]] += 1
        finally:
            http.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return statuses


async def concurrent_publishes(port: int, channel: str, count: int) -> Counter[str]:
    """Open ``count`` connections, then send one publish on each at once; statuses by class."""
    semaphore = asyncio.Semaphore(200)

    async def opened() -> Http:
        async with semaphore:
            return await Http.open(port)

    conns = await asyncio.gather(*(opened() for _ in range(count)), return_exceptions=True)
    ready = [c for c in conns if isinstance(c, Http)]
    outcome: Counter[str] = Counter(failed=len(conns) - len(ready))
    for n, http in enumerate(ready):
        http.send("POST", f"/api/channels/{channel}/publish", data_body(n))

    async def answer(http: Http) -> str:
        try:
            async with asyncio.timeout(30):
                status, _ = await http.response()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            return "failed"
        finally:
            http.close()
        return f"{status // 100}xx" if status not in (503,) else "503"

    outcome.update(await asyncio.gather(*(answer(http) for http in ready)))
    return outcome


# -- scenarios -----------------------------------------------------------------------------------


async def burst(servers: list[Instance], rooms: int = 100, per_room: int = 5) -> dict[str, float]:
    """Every member of ``rooms`` rooms sends one chat at the same moment (members alternate
    between the instances); then 2,000 publishes at once over HTTP to the first instance."""
    counts = Counts()
    urls = [
        url(servers[(r * per_room + m) % len(servers)], f"burst-{r}")
        for r in range(rooms)
        for m in range(per_room)
    ]
    members = await connect(urls, counts)
    await joined(members, counts)
    expected = len(members) * per_room
    loop = asyncio.get_running_loop()
    started = loop.time()
    for seq, member in enumerate(members):
        member.send(message(seq))

    def settled() -> bool:  # every chat delivered to every member, or refused with an error
        return counts.chats + per_room * sum(counts.errors.values()) >= expected

    await until(counts, settled, 20)
    took = loop.time() - started
    await asyncio.sleep(0.5)  # stragglers
    result = {
        "burst_chats_delivered": counts.chats,
        "burst_chats_expected": expected,
        "burst_errors_broker_unavailable": counts.errors["broker_unavailable"],
        "burst_errors_other": sum(counts.errors.values()) - counts.errors["broker_unavailable"],
        "burst_s": took,
    }
    close(members)

    watched = Counts()
    watcher = await connect([url(servers[-1], "burst-http")], watched)
    await joined(watcher, watched)
    outcome = await concurrent_publishes(servers[0].port, "burst-http", 2000)
    await until(watched, lambda: watched.data >= outcome["2xx"], 10)
    close(watcher)
    result |= {
        "http_sent": 2000,
        "http_2xx": outcome["2xx"],
        "http_503": outcome["503"],
        "http_other": outcome["4xx"] + outcome["5xx"],
        "http_failed": outcome["failed"],
        "http_data_delivered": watched.data,
    }
    await asyncio.sleep(0.5)
    return result


class ChatRun:
    """``rooms`` x ``per_room`` members (split over the instances) taking turns to chat at a
    fixed ``rate`` in all; every chat goes to the ``per_room`` members of its room. Opened once,
    then measured one window at a time, so that two runs (memory broker, Redis) can take turns
    and share whatever the machine is doing meanwhile."""

    def __init__(
        self,
        servers: list[Instance],
        meter: RedisMeter,
        counts: Counts,
        senders: list[Member],
        per_room: int,
        rate: float,
    ) -> None:
        self.servers, self.meter, self.counts = servers, meter, counts
        self.senders, self.per_room, self.rate = senders, per_room, rate

    @classmethod
    async def open(
        cls,
        servers: list[Instance],
        meter: RedisMeter,
        rooms: int = 50,
        per_room: int = 4,
        rate: float = 2000.0,
    ) -> ChatRun:
        counts = Counts()
        order = [(r, m) for m in range(per_room) for r in range(rooms)]  # turns go round the rooms
        urls = [url(servers[m % len(servers)], f"chat-{r}") for r, m in order]
        senders = await connect(urls, counts)
        await joined(senders, counts)
        run = cls(servers, meter, counts, senders, per_room, rate)
        await run.drive(1.0)  # warm-up
        return run

    async def drive(self, duration: float) -> int:
        loop = asyncio.get_running_loop()
        seq = 0
        started = loop.time()
        while loop.time() < started + duration:
            await asyncio.sleep(max(0.0, started + seq / self.rate - loop.time()))
            self.senders[seq % len(self.senders)].send(message(seq))
            seq += 1
        return seq

    async def measure(self, seconds: float) -> dict[str, float]:
        """One measured window of ``seconds``."""
        counts, meter, servers, per_room = self.counts, self.meter, self.servers, self.per_room
        await asyncio.sleep(0.3)
        counts.chats = 0
        counts.errors.clear()
        counts.latencies_ns.clear()
        counts.record = True
        cpu, redis_cpu, keys = server_cpu(servers), meter.cpu(), meter.keys()
        script = meter.script_seconds()
        sent = await self.drive(seconds)
        await until(counts, lambda: counts.chats >= sent * per_room, 2)
        await asyncio.sleep(0.2)
        cpu, redis_cpu = server_cpu(servers) - cpu, meter.cpu() - redis_cpu
        script = meter.script_seconds() - script
        counts.record = False
        latencies = sorted(counts.latencies_ns)
        run = {
            "chats": sent,
            "deliveries": counts.chats,
            "deliveries_expected": sent * per_room,
            "errors": sum(counts.errors.values()),
            "server_cpu_us_per_chat": cpu / sent * 1e6,
            "p50_ms": latencies[len(latencies) // 2] / 1e6 if latencies else float("nan"),
            "p99_ms": latencies[int(len(latencies) * 0.99)] / 1e6 if latencies else float("nan"),
            "chat_bytes": counts.chat_bytes,
        }  # fmt: skip
        if meter.client is not None:
            run["redis_cpu_us_per_chat"] = redis_cpu / sent * 1e6
            run["redis_script_us_per_chat"] = script / sent * 1e6
            run["keys_added_per_chat"] = (meter.keys() - keys) / sent
        return run

    async def aclose(self) -> None:
        close(self.senders)
        await asyncio.sleep(0.5)


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


async def chat(
    servers: list[Instance],
    meter: RedisMeter,
    seconds: float,
    reps: int,
    rooms: int = 50,
    per_room: int = 4,
    rate: float = 2000.0,
) -> dict[str, float]:
    """:class:`ChatRun` measured ``reps`` times in a row; the medians."""
    run = await ChatRun.open(servers, meter, rooms, per_room, rate)
    runs = [await run.measure(seconds) for _ in range(reps)]
    await run.aclose()
    return medians(runs)


async def fill(server: Instance, channel: str, count: int) -> tuple[str, int, int]:
    """Store ``count`` chats in ``channel``; its epoch, top id and the messages kept."""
    counts = Counts()
    (member,) = await connect([url(server, channel)], counts)
    await joined([member], counts)
    for seq in range(count):
        member.send(message(seq))
    if not await until(counts, lambda: counts.chats >= count, 30):
        raise RuntimeError(f"{channel}: {counts.chats} of {count} chats came back")
    close([member])
    http = await Http.open(server.port)
    try:
        top = await http.request("GET", f"/api/channels/{channel}/history?limit=1")
        kept = await http.request("GET", f"/api/channels/{channel}/history?limit={count}")
    finally:
        http.close()
    return str(top["epoch"]), int(top["top"]), len(kept["messages"])


async def storm(
    servers: list[Instance], meter: RedisMeter, rounds: int, clients: int = 200, missed: int = 10
) -> dict[str, float]:
    """``clients`` reconnect at once, ``missed`` messages behind, to a channel holding 1,000
    messages and to one holding 20 (alternately, ``rounds`` times each)."""
    histories = {size: await fill(servers[0], f"storm-{size}", size) for size in (1000, 20)}
    totals: dict[int, dict[str, float]] = {size: Counter() for size in histories}
    counts = Counts()
    for round_ in range(rounds + 1):  # the first is a warm-up
        for size, (epoch, top, _kept) in histories.items():
            query = f"&since={top - missed}&epoch={epoch}"
            urls = [url(servers[i % len(servers)], f"storm-{size}", query) for i in range(clients)]
            target = counts.recovered + clients
            before = (counts.recovered_complete, counts.replayed, counts.chats)
            cpu, redis_cpu = server_cpu(servers), meter.cpu()
            members = await connect(urls, counts, parallel=clients)
            await until(counts, lambda: counts.recovered >= target, 30)  # noqa: B023
            await asyncio.sleep(0.2)
            cpu, redis_cpu = server_cpu(servers) - cpu, meter.cpu() - redis_cpu
            close(members)
            await asyncio.sleep(0.7)  # the leaves are done outside the measurement
            if round_ == 0:
                continue
            total = totals[size]
            total["server_cpu"] += cpu
            total["redis_cpu"] += redis_cpu
            total["reconnects"] += clients
            total["recovered_complete"] += counts.recovered_complete - before[0]
            total["replayed"] += counts.replayed - before[1]
            total["chats_received"] += counts.chats - before[2]
    result: dict[str, float] = {}
    for size, total in totals.items():
        done = total["reconnects"]
        result[f"history_kept_{size}"] = histories[size][2]
        result[f"reconnects_{size}"] = done
        result[f"recovered_complete_{size}"] = total["recovered_complete"]
        result[f"replayed_{size}"] = total["replayed"]
        result[f"chats_received_{size}"] = total["chats_received"]
        result[f"server_cpu_us_per_reconnect_{size}"] = total["server_cpu"] / done * 1e6
        if meter.client is not None:
            result[f"redis_cpu_us_per_reconnect_{size}"] = total["redis_cpu"] / done * 1e6
    result["reconnects_per_round"] = clients
    result["missed"] = missed
    result["cpu_ratio_1000_over_20"] = (
        result["server_cpu_us_per_reconnect_1000"] / result["server_cpu_us_per_reconnect_20"]
    )
    return result


async def keys_added(servers: list[Instance], meter: RedisMeter) -> dict[str, float]:
    """Keys added by N HTTP publishes to one fresh channel, N = 1,000 and 5,000; then 1,000
    publishes that ask for idempotency (an ``Idempotency-Key`` each)."""
    result: dict[str, float] = {}
    runs = (("1000", 1000, False), ("5000", 5000, False), ("1000_keyed", 1000, True))
    for label, count, keyed in runs:
        channel = f"keys-{label}"
        counts = Counts()
        watcher = await connect([url(servers[-1], channel)], counts)
        await joined(watcher, counts)
        await asyncio.sleep(0.5)  # the join's own keys (presence, room counts) are written
        before = meter.keys()
        statuses = await publish_many(servers[0].port, channel, count, keyed=keyed)
        await until(counts, lambda: counts.data >= count, 10)  # noqa: B023
        result[f"keys_added_{label}"] = meter.keys() - before
        result[f"published_2xx_{label}"] = sum(n for s, n in statuses.items() if s < 300)
        result[f"delivered_{label}"] = counts.data
        close(watcher)
        await asyncio.sleep(0.3)
    return result


# -- as run.py scenarios -------------------------------------------------------------------------


def sides(result: dict[str, dict[str, float]]) -> dict[str, float]:
    return {f"{side}_{key}": value for side, row in result.items() for key, value in row.items()}


RunResult = Coroutine[Any, Any, dict[str, float] | None]


async def on_burst(name: str, reps: int, seconds: float, _idle: int) -> dict[str, float] | None:
    if name != "sanic-feeds":
        return None
    with private_redis() as broker:
        if broker is None:
            return None
        with instances(1, "memory://") as servers:
            memory = await burst(servers)
        with instances(2, broker) as servers:
            on_redis = await burst(servers)
    return sides({MEMORY: memory, REDIS: on_redis})


async def on_chat(name: str, reps: int, seconds: float, _idle: int) -> dict[str, float] | None:
    if name != "sanic-feeds":
        return None
    with private_redis() as broker, private_redis() as twin:
        if broker is None or twin is None:
            return None
        meter, twin_meter = RedisMeter(broker), RedisMeter(twin)
        runs: dict[str, list[dict[str, float]]] = {side: [] for side in CHAT_SIDES}
        paced: list[float] = []
        paced_floor: list[float] = []
        with instances(1, "memory://") as memory_servers:
            on_memory = await ChatRun.open(memory_servers, RedisMeter(None))
            size = int((await on_memory.measure(1.0))["chat_bytes"])
            # The baselines run on a twin Redis (same binary, same settings) that no sanic-feeds
            # instance uses (the bare relays do, idle while the baselines run): back to back
            # with no subscriber and with two (the two instances, as every chat of the
            # scenario reaches), before anything is connected to it; then paced like the
            # chats, window by window with them.
            alone = twin_meter.publish_baseline(size, 10_000)
            back_to_back = twin_meter.publish_baseline(size, 10_000, subscribers=2)
            with (
                instances(2, broker) as redis_servers,
                bare_relays(1, "memory://") as relay_memory,
                bare_relays(2, twin) as relay_redis,
            ):
                opened = {
                    MEMORY: on_memory,
                    REDIS: await ChatRun.open(redis_servers, meter),
                    BARE_MEMORY: await ChatRun.open(relay_memory, RedisMeter(None)),
                    BARE_REDIS: await ChatRun.open(relay_redis, twin_meter),
                }
                # Every figure takes turns, window by window: all then share whatever else the
                # machine does meanwhile, and the ratios of their medians compare like with like.
                for _ in range(reps):
                    for side, run in opened.items():
                        runs[side].append(await run.measure(seconds))
                    paced.append(
                        await twin_meter.paced_publish_baseline(twin, size, 2000.0, seconds)
                    )
                    paced_floor.append(
                        await twin_meter.paced_publish_baseline(
                            twin, size, 2000.0, seconds, script=APPEND_AND_PUBLISH
                        )
                    )
                for side, run in opened.items():
                    if side != MEMORY:
                        await run.aclose()
            await on_memory.aclose()
    medians_of = {side: medians(side_runs) for side, side_runs in runs.items()}
    memory, redis_side = medians_of[MEMORY], medians_of[REDIS]
    bare_memory, bare_redis = medians_of[BARE_MEMORY], medians_of[BARE_REDIS]
    baseline, floor = statistics.median(paced), statistics.median(paced_floor)
    result = sides(medians_of)
    result |= {
        "redis_cpu_us_per_publish_baseline": baseline,
        "redis_cpu_us_per_append_and_publish": floor,
        "redis_cpu_ratio_append_and_publish_over_publish": floor / baseline,
        "redis_cpu_us_per_publish_back_to_back": back_to_back,
        "redis_cpu_us_per_publish_no_subscriber": alone,
        "redis_cpu_ratio_chat_over_back_to_back_publish": (
            redis_side["redis_cpu_us_per_chat"] / back_to_back
        ),
        "redis_cpu_ratio_chat_over_lone_publish": redis_side["redis_cpu_us_per_chat"] / alone,
        "server_cpu_ratio_redis_over_memory": (
            redis_side["server_cpu_us_per_chat"] / memory["server_cpu_us_per_chat"]
        ),
        "redis_cpu_ratio_chat_over_publish": redis_side["redis_cpu_us_per_chat"] / baseline,
        "bare_server_cpu_ratio_redis_over_memory": (
            bare_redis["server_cpu_us_per_chat"] / bare_memory["server_cpu_us_per_chat"]
        ),
        "server_cpu_us_added_by_redis": (
            redis_side["server_cpu_us_per_chat"] - memory["server_cpu_us_per_chat"]
        ),
        "bare_server_cpu_us_added_by_redis": (
            bare_redis["server_cpu_us_per_chat"] - bare_memory["server_cpu_us_per_chat"]
        ),
    }
    return result


async def on_keys(name: str, reps: int, seconds: float, _idle: int) -> dict[str, float] | None:
    if name != "sanic-feeds":
        return None
    with private_redis() as broker:
        if broker is None:
            return None
        with instances(2, broker) as servers:
            return sides({REDIS: await keys_added(servers, RedisMeter(broker))})


async def on_storm(name: str, reps: int, seconds: float, _idle: int) -> dict[str, float] | None:
    if name != "sanic-feeds":
        return None
    rounds = max(4, reps)
    with private_redis() as broker:
        if broker is None:
            return None
        # 1,000 is the default history size; set it so that the 1,000 messages are all kept.
        with instances(1, "memory://", "--history-size", "1000") as servers:
            memory = await storm(servers, RedisMeter(None), rounds)
        with instances(2, broker, "--history-size", "1000") as servers:
            on_redis = await storm(servers, RedisMeter(broker), rounds)
    return sides({MEMORY: memory, REDIS: on_redis})


REDIS_PATH: dict[str, Callable[[str, int, float, int], RunResult]] = {
    "redis_burst_100x5": on_burst,
    "redis_chat_50x4_at_2k": on_chat,
    "redis_keys_per_publish": on_keys,
    "redis_reconnect_storm_200": on_storm,
}


# -- the tables ----------------------------------------------------------------------------------

NAN = float("nan")


def redis_path_table(ours: dict[str, dict[str, float]]) -> str:
    """sanic-feeds' figures of these scenarios, memory broker beside Redis, then the targets."""
    rows: list[tuple[str, str, str, str]] = []

    def row(scenario: str, label: str, key: str, fmt: str = "{:,.0f}") -> None:
        r = ours.get(scenario)
        if r is None:
            return
        memory, on_redis = (r.get(f"{side}_{key}") for side in (MEMORY, REDIS))
        rows.append((scenario, label, _cell(fmt, memory), _cell(fmt, on_redis)))

    burst, chat_, keys, storm_ = REDIS_PATH
    row(burst, "chats delivered (500 sent at once, 5 members each)", "burst_chats_delivered")
    row(burst, "… expected", "burst_chats_expected")
    row(burst, "`broker_unavailable` error frames", "burst_errors_broker_unavailable")
    row(burst, "other error frames", "burst_errors_other")
    row(burst, "2,000 concurrent HTTP publishes: 2xx", "http_2xx")
    row(burst, "… 503", "http_503")
    row(burst, "… other statuses", "http_other")
    row(burst, "… no answer (connection failed or 30 s passed)", "http_failed")
    row(burst, "… data messages a member received", "http_data_delivered")
    row(chat_, "server CPU µs per chat (all instances)", "server_cpu_us_per_chat", "{:.1f}")
    row(chat_, "Redis CPU µs per chat", "redis_cpu_us_per_chat", "{:.1f}")
    row(chat_, "… of it running the stored-publish script", "redis_script_us_per_chat", "{:.1f}")
    row(chat_, "keys added per chat", "keys_added_per_chat", "{:.3f}")
    row(chat_, "chats sent", "chats")
    row(chat_, "deliveries", "deliveries")
    row(chat_, "… expected (4 per chat)", "deliveries_expected")
    row(chat_, "error frames", "errors")
    row(chat_, "p50 ms", "p50_ms", "{:.2f}")
    row(chat_, "p99 ms", "p99_ms", "{:.2f}")
    bare = ours.get(chat_)
    if bare is not None and f"{BARE_MEMORY}_server_cpu_us_per_chat" in bare:
        for label, key, fmt in (
            ("bare relay (floor): server CPU µs per chat", "server_cpu_us_per_chat", "{:.1f}"),
            ("bare relay: Redis CPU µs per chat (PUBLISH)", "redis_cpu_us_per_chat", "{:.1f}"),
            ("bare relay: deliveries", "deliveries", "{:,.0f}"),
            ("bare relay: p50 ms", "p50_ms", "{:.2f}"),
        ):
            values = (bare.get(f"{side}_{key}") for side in (BARE_MEMORY, BARE_REDIS))
            rows.append((chat_, label, *(_cell(fmt, v) for v in values)))
    for label, what in (("1000", "1,000"), ("5000", "5,000"), ("1000_keyed", "1,000 keyed")):
        row(keys, f"{what} HTTP publishes: keys added", f"keys_added_{label}")
        row(keys, "… answered 2xx", f"published_2xx_{label}")
        row(keys, "… data messages a member received", f"delivered_{label}")
    for size in (1000, 20):
        label = f"server CPU µs per reconnect, {size}-message history"
        row(storm_, label, f"server_cpu_us_per_reconnect_{size}", "{:.0f}")
    for size in (1000, 20):
        label = f"Redis CPU µs per reconnect, {size}-message history"
        row(storm_, label, f"redis_cpu_us_per_reconnect_{size}", "{:.0f}")
    for size in (1000, 20):
        row(storm_, f"reconnects, {size}-message history", f"reconnects_{size}")
        row(storm_, "… answered `recovered`: true", f"recovered_complete_{size}")
        row(storm_, "… chats replayed to them (10 each)", f"chats_received_{size}")
    if not rows:
        return ""
    lines = [
        "| scenario | figure | memory broker (1 instance) | Redis (2 instances) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += ["", "| target (same run) | measured | met? |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in targets(ours)]
    return "\n".join(lines)


def targets(ours: dict[str, dict[str, float]]) -> list[tuple[str, str, str]]:
    burst, chat_, keys, storm_ = (ours.get(name, {}) for name in REDIS_PATH)
    found = []
    if burst:
        got, want = burst["redis_burst_chats_delivered"], burst["redis_burst_chats_expected"]
        errors = burst["redis_burst_errors_broker_unavailable"]
        found.append((
            "500 simultaneous chats over two instances: every delivery, no error",
            f"{got:,.0f}/{want:,.0f} delivered, {errors:.0f} `broker_unavailable`",
            _met(got == want and errors == 0),
        ))  # fmt: skip
        ok = burst["redis_http_2xx"]
        found.append((
            "2,000 concurrent HTTP publishes to one instance: all 2xx",
            f"{ok:,.0f}/2,000", _met(ok == burst["redis_http_sent"]),
        ))  # fmt: skip
    if chat_:
        ratio = chat_["server_cpu_ratio_redis_over_memory"]
        found.append((
            "server CPU per chat, Redis (2 instances) / memory broker ≤ 1.5x",
            f"{chat_['redis_server_cpu_us_per_chat']:.1f} / "
            f"{chat_['memory_server_cpu_us_per_chat']:.1f} µs = {ratio:.2f}x",
            _met(ratio <= 1.5),
        ))  # fmt: skip
        if "bare_server_cpu_ratio_redis_over_memory" in chat_:
            bare = chat_["bare_server_cpu_ratio_redis_over_memory"]
            found.append((
                "… the same for the bare relay (servers/bare_relay.py: the topology with no "
                "product logic, plain PUBLISH), the floor of this ratio on this machine",
                f"{chat_['bare_redis_server_cpu_us_per_chat']:.1f} / "
                f"{chat_['bare_memory_server_cpu_us_per_chat']:.1f} µs = {bare:.2f}x",
                "(floor)",
            ))  # fmt: skip
            found.append((
                "… server CPU µs per chat that Redis adds: sanic-feeds / bare relay",
                f"{chat_['server_cpu_us_added_by_redis']:.1f} / "
                f"{chat_['bare_server_cpu_us_added_by_redis']:.1f} µs",
                "(context)",
            ))  # fmt: skip
        ratio = chat_["redis_cpu_ratio_chat_over_publish"]
        found.append((
            "Redis CPU per stored chat / per plain PUBLISH (one per round trip, same size, same "
            "pace of 2,000/s, to two reading subscribers) ≤ 1.5x",
            f"{chat_['redis_redis_cpu_us_per_chat']:.1f} / "
            f"{chat_['redis_cpu_us_per_publish_baseline']:.1f} µs = {ratio:.2f}x",
            _met(ratio <= 1.5),
        ))  # fmt: skip
        if "redis_cpu_ratio_append_and_publish_over_publish" in chat_:
            least = chat_["redis_cpu_ratio_append_and_publish_over_publish"]
            found.append((
                "… the same for the least stored publish (a script that only appends to a "
                "stream and publishes: no offset counter, no epoch), the floor of this ratio",
                f"{chat_['redis_cpu_us_per_append_and_publish']:.1f} / "
                f"{chat_['redis_cpu_us_per_publish_baseline']:.1f} µs = {least:.2f}x",
                "(floor)",
            ))  # fmt: skip
        fast = chat_["redis_cpu_ratio_chat_over_back_to_back_publish"]
        found.append((
            "… the same against PUBLISHes sent back to back to two subscribers",
            f"{chat_['redis_redis_cpu_us_per_chat']:.1f} / "
            f"{chat_['redis_cpu_us_per_publish_back_to_back']:.1f} µs = {fast:.2f}x",
            _met(fast <= 1.5),
        ))  # fmt: skip
        lone = chat_["redis_cpu_ratio_chat_over_lone_publish"]
        found.append((
            "… the same against a PUBLISH to a channel nobody subscribed (no fan-out) ≤ 1.5x",
            f"{chat_['redis_redis_cpu_us_per_chat']:.1f} / "
            f"{chat_['redis_cpu_us_per_publish_no_subscriber']:.1f} µs = {lone:.2f}x",
            _met(lone <= 1.5),
        ))  # fmt: skip
    if keys:
        small, large = keys["redis_keys_added_1000"], keys["redis_keys_added_5000"]
        found.append((
            "keys added by N publishes to one channel: constant, not N",
            f"N=1,000: {small:,.0f}; N=5,000: {large:,.0f}",
            _met(small == large),
        ))  # fmt: skip
    if storm_:
        for side, label in ((REDIS, "Redis, 2 instances"), (MEMORY, "memory broker")):
            ratio = storm_[f"{side}_cpu_ratio_1000_over_20"]
            found.append((
                f"CPU per reconnect 10 behind, 1,000- / 20-message history ≤ 2x ({label})",
                f"{storm_[f'{side}_server_cpu_us_per_reconnect_1000']:.0f} / "
                f"{storm_[f'{side}_server_cpu_us_per_reconnect_20']:.0f} µs = {ratio:.2f}x",
                _met(ratio <= 2.0),
            ))  # fmt: skip
    return found


def _cell(fmt: str, value: float | None) -> str:
    return "n/a" if value is None else fmt.format(value)


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"
