"""Run every scenario against sanic-feeds and the baselines, in one run, and print ratios.

    .venv/bin/python benchmarks/run.py            # full run, 3 repetitions (about 30 minutes)
    .venv/bin/python benchmarks/run.py --quick    # one repetition, fewer scenarios (about 3)
    .venv/bin/python benchmarks/run.py --servers sanic-feeds "node ws" --scenarios idle
    .venv/bin/python benchmarks/run.py --servers sanic-feeds --scenarios redis_chat_50x4_at_2k

The redis_* scenarios (redis_path.py) run sanic-feeds on two instances sharing a private Redis
beside one instance on the memory broker; cluster_* (redis_cluster_path.py) two instances on a
private Redis Cluster of three masters, with each master's Redis CPU; nats_* (nats_path.py)
two instances on a private nats-server -js, with its CPU.

    .venv/bin/python benchmarks/run.py --servers sanic-feeds --scenarios cluster_chat_50x4_at_2k

The servers are pinned to CPU 0 and this process (the load generator, picows on uvloop) to CPU 1.
The main figure is server CPU time per delivered message, read from /proc: on a 2-core machine
throughput is shared with the load generator, CPU per delivery is not. Results are also written
as JSON to benchmarks/results/. Everything binds 127.0.0.1 and every run is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from loadgen import (  # noqa: E402  (after the path tweak)
    FEEDS,
    SOCKETIO,
    Tally,
    close_all,
    message,
    open_clients,
    percentile,
)
from nats_path import NATS_PATH, nats_table  # noqa: E402
from procs import cpu_seconds, free_port, private_redis, rss_kib, running  # noqa: E402
from redis_cluster_path import REDIS_CLUSTER_PATH, redis_cluster_table  # noqa: E402
from redis_path import REDIS_PATH, redis_path_table  # noqa: E402

PY = sys.executable
LOADGEN_CPU = {1} if os.cpu_count() and os.cpu_count() > 1 else {0}  # type: ignore[operator]


COUNTERS = ("socket_writes", "broker_messages")
"""sanic-feeds counters read around each measurement."""


def feeds_counters(ports: list[int]) -> dict[str, float]:
    """``COUNTERS`` summed over the instances' /metrics pages (zeros for other servers)."""
    totals = dict.fromkeys(COUNTERS, 0.0)
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as page:
                text = page.read().decode()
        except OSError:
            continue  # a baseline: it has no /metrics
        for line in text.splitlines():
            name, _, value = line.partition("_total ")
            if value and name.removeprefix("sanic_feeds_") in totals:
                totals[name.removeprefix("sanic_feeds_")] += float(value)
    return totals


@dataclass(frozen=True)
class Server:
    """How to start one server under test and talk to it."""

    argv: Callable[[int, str], list[str]]
    dialect: str = FEEDS
    needs: Callable[[], str | None] = lambda: None
    """Why it cannot run here (a missing runtime or package), or None."""

    def url(self, port: int, path: str) -> str:
        if self.dialect == SOCKETIO:
            return f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
        return f"ws://127.0.0.1:{port}{path}"


def _python_socketio() -> str | None:
    try:
        __import__("socketio")
        __import__("aiohttp")
    except ImportError:
        return "python-socketio or aiohttp not installed (pip install -e '.[bench]')"
    return None


NODE_WS = HERE / "servers" / "node_ws"


def _node_ws() -> str | None:
    """Node.js and the `ws` package: installed from the lock file on first use."""
    if shutil.which("node") is None:
        return "node not on PATH"
    if not (NODE_WS / "node_modules" / "ws").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            return "npm not on PATH"
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_WS, capture_output=True, timeout=300
        )
        if done.returncode:
            return f"npm ci failed: {done.stderr.decode()[-300:]}"
    return None


SERVERS: dict[str, Server] = {
    "sanic-feeds": Server(lambda port, broker: [
        PY, "-m", "sanic_feeds", "serve", "--port", str(port), "--broker", broker,
        "--join-leave", "off", "--log-level", "WARNING", "--client-buffer", "4MiB",
    ]),
    "websockets.broadcast": Server(lambda port, broker: [
        PY, str(HERE / "servers" / "websockets_broadcast.py"), str(port)
    ]),
    "naive sanic loop": Server(lambda port, broker: [
        PY, str(HERE / "servers" / "naive_sanic.py"), str(port)
    ]),
    "python-socketio": Server(
        lambda port, broker: [PY, str(HERE / "servers" / "socketio_room.py"), str(port), broker],
        SOCKETIO,
        _python_socketio,
    ),
    "node ws": Server(
        lambda port, broker: ["node", str(NODE_WS / "server.js"), str(port)], FEEDS, _node_ws
    ),
}  # fmt: skip
URL_PATH = "/feed/bench"


@contextmanager
def server(name: str, broker: str = "memory://") -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    with running(name, SERVERS[name].argv(port, broker), port) as proc:
        yield proc, port


# -- scenarios -----------------------------------------------------------------------------------


async def fanout(
    kind: Server,
    ports: list[int],
    pids: list[int],
    subscribers: int,
    *,
    seconds: float,
    rate: float | None,
    channels: int = 1,
    window: int = 4,
    stalled: int = 0,
) -> dict[str, float]:
    """``subscribers`` members on each of ``channels`` channels, split over ``ports``, and one
    publisher per channel (its own receipts are not counted).

    Closed loop (``rate`` None, one channel): at most ``window`` messages not yet received by
    every subscriber. Open loop: ``rate`` messages/s in all, round-robin over the channels.
    """
    if rate is None and channels != 1:
        raise ValueError("the closed loop drives one channel")
    tally = Tally()
    clients = []
    publishers = []
    for c in range(channels):
        path = channel_path(c, channels)
        for n, port in enumerate(ports):
            share = subscribers // len(ports) + (1 if n < subscribers % len(ports) else 0)
            clients += await open_clients(
                kind.url(port, path),
                share,
                tally,
                stalled=stalled if n == 0 else 0,
                dialect=kind.dialect,
                room=path,
            )
        publishers += await open_clients(
            kind.url(ports[0], path), 1, Tally(), dialect=kind.dialect, room=path
        )
    await asyncio.sleep(0.5)
    everyone = subscribers - stalled
    loop = asyncio.get_running_loop()

    async def drive(duration: float, record: bool) -> tuple[int, float]:
        tally.record = record
        tally.receipts.clear()
        seq = 0
        started = loop.time()
        end = started + duration
        while loop.time() < end:
            if rate is None:
                oldest = seq - window
                while oldest >= 0 and tally.receipts.get(oldest, 0) < everyone:
                    tally.changed.clear()
                    tally.waiting = True
                    try:
                        await asyncio.wait_for(tally.changed.wait(), max(end - loop.time(), 0.01))
                    except TimeoutError:
                        break
                    finally:
                        tally.waiting = False
                    if loop.time() >= end:
                        break
            else:
                await asyncio.sleep(max(0.0, started + seq / rate - loop.time()))
            transport = publishers[seq % channels].transport
            assert transport is not None
            transport.send(1, message(seq, kind.dialect))  # 1: text frame
            seq += 1
        return seq, loop.time() - started

    await drive(1.0, record=False)  # warm-up
    counters_before = feeds_counters(ports)
    cpu_before = sum(cpu_seconds(p) for p in pids)
    own_before = cpu_seconds(os.getpid())
    tally.deliveries = 0
    tally.latencies_ns.clear()
    sent, elapsed = await drive(seconds, record=True)
    await asyncio.sleep(0.5)  # let the last ones land
    cpu = sum(cpu_seconds(p) for p in pids) - cpu_before
    own = cpu_seconds(os.getpid()) - own_before
    counters_after = feeds_counters(ports)
    writes = counters_after["socket_writes"] - counters_before["socket_writes"]
    broker_messages = counters_after["broker_messages"] - counters_before["broker_messages"]
    result = {
        "messages": sent,
        "deliveries": tally.deliveries,
        "deliveries_per_s": tally.deliveries / elapsed,
        "cpu_us_per_delivery": cpu / max(tally.deliveries, 1) * 1e6,
        # The load generator's own CPU per receipt: it must stay below the servers' figure.
        "loadgen_us_per_receipt": own / max(tally.deliveries, 1) * 1e6,
        "p50_ms": percentile(tally.latencies_ns, 0.5),
        "p99_ms": percentile(tally.latencies_ns, 0.99),
        "stalled_cut_off": sum(1 for c in clients[:stalled] if c.closed.done()),
        "rss_mib": sum(rss_kib(p) for p in pids) / 1024,
        # sanic-feeds only: frames gathered per socket write (nan for the baselines)
        "frames_per_write": tally.deliveries / writes if writes else float("nan"),
        # sanic-feeds only: messages each instance took from the broker per message published
        # (1.0: the broker is crossed once per message per instance, whatever the subscribers)
        "broker_reads_per_message_per_instance": (
            broker_messages / sent / len(ports) if broker_messages and sent else float("nan")
        ),
    }
    close_all([*clients, *publishers])
    await asyncio.sleep(0.3)
    return result


def channel_path(index: int, channels: int) -> str:
    return URL_PATH if channels == 1 else f"{URL_PATH}-{index}"


async def idle(kind: Server, port: int, pid: int, count: int) -> dict[str, float]:
    """RSS per idle connection, and how long ``count`` connections take to be joined."""
    tally = Tally()
    url = kind.url(port, URL_PATH)
    warm = await open_clients(url, 20, tally, dialect=kind.dialect, room=URL_PATH)
    await asyncio.sleep(0.5)
    before = rss_kib(pid)
    started = time.perf_counter()
    clients = await open_clients(
        url, count, tally, parallel=100, dialect=kind.dialect, room=URL_PATH
    )
    connected = time.perf_counter() - started
    await asyncio.sleep(1.0)
    after = rss_kib(pid)
    close_all([*warm, *clients])
    await asyncio.sleep(0.5)
    return {"connect_s": connected, "kib_per_connection": (after - before) / count}


# -- the run -------------------------------------------------------------------------------------


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


Job = Callable[[], Coroutine[Any, Any, dict[str, float]]]


async def repeat(times: int, job: Job) -> dict[str, float]:
    return median_of([await job() for _ in range(times)])


Scenario = Callable[[str, int, float, int], Coroutine[Any, Any, dict[str, float] | None]]
"""(server name, repetitions, seconds per run, idle connections) -> medians, or None to skip."""


def on_one(size: int, rate: float | None, *, channels: int = 1, stalled: int = 0) -> Scenario:
    async def run(name: str, reps: int, seconds: float, _idle: int) -> dict[str, float] | None:
        if stalled and name == "naive sanic loop":
            return None  # it blocks every member behind a stalled reader by design
        with server(name) as (proc, port):
            return await repeat(
                reps,
                lambda: fanout(
                    SERVERS[name], [port], [proc.pid], size, seconds=seconds, rate=rate,
                    channels=channels, stalled=stalled,
                ),
            )  # fmt: skip

    return run


async def on_redis(name: str, reps: int, seconds: float, _idle: int) -> dict[str, float] | None:
    """Two instances on one private Redis, subscribers split between them."""
    if name not in ("sanic-feeds", "python-socketio"):  # the others have no broker
        return None
    with private_redis() as url:
        if url is None:
            return None
        with server(name, url) as (a, pa), server(name, url) as (b, pb):
            return await repeat(
                reps,
                lambda: fanout(
                    SERVERS[name], [pa, pb], [a.pid, b.pid], 1000, seconds=seconds, rate=None
                ),
            )


async def on_idle(name: str, reps: int, seconds: float, count: int) -> dict[str, float] | None:
    with server(name) as (proc, port):
        return await idle(SERVERS[name], port, proc.pid, count)


SCENARIOS: dict[str, Scenario] = {
    "fanout_100": on_one(100, None),
    "fanout_1000": on_one(1000, None),
    "fanout_5000": on_one(5000, None),
    "latency_1000_at_20k": on_one(1000, 20.0),
    "stalled_1_of_1000": on_one(1000, 20.0, stalled=1),
    "channels_500x4_at_5k": on_one(4, 5000.0, channels=500),
    "redis_2_instances_1000": on_redis,
    "idle": on_idle,
    **REDIS_PATH,
    **REDIS_CLUSTER_PATH,
    **NATS_PATH,
}
FANOUT_SCENARIOS = [
    name
    for name in SCENARIOS
    if name != "idle"
    and name not in REDIS_PATH
    and name not in REDIS_CLUSTER_PATH
    and name not in NATS_PATH
]
QUICK = ["fanout_100", "fanout_1000", "latency_1000_at_20k", "channels_500x4_at_5k", "idle"]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    seconds = 3.0 if args.quick else 5.0
    reps = 1 if args.quick else args.repeat
    idle_count = 1000 if args.quick else 5000
    names = args.scenarios or (QUICK if args.quick else list(SCENARIOS))
    servers = []
    for name in args.servers or list(SERVERS):
        missing = SERVERS[name].needs()
        if missing is None:
            servers.append(name)
        else:
            print(f"skipping {name}: {missing}", file=sys.stderr)
    results: dict[str, Any] = {name: {} for name in servers}
    for scenario in names:
        for name in servers:
            try:
                found = await SCENARIOS[scenario](name, reps, seconds, idle_count)
            except Exception as exc:  # one server failing a point must not lose the others
                print(f"{scenario} on {name} failed: {exc!r}", file=sys.stderr)
                continue
            if found is not None:
                results[name][scenario] = found
        print(f"done: {scenario}", file=sys.stderr)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))  # partial results survive a crash
    return results


def table(results: dict[str, Any]) -> str:
    """Markdown tables; "ours / this" is sanic-feeds' figure divided by this server's."""
    ours = results.get("sanic-feeds", {})
    scenarios = list(
        dict.fromkeys(k for row in results.values() for k in row if k in FANOUT_SCENARIOS)
    )
    lines: list[str] = []
    if scenarios:
        lines += [
            "| scenario | server | deliveries/s | CPU µs/delivery | ours / this (CPU) | "
            "p50 ms | p99 ms | frames/write | loadgen µs/receipt |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
    for scenario in scenarios:
        for name, row in results.items():
            r = row.get(scenario)
            if r is None:
                continue
            mine = ours.get(scenario, {}).get("cpu_us_per_delivery", float("nan"))
            lines.append(
                f"| {scenario} | {name} | {r['deliveries_per_s']:,.0f} | "
                f"{r['cpu_us_per_delivery']:.2f} | {mine / r['cpu_us_per_delivery']:.2f}x | "
                f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['frames_per_write']:.2f} | "
                f"{r.get('loadgen_us_per_receipt', float('nan')):.2f} |"
            )
    idle_rows = [(name, row["idle"]) for name, row in results.items() if "idle" in row]
    if idle_rows:
        lines += ["", "| idle | connect all (s) | KiB RSS per connection |", "|---|---|---|"]
        for name, r in idle_rows:
            lines.append(f"| {name} | {r['connect_s']:.2f} | {r['kib_per_connection']:.1f} |")
    redis_path = redis_path_table(ours)
    if redis_path:
        lines += ["", redis_path]
    cluster = redis_cluster_table(ours)
    if cluster:
        lines += ["", cluster]
    nats = nats_table(ours)
    if nats:
        lines += ["", nats]
    return "\n".join(lines).strip()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repetition, smaller sizes")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per point (median)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    parser.add_argument(
        "--servers", nargs="+", choices=list(SERVERS), help="only these servers (default: all)"
    )
    parser.add_argument(
        "--scenarios", nargs="+", choices=list(SCENARIOS), help="only these scenarios"
    )
    options = parser.parse_args()
    with __import__("contextlib").suppress(OSError, AttributeError):
        os.sched_setaffinity(0, LOADGEN_CPU)
    uvloop.install()
    found = asyncio.run(main(options))
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(found, indent=2))
    print(table(found))
