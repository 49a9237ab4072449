"""The chat scenario of redis_path.py on a Redis Cluster: how the load splits over the masters.

``cluster_chat_50x4_at_2k``: two ``sanic-feeds serve`` instances on a private cluster (three
masters, one replica each, ``tests/support/redis_cluster.py``), 50 rooms x 4 members chatting at
2,000 chats/s in all, as ``redis_chat_50x4_at_2k`` does on one Redis. Measured: server CPU per
chat, and each master's own CPU (``INFO cpu`` before and after each run) per chat, beside how
many of the 50 rooms hash to it (each master should carry about its share of the rooms) and
beside what it spends idle over as long (the cluster bus, replication, probes).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

from redis_path import RunResult, chat, instances

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.redis_cluster import RedisCluster, cluster_unavailable

ROOMS = 50
PREFIX = "sanic-feeds:"  # the instances' default --redis-prefix


class ClusterMeter:
    """``RedisMeter``'s interface over every master: ``cpu()`` is their sum, and each call keeps
    a per-master reading, so the runs of ``chat()`` (a reading before and one after each) give
    each master's share."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.nodes = {s.port: redis.Redis(port=s.port) for s in cluster.masters()}
        self.client = next(iter(self.nodes.values()))
        self.readings: list[dict[int, float]] = []

    def reading(self) -> dict[int, float]:
        """Each master's CPU seconds so far."""
        found = {}
        for port, client in self.nodes.items():
            info = client.info("cpu")
            found[port] = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        return found

    def cpu(self) -> float:
        self.readings.append(self.reading())
        return sum(self.readings[-1].values())

    def keys(self) -> int:
        return sum(int(client.dbsize()) for client in self.nodes.values())

    def script_seconds(self) -> float:
        """Time the masters together spent running scripts (``EVALSHA``)."""
        return sum(
            float(client.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0)) / 1e6
            for client in self.nodes.values()
        )

    def per_master(self) -> dict[int, float]:
        """Median CPU seconds per run, per master."""
        runs = list(zip(self.readings[::2], self.readings[1::2], strict=False))
        return {
            port: statistics.median(after[port] - before[port] for before, after in runs)
            for port in self.nodes
        }


async def on_cluster_chat(
    name: str, reps: int, seconds: float, _idle: int
) -> dict[str, float] | None:
    if name != "sanic-feeds" or cluster_unavailable() is not None:
        return None
    cluster = RedisCluster()
    cluster.start()
    try:
        meter = ClusterMeter(cluster)
        rooms = dict.fromkeys(meter.nodes, 0)
        for room in range(ROOMS):
            rooms[cluster.master_of(f"{PREFIX}ch:{{chat-{room}}}").port] += 1
        with instances(2, cluster.url) as servers:
            # What the masters spend with the instances connected and nothing sent: the
            # cluster bus, replication pings, the instances' liveness probes.
            before, started = meter.reading(), time.monotonic()
            await asyncio.sleep(seconds)
            after, idle_s = meter.reading(), time.monotonic() - started
            found = await chat(servers, meter, seconds, reps, rooms=ROOMS)
        result = {f"cluster_{key}": value for key, value in found.items()}
        chats = found["chats"]
        for index, (port, spent) in enumerate(sorted(meter.per_master().items())):
            result[f"cluster_master{index}_rooms"] = rooms[port]
            result[f"cluster_master{index}_cpu_us_per_chat"] = spent / chats * 1e6
            idle = (after[port] - before[port]) / idle_s * seconds  # over a run's duration
            result[f"cluster_master{index}_idle_us_per_chat"] = idle / chats * 1e6
        return result
    finally:
        cluster.stop()


REDIS_CLUSTER_PATH: dict[str, Callable[[str, int, float, int], RunResult]] = {
    "cluster_chat_50x4_at_2k": on_cluster_chat,
}


def redis_cluster_table(ours: dict[str, dict[str, float]]) -> str:
    r = ours.get("cluster_chat_50x4_at_2k")
    if not r:
        return ""
    lines = [
        "| cluster_chat_50x4_at_2k | value |",
        "|---|---|",
        f"| chats delivered / expected | {r['cluster_deliveries']:,.0f} / "
        f"{r['cluster_deliveries_expected']:,.0f} |",
        f"| error frames | {r['cluster_errors']:,.0f} |",
        f"| server CPU µs per chat (two instances) | {r['cluster_server_cpu_us_per_chat']:.1f} |",
        f"| Redis CPU µs per chat, all masters | {r['cluster_redis_cpu_us_per_chat']:.2f} |",
        f"| p50 / p99 ms | {r['cluster_p50_ms']:.2f} / {r['cluster_p99_ms']:.2f} |",
    ]
    index = 0
    while f"cluster_master{index}_rooms" in r:
        lines.append(
            f"| master {index}: rooms, Redis CPU µs per chat (of all chats), of which idle | "
            f"{r[f'cluster_master{index}_rooms']:.0f}, "
            f"{r[f'cluster_master{index}_cpu_us_per_chat']:.2f}, "
            f"{r[f'cluster_master{index}_idle_us_per_chat']:.2f} |"
        )
        index += 1
    return "\n".join(lines)
