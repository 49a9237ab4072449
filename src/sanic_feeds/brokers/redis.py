"""Redis broker: Redis pub/sub between the nodes of a cluster.

One node holds two things here: a client pool for PUBLISH and other commands, and exactly one
``PubSub`` connection for every subscribed channel, read by exactly one task. The reader never
awaits a client: it hands each message to ``deliver``, which only queues bytes.

Faults of earlier designs this module must not repeat (each pinned by a test): one PubSub read by
several tasks (messages stolen by the wrong reader), ``get_message(timeout=0)`` spinning, resetting
the shared PubSub when one channel empties (silently unsubscribing every other channel), and a
reader that dies on a connection error and never resubscribes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError
from redis.retry import Retry

from ..envelope import now_us
from ..errors import BrokerUnavailable
from ..history import HistoryPage, HistoryPolicy, Stored, build_page, new_epoch
from ..tasks import cancel_and_wait
from .base import Broker, DeliverFn, GapFn

log = logging.getLogger("sanic_feeds.broker")

SUBSCRIBE_TIMEOUT = 5.0
"""Seconds to wait for Redis to confirm a SUBSCRIBE before the join fails."""

CLOSE_TIMEOUT = 3.0
"""Seconds ``aclose`` may spend closing connections before it gives up on them."""

READ_TIMEOUT = 1.0
"""The reader's ``get_message`` timeout: how often it wakes up when the server is idle."""


# Append to history and publish in one atomic step, so the stream and the live messages never
# disagree. KEYS: offset counter, stream, epoch, pub/sub channel, the publish's idempotency key.
# ARGV: JSON object body, max length, ttl (ms), a fresh epoch to use if the history starts anew,
# the envelope header. A publish whose key was already seen (a retry after a lost reply: redis-py
# retries commands on connection errors) returns the first result instead of storing twice.
_PUBLISH_STORED = """
local done = redis.call('GET', KEYS[5])
if done then
  local offset, epoch = string.match(done, '^(%d+) (.+)$')
  return {tonumber(offset), epoch}
end
local offset = redis.call('INCR', KEYS[1])
local epoch = false
if offset > 1 then epoch = redis.call('GET', KEYS[3]) end
if not epoch then
  epoch = ARGV[4]
  redis.call('SET', KEYS[3], epoch)
end
local body = '{"id":' .. offset .. ',"epoch":"' .. epoch .. '",' .. string.sub(ARGV[1], 2)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '0-' .. offset, 'd', body)
local ttl = tonumber(ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
redis.call('PUBLISH', KEYS[4], ARGV[5] .. '\\n' .. body)
redis.call('SET', KEYS[5], offset .. ' ' .. epoch, 'EX', 120)
return {offset, epoch}
"""


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
    """A client with retries on: ``from_url`` clients get none by default."""
    retry = Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), retries=3)
    return aioredis.Redis.from_url(
        url,
        retry=retry,
        socket_connect_timeout=options.pop("socket_connect_timeout", 3.0),
        socket_timeout=options.pop("socket_timeout", 5.0),
        **options,
    )


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
    ) -> None:
        self._url = url
        self._prefix = prefix
        self.history_policy = history or HistoryPolicy()
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._channel_prefix = (prefix + "ch:").encode()
        # The node's own channel keeps the subscriber connection subscribed (and read) even when
        # no channel has members, so a first SUBSCRIBE is confirmed without delay.
        self._node_key = f"{prefix}node:{node_id or random.randbytes(6).hex()}".encode()
        self._client: aioredis.Redis | None = None
        self._publish_script: AsyncScript | None = None
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._deliver: DeliverFn | None = None
        self._on_gap: GapFn | None = None
        self._channels: set[str] = set()
        self._confirmations: dict[bytes, asyncio.Future[None]] = {}
        self._read_error: str | None = None
        self._prober: asyncio.Task[None] | None = None
        self._probe_error: str | None = None
        self._probe_seen = 0
        self._probe_echo = asyncio.Event()
        self._rebuild_requested = False
        self._closing = False
        """Set by the probe; the reader (the only task that touches the subscriber connection)
        then drops and rebuilds it between two reads."""

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self, deliver: DeliverFn | None = None, on_gap: GapFn | None = None) -> None:
        self._on_gap = on_gap
        self._closing = False
        self._client = open_client(self._url)
        self._publish_script = None
        self._deliver = deliver
        if deliver is not None:
            # The subscriber connection has no socket timeout: it legitimately waits for messages.
            self._pubsub = self._client.pubsub(ignore_subscribe_messages=False)
            try:
                await self._pubsub.subscribe(self._node_key)
            except (RedisError, OSError) as exc:
                await self.aclose()
                raise BrokerUnavailable(f"cannot subscribe at {self.url}: {exc}") from exc
            self._reader = asyncio.create_task(self._read_loop(), name="sanic-feeds:broker-reader")
            self._prober = asyncio.create_task(self._probe_loop(), name="sanic-feeds:broker-probe")

    async def aclose(self) -> None:
        self._closing = True
        for task in (self._prober, self._reader):
            await cancel_and_wait(task)
        self._prober = self._reader = None
        for future in self._confirmations.values():
            future.cancel()
        self._confirmations.clear()
        pubsub, self._pubsub = self._pubsub, None
        client, self._client = self._client, None
        # Closing talks to Redis; a frozen one must not hang the shutdown.
        with contextlib.suppress(TimeoutError, RedisError, OSError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                if pubsub is not None:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated in redis-py
                if client is not None:
                    await client.aclose()
        self._channels.clear()

    # -- publish / subscribe ---------------------------------------------------------------------

    async def publish(self, channel: str, payload: bytes) -> None:
        client = self._require_client()
        try:
            await client.publish(self._channel_prefix + channel.encode(), payload)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"publish to {channel!r} failed: {exc}") from exc

    def _history_keys(self, channel: str) -> list[str]:
        # One hash tag per channel keeps the script's keys in one slot (Redis Cluster).
        base = f"{self._prefix}hist:{{{channel}}}"
        return [base + ":seq", base, base + ":epoch"]

    async def publish_stored(
        self, channel: str, body: bytes, idempotency_key: str | None = None
    ) -> Stored:
        if not body.startswith(b"{") or body == b"{}":
            raise ValueError("a stored message must be a non-empty JSON object")
        client = self._require_client()
        policy = self.history_policy
        seq_key, stream_key, epoch_key = self._history_keys(channel)
        # Without a key from the caller, a random one still makes redis-py's own retries safe.
        once_key = f"{stream_key}:pub:{idempotency_key or secrets.token_hex(12)}"
        keys: list[str | bytes] = [
            seq_key,
            stream_key,
            epoch_key,
            self._channel_prefix + channel.encode(),
            once_key,
        ]
        args: list[str | bytes | int] = [
            body,
            max(policy.size, 1),
            max(int(policy.ttl * 1000), 1),
            new_epoch(),
            b" %d" % now_us(),  # envelope header: no excluded client, the publish time
        ]
        if self._publish_script is None:
            # EVALSHA after the first call: the script text is not resent with every message.
            self._publish_script = client.register_script(_PUBLISH_STORED)
        try:
            offset, epoch = await self._publish_script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"publish to {channel!r} failed: {exc}") from exc
        return Stored(int(offset), epoch.decode() if isinstance(epoch, bytes) else str(epoch))

    async def history(
        self, channel: str, since: int | None, epoch: str | None, limit: int
    ) -> HistoryPage:
        seq_key, stream_key, epoch_key = self._history_keys(channel)
        try:
            async with self._require_client().pipeline(transaction=True) as pipe:
                pipe.get(seq_key)
                pipe.get(epoch_key)
                pipe.xrange(stream_key)
                top_raw, epoch_raw, raw_entries = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"history of {channel!r} failed: {exc}") from exc
        entries = [(int(entry_id.split(b"-")[1]), fields[b"d"]) for entry_id, fields in raw_entries]
        return build_page(
            entries,
            since=since,
            wanted_epoch=epoch,
            epoch=epoch_raw.decode() if epoch_raw else "",
            top=int(top_raw or 0),
            limit=limit,
        )

    async def subscribe(self, channel: str) -> None:
        pubsub = self._require_pubsub()
        key = self._channel_prefix + channel.encode()
        confirmed = self._confirmations.get(key)
        if confirmed is None or confirmed.done():
            confirmed = asyncio.get_running_loop().create_future()
            self._confirmations[key] = confirmed
        # From here on the SUBSCRIBE may reach Redis whatever happens to this call (an error, a
        # timeout, a cancelled caller), so the channel stays on the books until the hub
        # unsubscribes it: books and Redis never disagree for good.
        self._channels.add(channel)
        try:
            await pubsub.subscribe(key)
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                await asyncio.shield(confirmed)
        except (RedisError, OSError, TimeoutError) as exc:
            if self._confirmations.get(key) is confirmed:
                del self._confirmations[key]
            raise BrokerUnavailable(f"subscribe to {channel!r} failed: {exc!r}") from exc
        except BaseException:
            if self._confirmations.get(key) is confirmed:
                del self._confirmations[key]
            raise

    async def unsubscribe(self, channel: str) -> None:
        pubsub = self._require_pubsub()
        self._channels.discard(channel)
        key = self._channel_prefix + channel.encode()
        try:
            await pubsub.unsubscribe(key)
        except (RedisError, OSError) as exc:
            # The connection is broken, so Redis drops the subscription with it; make sure
            # redis-py does not restore it when it reconnects.
            pubsub.channels.pop(key, None)
            log.warning("unsubscribe from %r failed: %s", channel, exc)

    async def check(self) -> dict[str, object]:
        client = self._require_client()
        if self._deliver is not None and (self._reader is None or self._reader.done()):
            raise BrokerUnavailable("the subscription reader is not running")
        if self._read_error is not None:
            raise BrokerUnavailable(f"subscriber connection lost: {self._read_error}")
        if self._probe_error is not None:
            raise BrokerUnavailable(f"liveness probe failed: {self._probe_error}")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(2.0):
                await client.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            raise BrokerUnavailable(f"PING failed: {exc!r}") from exc
        return {
            "ok": True,
            "backend": "redis",
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }

    @property
    def subscriptions(self) -> frozenset[str]:
        return frozenset(self._channels)

    @property
    def url(self) -> str:
        return redact_url(self._url)

    # -- the one reader --------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        """Read the subscriber connection forever; hand messages to ``deliver``.

        On a connection error redis-py reconnects and re-subscribes every tracked channel on the
        next read, so the loop only backs off and tries again.
        """
        pubsub = self._require_pubsub()
        failures = 0
        while not self._closing:
            try:
                message = await pubsub.get_message(timeout=READ_TIMEOUT)
            except Exception as exc:  # the only reader must survive anything (logged)
                failures += 1
                if self._read_error is None:
                    log.warning("broker subscriber connection lost: %s", exc)
                self._read_error = repr(exc)
                await self._drop_subscriber_connection()
                delay = min(5.0, 0.1 * 2 ** min(failures, 6)) * random.uniform(0.5, 1.0)
                await asyncio.sleep(delay)
                continue
            if failures:
                failures = 0
                self.reconnects += 1
                self._read_error = None
                log.info("broker subscriber connection restored")
            if message is not None:
                self._handle(message)
            if self._rebuild_requested:
                self._rebuild_requested = False
                await self._drop_subscriber_connection()

    async def _drop_subscriber_connection(self) -> None:
        """Close the subscriber socket; the reader's next read reconnects and redis-py then
        re-subscribes every channel it tracks."""
        pubsub = self._pubsub
        if pubsub is not None and pubsub.connection is not None:
            try:
                await pubsub.connection.disconnect()
            except Exception as exc:  # a socket we are throwing away anyway
                log.debug("closing the subscriber connection failed: %r", exc)

    # -- liveness --------------------------------------------------------------------------------

    async def _probe_loop(self) -> None:
        """Publish to this node's own channel and expect it back through the subscriber.

        Socket errors are not enough to notice a dead subscriber: a frozen Redis (SIGSTOP, a
        stuck failover) raises nothing, and a killed subscriber connection may be replaced
        silently. Only a message that makes the round trip proves the node can still receive.
        When one does not come back in time, the subscriber connection is dropped and rebuilt.
        """
        client = self._require_client()
        sent = 0
        while not self._closing:
            await asyncio.sleep(self._probe_interval)
            sent += 1
            try:
                async with asyncio.timeout(self._probe_timeout):
                    await client.publish(self._node_key, b"probe %d" % sent)
                    while self._probe_seen < sent:
                        self._probe_echo.clear()
                        await self._probe_echo.wait()
            except (TimeoutError, RedisError, OSError) as exc:
                problem = "no answer in time" if isinstance(exc, TimeoutError) else repr(exc)
                if self._probe_error is None:
                    log.warning("broker liveness probe failed (%s); reconnecting", problem)
                self._probe_error = problem
                self._rebuild_requested = True
                self.reconnects += 1
                continue
            if self._probe_error is not None:
                log.info("broker liveness probe answered again")
                self._probe_error = None

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        key: bytes = message["channel"]
        if kind == "message" and key == self._node_key:
            _, _, number = bytes(message["data"]).partition(b" ")
            if number.isdigit():
                self._probe_seen = max(self._probe_seen, int(number))
                self._probe_echo.set()
        elif kind == "message" and key.startswith(self._channel_prefix):
            deliver = self._deliver
            if deliver is None:
                return
            channel = key[len(self._channel_prefix) :].decode()
            try:
                deliver(channel, message["data"])
            except Exception:  # a bug in one delivery must not kill the only reader
                log.exception("delivery to channel %r failed", channel)
        elif kind == "subscribe":
            log.debug("subscribe confirmation for %r", key)
            confirmed = self._confirmations.pop(key, None)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
            elif confirmed is None and key.startswith(self._channel_prefix):
                # Nobody asked: redis-py re-subscribed after losing the connection, and
                # whatever was published in between never reached this node.
                channel = key[len(self._channel_prefix) :].decode()
                if channel in self._channels and self._on_gap is not None:
                    log.info("subscription of %r re-established; members may have a gap", channel)
                    self._on_gap(channel)

    def _require_client(self) -> aioredis.Redis:
        if self._client is None:
            raise BrokerUnavailable("broker is not open")
        return self._client

    def _require_pubsub(self) -> PubSub:
        if self._pubsub is None:
            raise RuntimeError("broker opened publish-only; pass deliver to open() to subscribe")
        return self._pubsub
