"""Redis broker: Redis pub/sub and streams between the nodes of a cluster.

A node holds a :class:`~.redis_commands.CommandPool` here (see ``resp.py`` for why its
connections are not redis-py's): a few RESP3 connections that every task's commands share,
written once per loop turn, with a bounded in-flight budget, so a burst is batched, never
refused while Redis answers. One of them also carries the node's
:class:`~.redis_subscriber.Subscriber`: every subscribed channel, whose messages are handed to
``deliver`` from the socket callback (exactly one reader, no task), and the stored publishes,
whose reply comes back in the same read as the node's own copy of the message.

A stored publish is one EVALSHA, so one round trip per message per instance (usually shared
with other commands). It writes no key of its own: idempotency keys exist only when the caller
gives one. When a reply is lost, the outcome is looked up in the stream by the publish's nonce
instead of retried blindly, so a message is never stored twice by a retry.

Faults of earlier designs this module must not repeat (each pinned by a test): one PubSub read by
several tasks, a reader spinning on a zero timeout, resetting the shared subscription when one
channel empties, a reader that dies on a connection error and never resubscribes, and a command
pool that refuses a burst while Redis is healthy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from ..errors import BrokerUnavailable
from ..history import (
    HistoryPage,
    HistoryPolicy,
    HistoryRules,
    Stored,
)
from ..redaction import redact_url
from .base import DeliverFn, GapFn
from .networked import NetworkBroker
from .redis_commands import CommandPool, outage_window
from .redis_history import StreamHistory
from .redis_keys import channel_key
from .redis_probe import LivenessProbe
from .redis_subscriber import Refused, Subscriber
from .resp import Endpoint, ReplyError, encode

log = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT = 5.0
"""Seconds to wait for Redis to confirm a SUBSCRIBE before the join fails."""

POOL_CONNECTIONS = 16
"""Connections of the redis-py pools (presence, rate limits): callers wait for one when all are
busy, instead of being refused as with redis-py's default pool."""


def open_client(url: str, **options: Any) -> aioredis.Redis:
    """A redis-py client for the low-rate paths (presence, rate limits).

    Its pool is bounded and *blocking*: under a burst, callers wait for a connection (up to the
    socket timeout) instead of getting "Too many connections" at once.
    """
    retry = Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), retries=3)
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=options.pop("max_connections", POOL_CONNECTIONS),
        timeout=options.pop("pool_timeout", 5.0),
        retry=retry,
        socket_connect_timeout=options.pop("socket_connect_timeout", 3.0),
        socket_timeout=options.pop("socket_timeout", 5.0),
        **options,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


class RedisBroker(NetworkBroker):
    """Broker on Redis pub/sub. Channel ``c`` is the Redis channel ``<prefix>ch:{<c>}``."""

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
        queue_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            url,
            prefix,
            node_id,
            probe_interval=probe_interval,
            probe_timeout=probe_timeout,
            history=history,
        )
        node = self._node
        # The node's own channel keeps the subscriber connection subscribed (and read) even when
        # no channel has members, and carries the liveness probe.
        self._node_key = f"{prefix}node:{node}".encode()
        self._shown = redact_url(url)
        endpoint = Endpoint.from_url(url)
        name = f"sanic-feeds:{node}"
        self._commands = CommandPool(
            endpoint,
            connections=connections,
            max_in_flight=max_in_flight,
            command_timeout=command_timeout or outage_window(probe_interval, probe_timeout),
            queue_timeout=queue_timeout,
            client_name=name,
        )
        self._streams = StreamHistory(
            self._commands, prefix, node, self.history_rules, self._channel_key
        )
        self._subscriber: Subscriber | None = None
        self._deliver: DeliverFn | None = None
        self._on_gap: GapFn | None = None
        self._channels: dict[bytes, str] = {}
        """Redis channel -> channel, for every subscribed channel (no decode per message)."""
        self._probe: LivenessProbe | None = None
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self, deliver: DeliverFn | None = None, on_gap: GapFn | None = None) -> None:
        self._on_gap = on_gap
        self._closing = False
        self._deliver = deliver
        await self._commands.open()
        await self._streams.open()
        if deliver is not None:
            self._subscriber = Subscriber(
                self._commands,
                self._on_message,
                self._on_resubscribed,
                confirm_timeout=SUBSCRIBE_TIMEOUT,
                on_refused=self._on_refused,
            )
            try:
                await self._subscriber.open(self._node_key)
            except BrokerUnavailable:
                await self.aclose()
                raise
            self._probe = LivenessProbe(
                self._commands,
                self._subscriber,
                self._node_key,
                interval=self._probe_interval,
                timeout=self._probe_timeout,
            )
            self._probe.start()

    async def aclose(self) -> None:
        self._closing = True
        if self._probe is not None:
            await self._probe.stop()
            self._probe = None
        subscriber, self._subscriber = self._subscriber, None
        if subscriber is not None:
            await subscriber.aclose()
        await self._commands.aclose()
        self._channels.clear()

    @property
    def reconnects(self) -> int:
        return self._subscriber.reconnects if self._subscriber is not None else 0

    def statistics(self) -> dict[str, int]:
        """Counters for ``/metrics``: batching, the budget, refusals and lost replies."""
        stats = self._commands.statistics()
        stats["unknown_outcomes"] = self._streams.refused_unknown
        stats["resolved"] = self._streams.resolved
        stats["lost_replies"] = self._streams.lost_replies
        return stats

    # -- publish / subscribe ---------------------------------------------------------------------

    def _channel_key(self, channel: str) -> bytes:
        return channel_key(self._prefix, channel)

    @property
    def lost_replies(self) -> int:
        """Stored publishes whose reply was lost (then looked up, and maybe sent again)."""
        return self._streams.lost_replies

    async def publish(self, channel: str, payload: bytes) -> None:
        key = self._channel_key(channel)
        try:
            await self._commands.call(encode(b"PUBLISH", key, payload), route=channel)
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

    async def subscribe(self, channel: str) -> None:
        subscriber = self._require_subscriber()
        key = self._channel_key(channel)
        # On the books from here on, whatever happens to the call (see Subscriber.subscribe),
        # unless Redis refuses it for good (``_on_refused``: an ACL that denies the channel).
        self._channels[key] = channel
        await subscriber.subscribe(key)

    async def unsubscribe(self, channel: str) -> None:
        subscriber = self._require_subscriber()
        key = self._channel_key(channel)
        self._channels.pop(key, None)
        subscriber.unsubscribe(key)

    async def check(self) -> dict[str, object]:
        subscriber = self._subscriber
        if self._deliver is not None:
            if subscriber is None:
                raise BrokerUnavailable("the broker is not open")
            if subscriber.error is not None:
                raise BrokerUnavailable(f"subscriber connection lost: {subscriber.error}")
        if self._probe is not None and self._probe.error is not None:
            raise BrokerUnavailable(f"liveness probe failed: {self._probe.error}")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(2.0):
                await self._commands.call(encode(b"PING"))
        except TimeoutError as exc:
            raise BrokerUnavailable("PING: no answer in 2 s") from exc
        except ReplyError as exc:  # BUSY (a long script), LOADING, NOPERM
            raise BrokerUnavailable(f"PING refused: {exc}") from exc
        return {
            "ok": True,
            "backend": "redis",
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }

    @property
    def subscriptions(self) -> frozenset[str]:
        return frozenset(self._channels.values())

    @property
    def url(self) -> str:
        return self._shown

    # -- messages from the subscriber ------------------------------------------------------------

    def _on_message(self, key: bytes, data: bytes) -> None:
        channel = self._channels.get(key)
        if channel is not None:
            deliver = self._deliver
            if deliver is None:
                return
            try:
                deliver(channel, data)
            except Exception:  # a bug in one delivery must not break the connection's callback
                log.exception("delivery to channel %r failed", channel)
        elif key == self._node_key and self._probe is not None:
            self._probe.seen(data)

    def _on_resubscribed(self, key: bytes) -> None:
        channel = self._channels.get(key)
        if channel is not None and self._on_gap is not None:
            log.info("subscription of %r re-established; members may have a gap", channel)
            self._on_gap(channel)

    def _on_refused(self, refused: Refused) -> None:
        """Redis will not subscribe this channel (an ACL denies it): off the books here too; a
        join waiting for it fails with the refusal."""
        self._channels.pop(refused.key, None)

    def _require_subscriber(self) -> Subscriber:
        if self._subscriber is None:
            raise RuntimeError("broker opened publish-only; pass deliver to open() to subscribe")
        return self._subscriber


__all__ = ["RedisBroker", "open_client", "redact_url"]
