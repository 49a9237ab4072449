"""Redis Cluster broker: sharded pub/sub and per-channel streams spread over the masters.

``--broker redis-cluster://HOST:PORT[,HOST:PORT...]`` (Redis 7 or later). Channel ``c`` is the
shard channel ``<prefix>ch:{c}`` and its history the keys ``<prefix>hist:{c}...``: one hash tag,
so one slot, one master (``redis_keys.py``). Per master the node holds a batching command pool
and, when it subscribes, one sharded subscriber with its own liveness probe
(``redis_shard.py``); the router (``redis_cluster_router.py``) sends each command to its slot's
master and keeps the slot map current. Stored publishes, history reads and their rules for a
lost reply are the single-Redis ones (``redis_history.py``), on the router instead of one pool.

When a channel's slot gets a new master (a failover, a migration), its subscription is moved
there and the hub is told of a gap (``on_gap``), so it refills the channel from the history:
members miss nothing the history holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from ..cluster_urls import redis_cluster_nodes
from ..errors import BrokerUnavailable
from ..history import HistoryPage, HistoryPolicy, HistoryRules, Stored
from ..redaction import redact_url
from .base import DeliverFn, GapFn
from .cluster_slots import SLOTS, Address, SlotMap, key_slot, probe_tag
from .networked import NetworkBroker
from .redis import SUBSCRIBE_TIMEOUT
from .redis_cluster_router import ClusterRouter
from .redis_cluster_subscriptions import ShardedSubscriptions
from .redis_commands import outage_window
from .redis_history import StreamHistory
from .redis_keys import channel_key
from .redis_scripts import SHARDED_PUBLISH_STORED
from .redis_shard import Shard
from .resp import Endpoint, ReplyError, encode

log = logging.getLogger(__name__)


class RedisClusterBroker(NetworkBroker):
    """Broker on a Redis Cluster's sharded pub/sub. See the module docstring."""

    def __init__(
        self,
        url: str,
        prefix: str = "sanic-feeds:",
        node_id: str = "",
        *,
        probe_interval: float = 2.0,
        probe_timeout: float = 3.0,
        history: HistoryPolicy | HistoryRules | None = None,
        connections: int = 2,
        max_in_flight: int = 8192,
        command_timeout: float | None = None,
    ) -> None:
        super().__init__(
            url,
            prefix,
            node_id,
            probe_interval=probe_interval,
            probe_timeout=probe_timeout,
            history=history,
        )
        self._connections = connections
        self._max_in_flight = max_in_flight
        self._command_timeout = command_timeout or outage_window(probe_interval, probe_timeout)
        self._seeds = [Endpoint.from_url(node) for node in redis_cluster_nodes(url)]
        self._shown = redact_url(url)
        self._router = ClusterRouter(self._seeds, self._open_shard, self._rehome, self._slot_of)
        self._streams = StreamHistory(
            self._router,
            prefix,
            self._node,
            self.history_rules,
            self._channel_key,
            SHARDED_PUBLISH_STORED,
        )
        self._subscriptions: ShardedSubscriptions | None = None
        """Where each channel is subscribed; None for a publish-only broker."""

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self, deliver: DeliverFn | None = None, on_gap: GapFn | None = None) -> None:
        self._subscriptions = None
        if deliver is not None:
            self._subscriptions = ShardedSubscriptions(
                self._router, self._channel_key, deliver, on_gap, SUBSCRIBE_TIMEOUT
            )
        await self._router.open()
        try:
            await self._streams.open()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._subscriptions is not None:
            await self._subscriptions.aclose()
        await self._router.aclose()

    def _rehome(self) -> None:
        if self._subscriptions is not None:
            self._subscriptions.rehome()

    async def _open_shard(self, address: Address, slots: SlotMap) -> Shard:
        """Connect to a master: its commands, and (subscribing) its subscriber and probe."""
        shard = Shard(
            address,
            replace(self._seeds[0], host=address[0], port=address[1]),
            client_name=f"sanic-feeds:{self._node}",
            connections=self._connections,
            command_timeout=self._command_timeout,
            max_in_flight=self._max_in_flight,
        )
        try:
            await shard.open()
            subscriptions = self._subscriptions
            if subscriptions is not None:
                key = f"{self._prefix}node:{self._node}:{{{probe_tag(slots, address)}}}".encode()
                subscriptions.probes[key] = shard
                await shard.open_subscriber(
                    key,
                    subscriptions.on_message,
                    subscriptions.on_resubscribed,
                    subscriptions.on_refused,
                    subscriptions.on_dropped,
                    confirm_timeout=SUBSCRIBE_TIMEOUT,
                    probe_interval=self._probe_interval,
                    probe_timeout=self._probe_timeout,
                )
        except BaseException:
            await shard.aclose()
            raise
        return shard

    # -- publish ---------------------------------------------------------------------------------

    def _channel_key(self, channel: str) -> bytes:
        return channel_key(self._prefix, channel)

    def _slot_of(self, channel: str) -> int:
        return key_slot(self._channel_key(channel))

    async def publish(self, channel: str, payload: bytes) -> None:
        command = encode(b"SPUBLISH", self._channel_key(channel), payload)
        try:
            await self._router.call(command, route=channel)
        except ReplyError as exc:
            raise BrokerUnavailable(f"publish to {channel!r} refused: {exc}") from exc

    async def publish_stored(
        self, channel: str, body: bytes, idempotency_key: str | None = None
    ) -> Stored:
        return await self._streams.publish_stored(channel, body, idempotency_key)

    async def history(
        self, channel: str, since: int | None, epoch: str | None, limit: int
    ) -> HistoryPage:
        return await self._streams.history(channel, since, epoch, limit)

    async def remove_history(self, channel: str) -> None:
        await self._streams.remove(channel)

    # -- subscriptions ---------------------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        await self._require_subscriptions().subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._require_subscriptions().unsubscribe(channel)

    def _require_subscriptions(self) -> ShardedSubscriptions:
        if self._subscriptions is None:
            raise RuntimeError("broker opened publish-only; pass deliver to open() to subscribe")
        return self._subscriptions

    # -- health ----------------------------------------------------------------------------------

    async def check(self) -> dict[str, object]:
        router = self._router
        covered = router.slots.covered
        if covered < SLOTS:
            raise BrokerUnavailable(f"{SLOTS - covered} of {SLOTS} slots have no master")
        problems = [f"{s!r}: {s.error}" for s in router.shards.values() if s.error is not None]
        missing = router.slots.masters - router.shards.keys()
        problems += [f"{h}:{p}: not connected" for h, p in sorted(missing)]
        if problems:
            raise BrokerUnavailable("; ".join(problems))
        started = time.perf_counter()
        try:
            async with asyncio.timeout(2.0):
                shards = list(router.shards.values())
                await asyncio.gather(*(s.commands.call(encode(b"PING")) for s in shards))
        except TimeoutError as exc:
            raise BrokerUnavailable("PING: a master did not answer in 2 s") from exc
        except ReplyError as exc:
            raise BrokerUnavailable(f"PING refused: {exc}") from exc
        return {
            "ok": True,
            "backend": "redis-cluster",
            "masters": len(shards),
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }

    @property
    def reconnects(self) -> int:
        shards = self._router.shards.values()
        moved = self._subscriptions.moved if self._subscriptions is not None else 0
        return moved + sum(s.subscriber.reconnects for s in shards if s.subscriber)

    def statistics(self) -> dict[str, int]:
        stats: dict[str, int] = {}
        for shard in self._router.shards.values():
            for name, value in shard.commands.statistics().items():
                stats[name] = stats.get(name, 0) + value
        stats["unknown_outcomes"] = self._streams.refused_unknown
        stats["resolved"] = self._streams.resolved
        stats["lost_replies"] = self._streams.lost_replies
        stats["cluster_redirects"] = self._router.redirects
        stats["cluster_refreshes"] = self._router.refreshes
        return stats

    @property
    def subscriptions(self) -> frozenset[str]:
        subscriptions = self._subscriptions
        return frozenset(subscriptions.channels.values() if subscriptions is not None else ())

    @property
    def url(self) -> str:
        return self._shown


__all__ = ["RedisClusterBroker"]
