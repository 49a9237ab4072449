"""Redis presence: node reports as expiring hashes plus a sorted set of live nodes.

Keys (``P`` is the configured prefix)::

    P nodes              ZSET  node id -> expiry (unix time, seconds)
    P node:{<id>}:rooms  HASH  channel -> member count on that node, and "#clients" -> its
                               connection count; PEXPIRE ttl
    P presence:{<id>}:<channel>
                         HASH  client id -> member JSON, for that node's members of the
                               channel; PEXPIRE ttl
    P users:{<user>}     HASH  node id -> that node's connections of the user (only with a
                               per-user connection limit); fields of nodes no longer in
                               ``P nodes`` are ignored and removed when read; PEXPIRE a day

Every key of one node's report carries the node's hash tag ``{<id>}``, so the report is one
MULTI/EXEC in one slot, on a single Redis and on a Redis Cluster alike: readers never see half
of it. On a single Redis the same transaction also renews the node's entry in ``nodes``; on a
cluster that key lives in another slot, so it is renewed right after the report (and removed
before it on withdrawal): a reader that finds the node listed finds its report, or an expired
one it ignores. Reads of every node's report (rooms, members) are pipelines that redis-py's
cluster client splits by master.

Readers ignore nodes whose expiry has passed (and prune them), so a crashed node's counts vanish
after at most ``ttl``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from ..brokers.redis import open_client
from ..brokers.redis_cluster_client import GATE, open_cluster_client
from ..errors import BrokerUnavailable
from .base import CLIENTS_FIELD, Member, NodeReport, Presence, RoomTotals

USER_COUNTS_TTL_MS = 86_400_000
"""A user's connection counts expire a day after their last change: what a crash left behind
does not stay forever, and a user connected for longer without any change is under-counted at
worst (the limit lets one more in), never locked out."""


class RedisPresence(Presence):
    """On one Redis, or (``cluster``) on a Redis Cluster, with the same keys."""

    def __init__(self, url: str, prefix: str = "sanic-feeds:", *, cluster: bool = False) -> None:
        self._url = url
        self._prefix = prefix
        self._cluster = cluster
        self._nodes_key = f"{prefix}nodes"
        self._client: aioredis.Redis | RedisCluster | None = None
        self._gate = asyncio.Semaphore(GATE)

    def _members_key(self, channel: str, node_id: str) -> str:
        return f"{self._prefix}presence:{{{node_id}}}:{channel}"

    def _rooms_key(self, node_id: str) -> str:
        return f"{self._prefix}node:{{{node_id}}}:rooms"

    async def open(self) -> None:
        self._client = open_cluster_client(self._url) if self._cluster else open_client(self._url)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _require(self) -> aioredis.Redis | RedisCluster:
        if self._client is None:
            raise BrokerUnavailable("presence is not open")
        return self._client

    async def report_rooms(
        self,
        node_id: str,
        rooms: Mapping[str, int],
        clients: int,
        ttl: float,
        members: Mapping[str, Sequence[Member]] | None = None,
    ) -> None:
        key = self._rooms_key(node_id)
        fields: dict[bytes | bytearray | memoryview[int] | str | int | float, bytes | str | int] = {
            CLIENTS_FIELD: clients
        }
        fields.update((channel, n) for channel, n in rooms.items() if n > 0)
        expiry = {node_id: time.time() + ttl}
        try:
            async with self._gate, self._require().pipeline(transaction=True) as pipe:
                pipe.delete(key)
                pipe.hset(key, mapping=fields)
                pipe.pexpire(key, int(ttl * 1000))
                if not self._cluster:
                    pipe.zadd(self._nodes_key, expiry)
                ttl_ms = int(ttl * 1000)
                members = members or {}
                for channel, listed in members.items():
                    key = self._members_key(channel, node_id)
                    pipe.delete(key)
                    if listed:
                        pipe.hset(key, mapping={m.client: m.to_json() for m in listed})
                        pipe.pexpire(key, ttl_ms)
                for channel in rooms:
                    if channel not in members:
                        pipe.pexpire(self._members_key(channel, node_id), ttl_ms)
                await pipe.execute()
                if self._cluster:  # another slot: after the report it lists
                    await self._require().zadd(self._nodes_key, expiry)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"presence report failed: {exc}") from exc

    async def members(self, channel: str, exclude_node: str = "") -> list[Member]:
        nodes = [n for n in await self.nodes() if n != exclude_node]
        if not nodes:
            return []
        try:
            async with self._gate, self._require().pipeline(transaction=False) as pipe:
                for node_id in nodes:
                    pipe.hvals(self._members_key(channel, node_id))
                lists = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"presence read failed: {exc}") from exc
        return [Member.from_json(raw) for listed in lists for raw in listed]

    async def withdraw(self, node_id: str) -> None:
        client = self._require()
        try:
            async with self._gate:
                if self._cluster:  # two slots: unlisted first, so no reader finds it half gone
                    await client.zrem(self._nodes_key, node_id)
                    await client.delete(self._rooms_key(node_id))
                    return
                async with client.pipeline(transaction=True) as pipe:
                    pipe.delete(self._rooms_key(node_id))
                    pipe.zrem(self._nodes_key, node_id)
                    await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"presence withdraw failed: {exc}") from exc

    async def user_connections(self, user: str, node_id: str, delta: int) -> int:
        key = f"{self._prefix}users:{{{user}}}"
        try:
            async with self._require().pipeline(transaction=True) as pipe:
                pipe.hincrby(key, node_id, delta)
                pipe.hgetall(key)
                pipe.pexpire(key, USER_COUNTS_TTL_MS)
                _, counts, _ = await pipe.execute()
            live = set(await self.nodes()) | {node_id}
            total, stale = 0, []
            for raw_node, raw_count in counts.items():
                node, count = raw_node.decode(), int(raw_count)
                if node in live and count > 0:
                    total += count
                else:
                    stale.append(node)
            if stale:
                await self._require().hdel(key, *stale)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"user connection count failed: {exc}") from exc
        return total

    async def nodes(self) -> list[str]:
        client = self._require()
        now = time.time()
        try:
            async with self._gate:
                await client.zremrangebyscore(self._nodes_key, "-inf", now)
                raw = await client.zrangebyscore(self._nodes_key, now, "+inf")
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"presence read failed: {exc}") from exc
        return sorted(n.decode() if isinstance(n, bytes) else str(n) for n in raw)

    async def node_reports(self) -> dict[str, NodeReport]:
        nodes = await self.nodes()
        if not nodes:
            return {}
        try:
            async with self._require().pipeline(transaction=False) as pipe:
                for node_id in nodes:
                    pipe.hgetall(self._rooms_key(node_id))
                reports = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"presence read failed: {exc}") from exc
        found = {}
        for node_id, report in zip(nodes, reports, strict=True):
            counts = {k.decode(): int(v) for k, v in report.items()}
            found[node_id] = NodeReport(counts, counts.pop(CLIENTS_FIELD, 0))
        return found

    async def rooms(self, exclude_node: str = "") -> RoomTotals:
        totals = RoomTotals()
        nodes = [n for n in await self.nodes() if n != exclude_node]
        if not nodes:
            return totals
        try:
            async with self._gate, self._require().pipeline(transaction=False) as pipe:
                for node_id in nodes:
                    pipe.hgetall(self._rooms_key(node_id))
                reports = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"presence read failed: {exc}") from exc
        for report in reports:
            counts = {k.decode(): int(v) for k, v in report.items()}
            totals.add(counts, counts.pop(CLIENTS_FIELD, 0))
        return totals
