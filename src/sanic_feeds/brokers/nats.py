"""NATS broker: core NATS subjects between the nodes, history on JetStream.

Channel ``c`` is the core subject ``<prefix>.ch.<token of c>`` (see ``nats_subjects.py``); its
history is the JetStream subject ``<prefix>.hist.<token>`` (see ``nats_history.py``). A node
holds one connection (nats-py's): every publish, every subscription, and its liveness probe.

nats-py re-subscribes every subscription after a reconnect; messages published meanwhile never
reached this node, so every subscribed channel is reported to ``on_gap`` then, and so is a
channel whose subscription dropped messages as a slow consumer. A frozen server raises nothing:
the probe publishes to the node's own subject every ``probe_interval`` and expects it back
within ``probe_timeout``, and nats-py's pings (at the same interval) drop a silent connection.

What it must never do: subscribe a wildcard and filter locally, or keep reporting healthy while
its probe does not come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import SlowConsumerError
from nats.js import JetStreamContext

from ..errors import BrokerUnavailable
from ..history import HistoryPage, HistoryPolicy, HistoryRules, Stored
from ..nats_urls import nats_servers, nats_tls
from ..redaction import redact_url
from .base import DeliverFn, GapFn
from .nats_connect import first_connection
from .nats_history import StreamHistory
from .nats_probe import NatsProbe
from .nats_subjects import to_token
from .networked import NetworkBroker

log = logging.getLogger(__name__)

CONFIRM_TIMEOUT = 5.0
"""Seconds the server has to confirm a subscription or a publish (one PING/PONG)."""

HEALTH_TIMEOUT = 2.0
"""Seconds ``check()`` waits for the server's PONG (as the Redis broker waits for its PING)."""

PENDING_MESSAGES = 100_000
"""Messages one subscription may hold before nats-py drops them (then: a gap)."""


class NatsBroker(NetworkBroker):
    """Broker on NATS; see the module docstring."""

    def __init__(
        self,
        url: str,
        prefix: str = "sanic-feeds:",
        node_id: str = "",
        *,
        probe_interval: float = 2.0,
        probe_timeout: float = 3.0,
        history: HistoryPolicy | HistoryRules | None = None,
    ) -> None:
        super().__init__(
            url,
            prefix,
            node_id,
            probe_interval=probe_interval,
            probe_timeout=probe_timeout,
            history=history,
        )
        self._servers = nats_servers(url)
        self._shown = redact_url(url, secret_user=True)  # a user part alone is a token
        token = to_token(prefix.rstrip(":.") or "feeds")
        self._live_prefix = f"{token}.ch."
        self._node_subject = f"{token}.node.{to_token(self._node)}"
        self._name = f"sanic-feeds:{self._node}"
        self._streams = StreamHistory(token, to_token(self._node), self.history_rules)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._deliver: DeliverFn | None = None
        self._on_gap: GapFn | None = None
        self._subs: dict[str, Subscription] = {}
        self._channels: dict[str, str] = {}  # live subject -> channel, for every subscribed one
        self._probe: NatsProbe | None = None
        self._next_flush: asyncio.Task[None] | None = None
        self._reconnects = 0
        self.error: str | None = None  # why the connection is down now, or None

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self, deliver: DeliverFn | None = None, on_gap: GapFn | None = None) -> None:
        self._deliver = deliver
        self._on_gap = on_gap
        self.error = None
        self._nc = await first_connection(
            "cannot connect to NATS",
            self._servers,
            name=self._name,
            ping_interval=max(1, round(self._probe_interval)),
            max_outstanding_pings=2,
            disconnected_cb=self._disconnected,
            reconnected_cb=self._reconnected,
            error_cb=self._error,
            tls=nats_tls(self._url),
        )
        self._js = self._nc.jetstream()
        try:
            await self._streams.open(self._js)
            if deliver is not None:
                probe = NatsProbe(
                    lambda: self._nc, self._node_subject, self._probe_interval, self._probe_timeout
                )
                await self._nc.subscribe(self._node_subject, cb=probe.echo)
                await self._flush()
                self._probe = probe
                probe.start()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._probe is not None:
            await self._probe.stop()
            self._probe = None
        self._subs.clear()
        self._channels.clear()
        nc, self._nc = self._nc, None
        self._js = None
        self._deliver = None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(NatsError, OSError, asyncio.CancelledError):
                await nc.close()

    @property
    def reconnects(self) -> int:
        return self._reconnects

    def statistics(self) -> dict[str, int]:
        return {"conflicts": self._streams.conflicts, "lost_replies": self._streams.lost_acks}

    # -- publish / subscribe ---------------------------------------------------------------------

    def _live_subject(self, channel: str) -> str:
        return self._live_prefix + to_token(channel)

    def _require(self) -> tuple[Client, JetStreamContext]:
        nc, js = self._nc, self._js
        if nc is None or js is None or nc.is_closed:
            raise BrokerUnavailable("the broker is not open")
        if not nc.is_connected:
            raise BrokerUnavailable(f"not connected to NATS ({self.error or 'reconnecting'})")
        return nc, js

    async def publish(self, channel: str, payload: bytes) -> None:
        nc, _ = self._require()
        try:
            await nc.publish(self._live_subject(channel), payload)
        except (NatsError, OSError) as exc:
            raise BrokerUnavailable(f"publish to {channel!r} failed: {exc!r}") from exc
        await self._flush()

    async def _flush(self) -> None:
        """Wait until the server has read everything written so far (the callers of one loop
        turn share one PING: the flush starts in the next turn, after all of their writes)."""
        pending = self._next_flush
        if pending is None:
            pending = self._next_flush = asyncio.ensure_future(self._flush_once())
        try:
            await asyncio.shield(pending)
        except (NatsError, OSError, TimeoutError) as exc:
            raise BrokerUnavailable(
                f"NATS did not confirm in {CONFIRM_TIMEOUT:g} s: {exc!r}"
            ) from exc

    async def _flush_once(self) -> None:
        self._next_flush = None
        nc, _ = self._require()
        await nc.flush(timeout=CONFIRM_TIMEOUT)  # type: ignore[arg-type]  # typed int, takes seconds

    async def publish_stored(
        self, channel: str, body: bytes, idempotency_key: str | None = None
    ) -> Stored:
        nc, js = self._require()
        token = to_token(channel)
        stored, live = await self._streams.publish_stored(
            js, channel, self._streams.subject(token), body, idempotency_key
        )
        if live is not None:
            try:
                await nc.publish(self._live_prefix + token, live)
            except (NatsError, OSError) as exc:
                # Stored already: members find it in the history at their next gap or resync.
                log.warning("live publish of a stored message to %r failed: %r", channel, exc)
        return stored

    async def history(
        self, channel: str, since: int | None, epoch: str | None, limit: int
    ) -> HistoryPage:
        _, js = self._require()
        subject = self._streams.subject(to_token(channel))
        return await self._streams.history(js, channel, subject, since, epoch, limit)

    async def remove_history(self, channel: str) -> None:
        js = self._require()[1]
        await self._streams.remove(js, channel, self._streams.subject(to_token(channel)))

    async def subscribe(self, channel: str) -> None:
        if self._deliver is None:
            raise RuntimeError("broker opened publish-only; pass deliver to open() to subscribe")
        nc = self._nc
        if nc is None or nc.is_closed:
            raise BrokerUnavailable("the broker is not open")
        subject = self._live_subject(channel)
        if channel not in self._subs:
            # On the books from here on: nats-py subscribes it again after any reconnect.
            self._channels[subject] = channel
            try:
                self._subs[channel] = await nc.subscribe(
                    subject, cb=self._on_message, pending_msgs_limit=PENDING_MESSAGES
                )
            except (NatsError, OSError) as exc:
                self._channels.pop(subject, None)
                raise BrokerUnavailable(f"subscribe to {channel!r} failed: {exc!r}") from exc
        await self._flush()

    async def unsubscribe(self, channel: str) -> None:
        self._channels.pop(self._live_subject(channel), None)
        sub = self._subs.pop(channel, None)
        if sub is not None:
            with contextlib.suppress(NatsError, OSError):
                await sub.unsubscribe()

    async def check(self) -> dict[str, object]:
        self._require()
        problem = self.error or (self._probe.error if self._probe is not None else None)
        if problem is not None:
            raise BrokerUnavailable(problem)
        started = time.perf_counter()
        try:
            # A frozen server answers nothing: /health must not wait the whole CONFIRM_TIMEOUT
            # for the flush (which goes on, shielded, for the publishers sharing it).
            async with asyncio.timeout(HEALTH_TIMEOUT):
                await self._flush()
        except TimeoutError as exc:
            raise BrokerUnavailable(f"NATS did not answer a PING in {HEALTH_TIMEOUT:g} s") from exc
        return {
            "ok": True,
            "backend": "nats",
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }

    @property
    def subscriptions(self) -> frozenset[str]:
        return frozenset(self._subs)

    @property
    def url(self) -> str:
        return self._shown

    # -- callbacks from nats-py ------------------------------------------------------------------

    async def _on_message(self, msg: Msg) -> None:
        channel = self._channels.get(msg.subject)
        deliver = self._deliver
        sub = self._subs.get(channel) if channel is not None else None
        # A message of an earlier subscription of the channel (left, joined again) is not ours.
        if channel is None or deliver is None or sub is None or sub._id != msg.sid:
            return
        try:
            deliver(channel, msg.data)
        except Exception:  # a bug in one delivery must not stop the subscription
            log.exception("delivery to channel %r failed", channel)

    async def _disconnected(self) -> None:
        if self._nc is not None and self.error is None:
            log.warning("NATS connection lost; reconnecting")
            self.error = "connection to NATS lost"

    async def _reconnected(self) -> None:
        self._reconnects += 1
        self.error = None  # the probe (when subscribing) judges whether messages come back
        log.info("NATS connection restored (%d channels)", len(self._subs))
        if self._on_gap is not None:
            for channel in tuple(self._subs):
                self._on_gap(channel)

    async def _error(self, exc: Exception) -> None:
        if isinstance(exc, SlowConsumerError):
            channel = self._channels.get(exc.subject)
            if channel is not None and self._on_gap is not None:
                self._on_gap(channel)
            return
        nc = self._nc
        if nc is None or not nc.is_connected:
            # A failed (re)connect attempt, every 0.2 s while NATS is down (the loss, or the
            # failed start, is reported once elsewhere).
            log.debug("NATS reconnect attempt failed: %r", exc)
            return
        log.warning("NATS client error: %r", exc)


__all__ = ["NatsBroker"]
