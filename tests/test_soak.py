"""A bounded soak: two instances, about a thousand clients coming and going, messages flowing,
and one Redis restart in the middle.

Afterwards every client that stayed connected has every message of its channel exactly once and
in order (recovering the gap after the restart through the history), and both instances are
back to idle: no connections, channels, subscriptions or extra tasks, and memory near where it
started. Runs for SANIC_FEEDS_SOAK_SECONDS (default 12) seconds; set it higher for a longer soak.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sanic_feeds.brokers import create_broker
from sanic_feeds.errors import BrokerUnavailable
from support.fixtures import running
from support.redis_server import RedisServer
from support.server_process import ServerProcess
from support.ws import eventually

SECONDS = float(os.environ.get("SANIC_FEEDS_SOAK_SECONDS", "12"))
CHANNELS = [f"soak-{i}" for i in range(20)]
STAYERS_PER_INSTANCE = 100
CHURNERS = 900  # connections opened and closed during the run
RATE_PER_CHANNEL = 4.0  # messages per second per channel


@dataclass
class Stayer:
    """A client that stays for the whole run and must end up with every message."""

    channel: str
    ws: ClientConnection
    ids: list[int] = field(default_factory=list)
    epoch: str = ""
    gaps: int = 0
    recoveries: list[dict[str, Any]] = field(default_factory=list)

    async def run(self) -> None:
        async for raw in self.ws:
            msg = orjson.loads(raw)
            kind = msg["type"]
            if kind == "data":
                if msg["epoch"] != self.epoch:
                    self.epoch = msg["epoch"]
                if not self.ids or msg["id"] > self.ids[-1]:
                    self.ids.append(msg["id"])
                else:  # a repeat or a step back would be a bug: record it for the assert
                    self.ids.append(msg["id"])
            elif kind == "gap":
                self.gaps += 1
                last = self.ids[-1] if self.ids else 0
                request = {"type": "subscribe", "channel": self.channel, "since": last}
                if self.epoch:
                    request["epoch"] = self.epoch
                await self.ws.send(orjson.dumps(request).decode())
            elif kind == "recovered":
                self.recoveries.append(msg)


@pytest.fixture
def persistent_redis() -> Iterator[RedisServer]:
    yield from running(RedisServer(persistent=True))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def health(server: ServerProcess) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as http:
        body: dict[str, Any] = (await http.get(f"{server.http_url}/health")).json()
        return body


async def metric(server: ServerProcess, name: str) -> float:
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"{server.http_url}/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.mark.soak
async def test_soak_with_churn_and_a_redis_restart(persistent_redis: RedisServer) -> None:
    rng = random.Random(7)
    args = ["--join-leave", "on", "--broker-probe-interval", "0.5", "--broker-probe-timeout", "1"]
    with (
        ServerProcess(persistent_redis.url, extra_args=args) as one,
        ServerProcess(persistent_redis.url, extra_args=args) as two,
    ):
        servers = [one, two]
        # Warm both instances up once, then take the idle baseline.
        for server in servers:
            async with connect(server.ws_url("warmup"), max_queue=None) as ws:
                await ws.recv()
        await asyncio.sleep(1.0)
        idle = [await health(s) for s in servers]
        idle_rss = [rss_kib(s.pid or 0) for s in servers]

        stayers: list[Stayer] = []
        for server in servers:
            for n in range(STAYERS_PER_INSTANCE):
                channel = CHANNELS[n % len(CHANNELS)]
                ws = await connect(server.ws_url(channel), max_queue=None)
                assert orjson.loads(await ws.recv())["type"] == "system"
                stayers.append(Stayer(channel, ws))
        readers = [asyncio.create_task(s.run()) for s in stayers]

        published: dict[str, list[int]] = {c: [] for c in CHANNELS}
        publisher = create_broker(persistent_redis.url)
        await publisher.open(None)
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + SECONDS

        async def publish_all() -> None:
            n = 0
            while loop.time() < ends_at:
                for channel in CHANNELS:
                    body = orjson.dumps({"type": "data", "channel": channel, "data": n})
                    while True:  # a backend retries through the outage
                        try:
                            # The key makes a retry after an unclear failure (reply lost
                            # when Redis died) safe: no message is stored twice.
                            stored = await publisher.publish_stored(
                                channel, body, idempotency_key=f"{channel}:{n}"
                            )
                            break
                        except BrokerUnavailable:
                            await asyncio.sleep(0.2)
                    published[channel].append(stored.offset)
                n += 1
                await asyncio.sleep(1 / RATE_PER_CHANNEL)

        opened = 0

        async def churner() -> None:
            nonlocal opened
            while loop.time() < ends_at - 2 and opened < CHURNERS:
                opened += 1
                server = rng.choice(servers)
                try:
                    async with connect(
                        server.ws_url(rng.choice(CHANNELS)), max_queue=None, open_timeout=10
                    ) as ws:
                        stay = loop.time() + rng.uniform(0.5, 4.0)
                        while loop.time() < stay:
                            try:
                                async with asyncio.timeout(max(stay - loop.time(), 0.01)):
                                    await ws.recv()
                            except TimeoutError:
                                break
                except (OSError, ConnectionClosed, TimeoutError):
                    pass  # churners may be turned away during the outage; they only add load

        async def restart_redis() -> None:
            await asyncio.sleep(SECONDS / 2)
            persistent_redis.kill()
            await asyncio.sleep(1.0)
            persistent_redis.start()

        await asyncio.gather(publish_all(), restart_redis(), *(churner() for _ in range(60)))
        await publisher.aclose()

        # Let the last messages and recoveries arrive, then check every stayer.
        def caught_up() -> bool:
            return all(s.ids[-1:] == published[s.channel][-1:] for s in stayers)

        await eventually(caught_up, timeout=30)
        for stayer in stayers:
            assert stayer.ids == published[stayer.channel], (
                f"{stayer.channel}: got {len(stayer.ids)} of {len(published[stayer.channel])}, "
                f"gaps={stayer.gaps} recoveries={stayer.recoveries}"
            )
        assert opened >= 300, opened
        # The restart was noticed by both instances, which refilled the gap themselves.
        for server in servers:
            assert await metric(server, "sanic_feeds_gaps_total") >= 1
        assert all(r["recovered"] for s in stayers for r in s.recoveries)

        for ws in (s.ws for s in stayers):
            await ws.close()
        for task in readers:
            await asyncio.wait_for(task, 10)

        async def idle_again() -> bool:
            now = [await health(s) for s in servers]
            return all(
                h["connections"] == 0
                and h["channels"] == 0
                and h["subscriptions"] == 0
                and h["tasks"] <= before["tasks"] + 2
                and h["status"] == "ok"
                for h, before in zip(now, idle, strict=True)
            )

        try:
            await eventually(idle_again, timeout=20)
        except AssertionError:
            for server in servers:
                print("health", await health(server), file=sys.stderr)
                print(server.log_tail(), file=sys.stderr)
            raise
        numsub = persistent_redis.command(
            "PUBSUB", "NUMSUB", *[f"sanic-feeds:ch:{c}" for c in CHANNELS]
        )
        assert b":1" not in numsub and b":2" not in numsub
        for server, before in zip(servers, idle_rss, strict=True):
            after = rss_kib(server.pid or 0)
            assert after < before + 60 * 1024, (before, after)  # KiB: bounded growth
