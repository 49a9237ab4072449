"""Redis broker: Redis pub/sub and streams between the nodes of a cluster.

A node holds two kinds of connection here (see ``resp.py`` for why they are not redis-py's):

- a :class:`~.redis_commands.CommandPool`, a few connections that every task's commands share,
  written once per loop turn, with a bounded in-flight budget: a burst is batched, never
  refused while Redis answers;
- one :class:`~.redis_subscriber.Subscriber` connection for every subscribed channel, whose
  messages are handed to ``deliver`` from the socket callback (exactly one reader, no task).

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
import itertools
import logging
import random
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from ..envelope import now_us
from ..errors import BrokerUnavailable
from ..history import (
    HistoryPage,
    HistoryPolicy,
    Stored,
    new_epoch,
    page_from_newest,
)
from ..tasks import cancel_and_wait
from .base import Broker, DeliverFn, GapFn
from .redis_commands import CommandPool, OutcomeUnknown
from .redis_scripts import FIND_PUBLISH, PUBLISH_STORED, READ_HISTORY, Script
from .redis_subscriber import Subscriber
from .resp import Endpoint, Reply, ReplyError, encode

log = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT = 5.0
"""Seconds to wait for Redis to confirm a SUBSCRIBE before the join fails."""

FIND_DEPTH = 1000
"""Newest stream entries searched for a publish whose reply was lost. Not finding it there leads
to one retry only when Redis itself closed the connection (so the command cannot still run): a
message could then be stored twice only if over this many were stored on its channel between
the lost reply and the lookup, milliseconds later."""

PUBLISH_ATTEMPTS = 3
"""Sends of one stored publish (each after Redis closed the connection with no trace of it),
and lookups of a lost reply, before the publish is reported as failed."""

POOL_CONNECTIONS = 16
"""Connections of the redis-py pools (presence, rate limits): callers wait for one when all are
busy, instead of being refused as with redis-py's default pool."""


def redact_url(url: str) -> str:
    """Drop the password from a URL so it can be logged and shown."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


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


class RedisBroker(Broker):
    """Broker on Redis pub/sub. Channel ``c`` is the Redis channel ``<prefix>ch:<c>``."""

    def __init__(
        self,
        url: str,
        prefix: str = "sanic-feeds:",
        node_id: str = "",
        *,
        probe_interval: float = 2.0,
        probe_timeout: float = 3.0,
        history: HistoryPolicy | None = None,
        connections: int = 2,
        max_in_flight: int = 8192,
        command_timeout: float = 5.0,
        queue_timeout: float = 10.0,
    ) -> None:
        self._url = url
        self._prefix = prefix
        self.history_policy = history or HistoryPolicy()
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._channel_prefix = (prefix + "ch:").encode()
        node = node_id or random.randbytes(6).hex()
        # The node's own channel keeps the subscriber connection subscribed (and read) even when
        # no channel has members, and carries the liveness probe.
        self._node_key = f"{prefix}node:{node}".encode()
        self._nonces = (b"%s-%d" % (node.encode(), n) for n in itertools.count(1))
        endpoint = Endpoint.from_url(url)
        name = f"sanic-feeds:{node}"
        self._commands = CommandPool(
            endpoint,
            connections=connections,
            max_in_flight=max_in_flight,
            command_timeout=command_timeout,
            queue_timeout=queue_timeout,
            client_name=name,
        )
        self._endpoint = endpoint
        self._client_name = name
        self._subscriber: Subscriber | None = None
        self._deliver: DeliverFn | None = None
        self._on_gap: GapFn | None = None
        self._channels: dict[bytes, str] = {}
        """Redis channel -> channel, for every subscribed channel (no decode per message)."""
        self._prober: asyncio.Task[None] | None = None
        self._probe_error: str | None = None
        self._probe_seen = 0
        self._probe_echo = asyncio.Event()
        self._closing = False
        self.refused_unknown = 0
        """Publishes whose outcome stayed unknown (reported as unavailable, never retried)."""
        self.resolved = 0
        """Publishes whose lost reply was recovered by finding them in the stream."""
        self.lost_replies = 0
        """Stored publishes whose reply was lost (then looked up, and maybe sent again)."""

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self, deliver: DeliverFn | None = None, on_gap: GapFn | None = None) -> None:
        self._on_gap = on_gap
        self._closing = False
        self._deliver = deliver
        await self._commands.open()
        if deliver is not None:
            self._subscriber = Subscriber(
                self._endpoint,
                self._on_message,
                self._on_resubscribed,
                client_name=self._client_name,
                confirm_timeout=SUBSCRIBE_TIMEOUT,
            )
            try:
                await self._subscriber.open(self._node_key)
            except BrokerUnavailable:
                await self.aclose()
                raise
            self._prober = asyncio.create_task(self._probe_loop(), name="sanic-feeds:broker-probe")

    async def aclose(self) -> None:
        self._closing = True
        await cancel_and_wait(self._prober)
        self._prober = None
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
        stats["unknown_outcomes"] = self.refused_unknown
        stats["resolved"] = self.resolved
        stats["lost_replies"] = self.lost_replies
        return stats

    # -- publish / subscribe ---------------------------------------------------------------------

    async def publish(self, channel: str, payload: bytes) -> None:
        key = self._channel_prefix + channel.encode()
        try:
            await self._commands.call(encode(b"PUBLISH", key, payload), route=channel)
        except ReplyError as exc:
            raise BrokerUnavailable(f"publish to {channel!r} refused: {exc}") from exc

    def _history_keys(self, channel: str) -> tuple[str, str, str]:
        # One hash tag per channel keeps the script's keys in one slot (Redis Cluster).
        base = f"{self._prefix}hist:{{{channel}}}"
        return base + ":seq", base, base + ":epoch"

    async def publish_stored(
        self, channel: str, body: bytes, idempotency_key: str | None = None
    ) -> Stored:
        if not body.startswith(b"{") or body == b"{}":
            raise ValueError("a stored message must be a non-empty JSON object")
        policy = self.history_policy
        seq_key, stream_key, epoch_key = self._history_keys(channel)
        keys: list[bytes | str] = [
            seq_key,
            stream_key,
            epoch_key,
            self._channel_prefix + channel.encode(),
        ]
        if idempotency_key is not None:
            keys.append(f"{stream_key}:pub:{idempotency_key}")
        nonce = next(self._nonces)
        args: list[bytes | str | int] = [
            body,
            max(policy.size, 1),
            max(int(policy.ttl * 1000), 1),
            new_epoch(),
            b" %d" % now_us(),  # envelope header: no excluded client, the publish time
            nonce,
        ]
        for attempt in range(PUBLISH_ATTEMPTS):
            try:
                reply = await self._run(PUBLISH_STORED, keys, args, route=channel)
            except OutcomeUnknown as exc:
                self.lost_replies += 1
                found = await self._find(channel, nonce, exc)
                if found is not None:
                    self.resolved += 1
                    return found
                if exc.may_still_run or attempt == PUBLISH_ATTEMPTS - 1:
                    self.refused_unknown += 1
                    raise BrokerUnavailable(
                        f"publish to {channel!r}: reply lost and outcome unknown; not retried"
                    ) from exc
                continue  # Redis closed the connection and has no trace of it: it never ran
            return _stored(reply)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _find(self, channel: str, nonce: bytes, lost: OutcomeUnknown) -> Stored | None:
        """Look a publish whose reply was lost up in the stream; None when it is not there (and
        not finding it can be trusted)."""
        _, stream_key, epoch_key = self._history_keys(channel)
        delay = 0.05
        for attempt in range(PUBLISH_ATTEMPTS):
            try:
                reply = await self._run(
                    FIND_PUBLISH, [stream_key, epoch_key], [nonce, FIND_DEPTH], route=channel
                )
                return _stored(reply) if reply[0] else None
            except BrokerUnavailable as exc:  # a read: trying again is safe
                if attempt == PUBLISH_ATTEMPTS - 1:
                    raise BrokerUnavailable(
                        f"publish to {channel!r}: reply lost and Redis unreachable to check ({exc})"
                    ) from lost
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    async def _run(
        self, script: Script, keys: list[bytes | str], args: list[bytes | str | int], route: str
    ) -> Reply:
        """EVALSHA, loading the script when Redis does not know it (a restart, SCRIPT FLUSH):
        a NOSCRIPT reply means it did not run, so sending it again is safe."""
        command = encode(b"EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return await self._commands.call(command, route=route)
        except ReplyError as exc:
            if exc.code != "NOSCRIPT":
                raise BrokerUnavailable(f"Redis refused a script: {exc}") from exc
        try:
            await self._commands.call(encode(b"SCRIPT", b"LOAD", script.source), route=route)
            return await self._commands.call(command, route=route)
        except ReplyError as exc:
            raise BrokerUnavailable(f"Redis refused a script: {exc}") from exc

    async def history(
        self, channel: str, since: int | None, epoch: str | None, limit: int
    ) -> HistoryPage:
        seq_key, stream_key, epoch_key = self._history_keys(channel)
        reply = await self._run(
            READ_HISTORY,
            [seq_key, stream_key, epoch_key],
            [-1 if since is None else since, epoch or "", limit],
            route=channel,
        )
        top, current, entries = int(reply[0]), _text(reply[1]), reply[2]
        # Entry ids are "0-<offset>"; the body is the first field ("d").
        newest_first = [(int(entry_id[2:]), fields[1]) for entry_id, fields in entries]
        return page_from_newest(
            newest_first, since=since, wanted_epoch=epoch, epoch=current, top=top, limit=limit
        )

    async def subscribe(self, channel: str) -> None:
        subscriber = self._require_subscriber()
        key = self._channel_prefix + channel.encode()
        # On the books from here on, whatever happens to the call (see Subscriber.subscribe).
        self._channels[key] = channel
        await subscriber.subscribe(key)

    async def unsubscribe(self, channel: str) -> None:
        subscriber = self._require_subscriber()
        key = self._channel_prefix + channel.encode()
        self._channels.pop(key, None)
        subscriber.unsubscribe(key)

    async def check(self) -> dict[str, object]:
        subscriber = self._subscriber
        if self._deliver is not None:
            if subscriber is None:
                raise BrokerUnavailable("the broker is not open")
            if subscriber.error is not None:
                raise BrokerUnavailable(f"subscriber connection lost: {subscriber.error}")
        if self._probe_error is not None:
            raise BrokerUnavailable(f"liveness probe failed: {self._probe_error}")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(2.0):
                await self._commands.call(encode(b"PING"))
        except TimeoutError as exc:
            raise BrokerUnavailable("PING: no answer in 2 s") from exc
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
        return redact_url(self._url)

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
        elif key == self._node_key:
            _, _, number = data.partition(b" ")
            if number.isdigit():
                self._probe_seen = max(self._probe_seen, int(number))
                self._probe_echo.set()

    def _on_resubscribed(self, key: bytes) -> None:
        channel = self._channels.get(key)
        if channel is not None and self._on_gap is not None:
            log.info("subscription of %r re-established; members may have a gap", channel)
            self._on_gap(channel)

    # -- liveness --------------------------------------------------------------------------------

    async def _probe_loop(self) -> None:
        """Publish to this node's own channel and expect it back through the subscriber.

        Socket errors are not enough to notice a dead subscriber: a frozen Redis (SIGSTOP, a
        stuck failover) raises nothing, and a killed subscriber connection may be replaced
        silently. Only a message that makes the round trip proves the node can still receive.
        When one does not come back in time, the subscriber connection is dropped and rebuilt.
        """
        sent = 0
        while not self._closing:
            await asyncio.sleep(self._probe_interval)
            sent += 1
            published = False
            try:
                async with asyncio.timeout(self._probe_timeout):
                    probe = encode(b"PUBLISH", self._node_key, b"probe %d" % sent)
                    await self._commands.call(probe)
                    published = True
                    while self._probe_seen < sent:
                        self._probe_echo.clear()
                        await self._probe_echo.wait()
            except (TimeoutError, BrokerUnavailable) as exc:
                problem = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
                if self._probe_error is None:
                    log.warning("broker liveness probe failed (%s); reconnecting", problem)
                self._probe_error = problem
                if not published:
                    # The command connection did not answer: drop the silent ones now instead
                    # of after the command timeout. The subscriber is judged by the next probe
                    # (a frozen Redis that resumes loses nothing on it).
                    self._commands.drop_silent(self._probe_timeout)
                elif self._subscriber is not None:
                    self._subscriber.rebuild("liveness probe failed")
                continue
            if self._probe_error is not None:
                log.info("broker liveness probe answered again")
                self._probe_error = None

    def _require_subscriber(self) -> Subscriber:
        if self._subscriber is None:
            raise RuntimeError("broker opened publish-only; pass deliver to open() to subscribe")
        return self._subscriber


def _text(value: Reply) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stored(reply: Reply) -> Stored:
    return Stored(int(reply[0]), _text(reply[1]))


__all__ = ["RedisBroker", "open_client", "redact_url"]
