"""A node: one server process's broker, presence, hub and connections, and their lifecycle.

The node is the seam between the Sanic glue (``extension.py``) and everything else. It owns the
background work of the process: the broker reader (inside the broker) and the room reporter. It
can be started and stopped without Sanic, which is how the hub and broker are stress-tested.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import protocol
from .admission import Admission, UserSlots
from .backends import Backends, create_backends
from .brokers import MemoryBus
from .channels import CHANNEL_RULES, is_valid_channel
from .config import FeedsConfig
from .control import CONTROL_CHANNEL
from .control_dispatch import ControlDispatch
from .count_reaper import CountReaper
from .drain import close_gradually
from .envelope import seal
from .errors import BrokerUnavailable, FeedsError
from .history import Stored
from .host import Attached, ChannelMember, Participant
from .hub import Hub
from .keepalive import keep_alive
from .log_every import LogEvery
from .membership import Memberships
from .outbound import Flusher
from .permissions import Permissions
from .presence import Member, Presence, RoomTotals
from .room_reports import RoomReporter, node_facts
from .session_state import JoinOutcome, Limits
from .tasks import cancel_and_wait

log = logging.getLogger(__name__)

REFUSAL_LOG_EVERY = 10.0
"""Seconds between two log lines about refused publishes (an outage must not flood the log)."""

WITHDRAW_TIMEOUT = 2.0
"""Seconds a stopping node waits to withdraw its presence report: where the backend does not
answer (a black-holed connection waits out its whole socket timeout), the report expires on
its own after ``node_ttl``, so a deploy need not wait."""


async def withdraw_report(presence: Presence, node_id: str) -> None:
    """Withdraw a stopping node's presence report, within :data:`WITHDRAW_TIMEOUT`."""
    try:
        async with asyncio.timeout(WITHDRAW_TIMEOUT):
            await presence.withdraw(node_id)
    except (BrokerUnavailable, TimeoutError) as exc:
        log.warning("could not withdraw room report: %r", exc)


@dataclass
class NodeStats:
    """Plain counters, read by the metrics collector when scraped (no cost per event)."""

    client_messages: int = 0
    """Frames received from clients."""
    connections_opened: int = 0
    slow_disconnects: int = 0
    rate_limited: int = 0
    publishes_refused: int = 0
    """Chats and publishes the broker could not take (``broker_unavailable``)."""
    observe_high_water: Callable[[int], None] | None = None
    """Called with a connection's buffer high-water mark when it closes."""


def new_node_id() -> str:
    """Unique per process and readable in logs: host, pid and a random suffix."""
    host = socket.gethostname().split(".")[0][:24] or "node"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def session_limits(config: FeedsConfig) -> Limits:
    """The settings every session's state machine enforces."""
    return Limits(
        max_channels=config.max_channels,
        message_rate=config.rate_limit,
        rate_limit_text=str(config.rate_limit),
        rate_limit_violations=config.rate_limit_violations,
        permissions=Permissions(config.channel_namespaces, config.insecure),
    )


class Node:
    """Everything one process needs to serve feeds. Create, ``await start()``, ``await stop()``."""

    def __init__(self, config: FeedsConfig, *, bus: MemoryBus | None = None) -> None:
        """``bus``: for ``memory://``, nodes of one process that share it form one cluster."""
        self.config = config
        self.id = new_node_id()
        self.backends: Backends = create_backends(config, node_id=self.id, bus=bus)
        """Broker, presence and per-user limiter, opened by ``start``, released by ``stop``."""
        self.broker = self.backends.broker
        self.presence = self.backends.presence
        self.user_limiter = self.backends.user_limiter
        self.namespaces = config.channel_namespaces
        self.hub = Hub(self.broker, self.namespaces.history_rules.widest.size)
        self.notices_for: Callable[[str], bool] = config.notices_for()
        self.sessions: dict[str, Attached] = {}
        self.control = ControlDispatch(self.broker)
        """This node's sessions by user, and the server API's commands to them."""
        self.hub.taps[CONTROL_CHANNEL] = self.control.receive
        self.started_at = time.time()
        self._flusher: Flusher | None = None
        self.reporter = RoomReporter(
            self.presence,
            self.id,
            config.node_ttl,
            lambda: {**self.hub.rooms(), **node_facts(self.started_at, self.control.users)},
            lambda: len(self.sessions),
            lambda channel: list(self.hub.records(channel).values()),
            self.hub.record_channels,
        )
        self.hub.on_change = self.reporter.changed_channel
        self._pinger: asyncio.Task[None] | None = None
        self._cleanups: set[asyncio.Future[None]] = set()
        self.stats = NodeStats()
        self.limits = session_limits(config)
        """What every session's state machine enforces."""
        self.memberships = Memberships(
            self.hub,
            self.broker,
            client_buffer=config.client_buffer,
            options_for=self.namespaces.options,
            notices_for=self.notices_for,
            node_id=self.id,
            reported=self.reporter.reported,
            others_in=self._others_in,
        )
        # Joins with the stream position in their reply, and history reads: as they are.
        self.join_at = self.memberships.join_at
        self.read_history = self.broker.history
        self._admission = Admission(config.max_connections, config.connect_rate)
        self.user_slots = UserSlots(
            self.presence, self.id, config.user_connection_limit, self.reporter.changed
        )
        """Connections per user over the cluster; sessions take a slot once authenticated."""
        self.reaper = CountReaper(self.presence, self.id, config.node_ttl / 3)
        """Settles the counts of nodes that stopped reporting (run where anything counts)."""
        self.reaper.recount.holders.append(self.user_slots)
        self.reporter.on_lapse = self.reaper.recount.lapsed
        self.draining = False
        self.started = False
        self.client_buffer = config.client_buffer
        self.close_timeout = config.close_timeout
        self._refusals_log = LogEvery(REFUSAL_LOG_EVERY)

    @property
    def flusher(self) -> Flusher:
        if self._flusher is None:
            raise FeedsError("the node is not started")
        return self._flusher

    async def start(self) -> None:
        self._flusher = Flusher(asyncio.get_running_loop(), self.config.flush_interval)
        await self.backends.open(self.hub.deliver, self.hub.gap)
        self.started_at = time.time()
        await self.control.open()
        self.reporter.start()
        # Listed among the live nodes before the first connection: what other nodes count
        # per node (a user's connections) is only believed for nodes with a report.
        await self.reporter.reported()
        if self.config.user_connection_limit or self.config.webhook_endpoint:
            self.reaper.start()
        if self.config.ping_interval > 0:
            sweep = keep_alive(self.sessions, self.config.ping_interval, self.config.ping_timeout)
            self._pinger = asyncio.create_task(sweep, name="sanic-feeds:keepalive")
        self.started = True
        log.info("node %s started on broker %s", self.id, self.broker.url)

    def track(self, cleanup: asyncio.Future[None]) -> asyncio.Future[None]:
        """Keep a connection's cleanup task alive until it ends; ``stop`` waits for it."""
        self._cleanups.add(cleanup)
        cleanup.add_done_callback(self._cleanups.discard)
        return cleanup

    async def stop(self) -> None:
        """Stop background work and release the broker. Sockets are closed by ``drain`` first."""
        if self._cleanups:
            await asyncio.wait(set(self._cleanups), timeout=self.config.close_timeout)
        self.started = False
        await self.reporter.stop()
        await self.reaper.stop()
        pinger, self._pinger = self._pinger, None
        await cancel_and_wait(pinger)
        await withdraw_report(self.presence, self.id)
        await self.backends.aclose()
        log.info("node %s stopped", self.id)

    async def drain(self, code: int = protocol.CloseCode.GOING_AWAY, reason: str = "") -> None:
        """Close every connection (default 1001, "going away") and wait for their handlers.

        Waiting matters: a handler still leaving its channels (and publishing ``user_left``) when
        the server cancels its tasks would leave the cluster with stale members.
        """
        self.draining = True  # new connections are turned away from now on
        await close_gradually(
            list(self.sessions.values()),
            code,
            reason or "server shutting down",
            self.config.drain_time,
            self.config.close_timeout,
        )

    def admission_refused(self) -> str | None:
        """Why a new connection is turned away (cap or connection rate), or None."""
        return self._admission.refused(len(self.sessions))

    # -- what sessions use (the Host interface) --------------------------------------------------

    def attach(self, session: Attached) -> None:
        self.sessions[session.id] = session
        self.control.attach(session)
        self.stats.connections_opened += 1

    def detach(self, session: Attached, high_water: int) -> None:
        self.sessions.pop(session.id, None)
        self.control.detach(session)
        self.reporter.changed()
        if self.stats.observe_high_water is not None:
            self.stats.observe_high_water(high_water)

    def tally(self, counter: str) -> None:
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)

    async def join(
        self,
        member: Participant,
        channel: str,
        since: int | None,
        epoch: str | None,
        greeting: tuple[bytes, ...] | None,
        ack: bytes | None = None,
    ) -> JoinOutcome:
        return await self.memberships.join(member, channel, since, epoch, greeting, ack)

    async def resync(
        self, member: Participant, channel: str, since: int, epoch: str | None
    ) -> None:
        await self.memberships.resync(member, channel, since, epoch)

    async def leave(self, member: ChannelMember, channel: str) -> None:
        await self.memberships.leave(member, channel)

    async def leave_all(self, member: ChannelMember, channels: list[str]) -> None:
        await self.memberships.leave_all(member, channels)

    async def user_wait(self, user_key: str) -> float:
        limiter = self.user_limiter
        return 0.0 if limiter is None else await limiter.take(user_key)

    async def read_presence(self, channel: str) -> list[dict[str, object]]:
        return [member.public() for member in await self.channel_members(channel)]

    # -- publishing ------------------------------------------------------------------------------

    async def publish(
        self,
        channel: str,
        data: object,
        idempotency_key: str | None = None,
        skip_history: bool = False,
    ) -> Stored | None:
        """Deliver ``{"type": "data", "channel", "data"}`` to every member on every node; return
        where it was stored (None: history is off, or ``skip_history``).

        ``ValueError`` for an invalid channel name, :class:`UnknownNamespace` (a ``ValueError``
        too) for a channel of a namespace that is not configured.
        """
        self.check_channel(channel)
        body = protocol.data(channel, data)
        return await self.publish_message(channel, body, idempotency_key, skip_history)

    def check_channel(self, channel: str) -> None:
        """Raise ``ValueError`` unless ``channel`` is a valid name of a known namespace."""
        if not is_valid_channel(channel):
            raise ValueError(f"invalid channel name {channel!r}; channel names are {CHANNEL_RULES}")
        self.namespaces.options(channel)  # raises UnknownNamespace

    async def publish_message(
        self,
        channel: str,
        body: bytes,
        idempotency_key: str | None = None,
        skip_history: bool = False,
    ) -> Stored | None:
        """Publish a chat or data message: stored in history (with an id) unless history is off."""
        try:
            if self.namespaces.history_rules.for_channel(channel).size > 0 and not skip_history:
                return await self.broker.publish_stored(channel, body, idempotency_key)
            await self.broker.publish(channel, seal(body))
            return None
        except BrokerUnavailable as exc:
            self.stats.publishes_refused += 1
            if self._refusals_log.due():
                log.warning("publish refused (%d so far): %s", self.stats.publishes_refused, exc)
            raise

    # -- rooms -----------------------------------------------------------------------------------

    async def channel_members(self, channel: str) -> list[Member]:
        """Who is in ``channel`` on every node: live here, reported by the others."""
        others = await self.presence.members(channel, exclude_node=self.id)
        return [*self.hub.records(channel).values(), *others]

    async def _others_in(self, channel: str) -> int:
        """Members of ``channel`` that the other nodes report."""
        return len(await self.presence.members(channel, exclude_node=self.id))

    async def cluster_rooms(self) -> RoomTotals:
        """Members per channel and connected clients over the whole cluster.

        This node's live numbers are used for itself; other nodes' come from their reports.
        """
        totals = await self.presence.rooms(exclude_node=self.id)
        totals.add(self.hub.rooms(), len(self.sessions))
        return totals

    # -- health ----------------------------------------------------------------------------------

    async def health(self) -> tuple[bool, dict[str, object]]:
        """Whether this node serves (the broker answers a probe), and the details for /health."""
        return await health_of(self)

    def identified(self, session: Attached, previous_key: str) -> None:
        """A session's user became known after it opened (a protocol that authenticates in
        its first command): the server API finds it by its user from now on."""
        self.control.rekey(session, previous_key)


async def health_of(node: Node) -> tuple[bool, dict[str, object]]:
    """A node's health: the broker's check (a round trip through it) and its numbers."""
    broker: dict[str, object] = {"url": node.broker.url}
    try:
        broker.update(await node.broker.check())
    except BrokerUnavailable as exc:
        broker.update(ok=False, error=str(exc))
    ok = bool(broker.get("ok")) and node.started
    return ok, {
        "status": "ok" if ok else "unavailable",
        "node": node.id,
        "broker": broker,
        "connections": len(node.sessions),
        "channels": len(node.hub.rooms()),
        "subscriptions": len(node.broker.subscriptions - {CONTROL_CHANNEL}),
        "tasks": len(asyncio.all_tasks()),
    }
