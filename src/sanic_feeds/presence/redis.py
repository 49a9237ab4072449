"""Redis presence: node reports as expiring hashes plus a sorted set of live nodes.

Keys (``P`` is the configured prefix)::

    P nodes              ZSET  node id -> expiry (unix time, seconds)
    P node:{<id>}:rooms  HASH  channel -> member count on that node, and "#clients" -> its
                               connection count; PEXPIRE ttl
    P presence:{<id>}:<channel>
                         HASH  client id -> member JSON, for that node's members of the
                               channel; PEXPIRE ttl
    P users:{<key>}      HASH  node id -> that node's count of the key: a user's connections
                               (only with a per-user connection limit), a channel's occupancy
                               (``#room:<channel>``, only with event webhooks); fields of
                               nodes no longer in ``P nodes`` are ignored and removed when
                               counted; PEXPIRE a day
    P counted:{<id>}     SET   the keys that node has counted (added before its count goes up,
                               removed once it is back to zero): what a claim of its expiry
                               hands over
    P counting           ZSET  node id -> when it first counted: the nodes that may leave
                               counts behind
    P alive:{<id>}       STRING "1" while no claim cleared that node's counts: written with
                               its first count and after each recount, deleted by a claim
                               together with ``counted:{<id>}`` (same hash tag, one script)

Every key of one node's report carries the node's hash tag ``{<id>}``, so the report is one
MULTI/EXEC in one slot, on a single Redis and on a Redis Cluster alike: readers never see half
of it. On a single Redis the same transaction also renews the node's entry in ``nodes``; on a
cluster that key lives in another slot, so it is renewed right after the report (and removed
before it on withdrawal): a reader that finds the node listed finds its report, or an expired
one it ignores. Reads of every node's report (rooms, members) are pipelines that redis-py's
cluster client splits by master.

Readers ignore nodes whose expiry has passed (and prune them), so a crashed node's counts vanish
after at most ``ttl``. A count is one Lua script on the counter's key (:data:`COUNT_SCRIPT`),
given the live nodes read just before: it adds the change, removes the fields of nodes not
among them and sums the rest, so the one script that removes a dead node's field is the one
that can say the key lapsed. A survivor claims a dead node's keys by reading and deleting its
``counted`` set in one script: exactly one claimer gets them, and it takes the node off
``counting``.

A node that was cut off past its ttl and comes back is alive but was treated as dead: counts
made meanwhile dropped its fields, and a claim deleted its ``alive`` mark. It learns so from its
own report coming late (:meth:`RedisPresence.counts_cleared` with ``lapsed``) or from the mark's
absence (checked every sweep; its ordinary counts never write the mark, so a node that counts
on between the claim and its check, which lists it in ``counting`` again, still learns of the
claim; a Redis that lost its data lost the mark too), and then sets each of its counts again
(:data:`SET_SCRIPT`: the value it holds, not a +1, so a field that is still there is left as
it is and a second recount changes nothing). A count by another node whose list of live nodes
was read just before the node's return can still drop a field it has just set: the node's
next change of that key (or its next lapse) restores it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisError

from ..brokers.redis import open_client
from ..brokers.redis_cluster_client import GATE, open_cluster_client
from ..brokers.redis_scripts import Script
from ..errors import BrokerUnavailable
from .base import CLIENTS_FIELD, CountChange, Counted, Member, NodeReport, Presence, RoomTotals

USER_COUNTS_TTL_MS = 86_400_000
"""A user's connection counts expire a day after their last change: what a crash left behind
does not stay forever, and a user connected for longer without any change is under-counted at
worst (the limit lets one more in), never locked out."""


_COUNT_SCRIPT = """
local key, me, n = KEYS[1], ARGV[1], tonumber(ARGV[2])
local live = {}
for i = 4, #ARGV do live[ARGV[i]] = true end
local before = tonumber(redis.call('HGET', key, me) or '0')
local mine = math.max(%s, 0)
if mine > 0 then redis.call('HSET', key, me, mine) else redis.call('HDEL', key, me) end
local total, cleared = mine, 0
local fields = redis.call('HGETALL', key)
for i = 1, #fields, 2 do
  local node, count = fields[i], tonumber(fields[i + 1])
  if node ~= me then
    if live[node] then
      total = total + math.max(count, 0)
    else
      redis.call('HDEL', key, node)
      cleared = cleared + math.max(count, 0)
    end
  end
end
if total > 0 then redis.call('PEXPIRE', key, ARGV[3]) end
local lapsed = 0
if cleared > 0 and total - (mine - before) == 0 then lapsed = 1 end
return {total, mine, lapsed, before}
"""

COUNT_SCRIPT = Script((_COUNT_SCRIPT % "before + n").encode())
"""Count on one key (one slot), with the live nodes (besides the caller) as ARGV[4:]: adds
ARGV[2] to the caller's count and returns the live total, the caller's own count, 1 when
clearing dead fields lapsed it, and the caller's count before."""

SET_SCRIPT = Script((_COUNT_SCRIPT % "n").encode())
"""As :data:`COUNT_SCRIPT`, but sets the caller's count to ARGV[2]."""


CLAIM_SCRIPT = Script(b"""
local keys = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2])
return keys
""")
"""A dead node's counted keys (KEYS[1]), read and deleted in one step with its ``alive`` mark
(KEYS[2], same hash tag): one claimer gets them, and the node, if it is alive after all, finds
its mark gone."""


class RedisPresence(Presence):
    """On one Redis, or (``cluster``) on a Redis Cluster, with the same keys."""

    def __init__(self, url: str, prefix: str = "sanic-feeds:", *, cluster: bool = False) -> None:
        self._url = url
        self._prefix = prefix
        self._cluster = cluster
        self._nodes_key = f"{prefix}nodes"
        self._counting_key = f"{prefix}counting"
        self._client: aioredis.Redis | RedisCluster | None = None
        self._marked: set[str] = set()
        self._listed: dict[str, set[str]] = {}
        """Node of this process -> the keys this process added to its ``counted`` set since it
        was last cleared (a claim, a lost Redis: :meth:`counts_cleared` says so): a count of
        one of them needs no SADD (nor ZADD to ``counting``) before it."""
        """Nodes of this process whose ``alive`` mark was written with their first count:
        later counts leave it as it is (only a recount writes it again after a claim)."""
        self._gate = asyncio.Semaphore(GATE)

    def _members_key(self, channel: str, node_id: str) -> str:
        return f"{self._prefix}presence:{{{node_id}}}:{channel}"

    def _rooms_key(self, node_id: str) -> str:
        return f"{self._prefix}node:{{{node_id}}}:rooms"

    def _counted_key(self, node_id: str) -> str:
        return f"{self._prefix}counted:{{{node_id}}}"

    def _alive_key(self, node_id: str) -> str:
        return f"{self._prefix}alive:{{{node_id}}}"

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

    async def add_count(self, key: str, node_id: str, delta: int) -> Counted:
        total, _, lapsed = await self._count(COUNT_SCRIPT, key, node_id, delta)
        return Counted(total, lapsed=lapsed)

    async def set_count(self, key: str, node_id: str, value: int) -> CountChange:
        total, change, lapsed = await self._count(SET_SCRIPT, key, node_id, value)
        return CountChange(total, change, lapsed)

    async def _count(self, script: Script, key: str, node_id: str, n: int) -> tuple[int, int, bool]:
        """Run a count script on ``key``: the live total, the caller's change, lapsed."""
        live = [other for other in await self.nodes() if other != node_id]
        client = self._require()
        listed = self._listed.setdefault(node_id, set())
        try:
            if n > 0 and key not in listed:  # listed before it counts: a claim never misses it
                async with self._gate, client.pipeline(transaction=False) as pipe:
                    pipe.sadd(self._counted_key(node_id), key)
                    pipe.zadd(self._counting_key, {node_id: time.time()}, nx=True)
                    first = node_id not in self._marked
                    if first:  # counts start out intact
                        pipe.set(self._alive_key(node_id), 1)
                    await pipe.execute()
                if first:
                    self._marked.add(node_id)
                listed.add(key)
            args: list[str | int] = [node_id, n, USER_COUNTS_TTL_MS, *live]
            counter = f"{self._prefix}users:{{{key}}}"
            total, mine, lapsed, before = await self._script(script, [counter], args)
            if not mine and (n < 0 or script is SET_SCRIPT):
                # Back to zero: nothing of this node's left to claim here. (A +1 of the same
                # key racing this on the same node can lose its entry; its count is then still
                # cleared by the next count of the key, only not claimed.)
                listed.discard(key)
                async with self._gate:
                    await client.srem(self._counted_key(node_id), key)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"count of {key!r} failed: {exc}") from exc
        return int(total), int(mine) - int(before), bool(lapsed)

    async def _script(self, lua: Script, keys: list[str], args: Sequence[str | int]) -> list[Any]:
        """EVALSHA: the script's text is sent only where Redis does not know it (a restart,
        SCRIPT FLUSH, a new cluster node): NOSCRIPT means it did not run, so it is loaded
        and run again."""
        client = self._require()
        async with self._gate:
            try:
                reply = await client.evalsha(lua.sha.decode(), len(keys), *keys, *args)
            except NoScriptError:
                await client.script_load(lua.source)
                reply = await client.evalsha(lua.sha.decode(), len(keys), *keys, *args)
        return list(reply)

    async def counts_cleared(self, node_id: str, *, lapsed: bool) -> bool:
        if lapsed:  # any count made meanwhile dropped this node's field, as a dead node's
            self._listed.pop(node_id, None)
            return True
        try:
            async with self._gate:
                marked = await self._require().exists(self._alive_key(node_id))
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"presence read failed: {exc}") from exc
        # A claim deletes the mark; a Redis that lost its data has it no more either. Either
        # way its counted set is gone: the keys are listed again as they are set again.
        if not marked:
            self._listed.pop(node_id, None)
        return not marked

    async def counts_restored(self, node_id: str) -> None:
        try:
            async with self._gate:
                await self._require().set(self._alive_key(node_id), 1)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"presence write failed: {exc}") from exc
        self._marked.add(node_id)

    async def claim_expired(self, node_id: str) -> list[str]:
        client = self._require()
        try:
            counting = await client.zrange(self._counting_key, 0, -1)
            live = set(await self.nodes()) | {node_id}  # read after: a node counts once listed
            keys: set[str] = set()
            for raw in counting:
                dead = raw.decode() if isinstance(raw, bytes) else str(raw)
                if dead in live:
                    continue
                claimed = await self._script(
                    CLAIM_SCRIPT, [self._counted_key(dead), self._alive_key(dead)], []
                )
                await client.zrem(self._counting_key, dead)
                keys.update(k.decode() if isinstance(k, bytes) else str(k) for k in claimed)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"claim of expired counts failed: {exc}") from exc
        return sorted(keys)

    async def nodes(self) -> list[str]:
        client = self._require()
        now = time.time()
        try:  # one round trip (one key, so one slot on a cluster too)
            async with self._gate, client.pipeline(transaction=False) as pipe:
                pipe.zremrangebyscore(self._nodes_key, "-inf", now)
                pipe.zrangebyscore(self._nodes_key, now, "+inf")
                _, raw = await pipe.execute()
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
