"""The backends a node's settings name: broker (with its history), presence, per-user limiter.

One factory, :func:`create_backends`, builds them all from one :class:`~.config.FeedsConfig`.
It dispatches on the broker URL as the config read it (``config.broker_address``): no other
module looks at the URL's scheme. Nothing connects until :meth:`Backends.open`, and
:meth:`Backends.aclose` releases every connection the backends hold.

This module must never import redis-py itself: the Redis classes are loaded (lazily, by the
backend packages) only for a Redis URL, so a ``memory://`` server runs without them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .brokers import Broker, MemoryBus, create_broker
from .brokers.base import DeliverFn, GapFn
from .config import FeedsConfig
from .presence import Presence, create_presence
from .ratelimit import MemoryUserLimiter, RedisUserLimiter, UserLimiter

__all__ = ["Backends", "create_backends", "create_broker_for"]


@dataclass(eq=False)
class Backends:
    """The backends of one node. ``await open(...)``, then ``await aclose()``."""

    broker: Broker
    presence: Presence
    user_limiter: UserLimiter | None
    """Shared by every connection of a user (``--user-rate-limit``); None when off."""

    async def open(self, deliver: DeliverFn | None = None, on_gap: GapFn | None = None) -> None:
        """Connect the broker (subscribing through ``deliver``), presence and limiter.

        If one fails, the ones already open are closed again before the error propagates.
        """
        try:
            await self.broker.open(deliver, on_gap)
            await self.presence.open()
            if self.user_limiter is not None:
                await self.user_limiter.open()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Release every connection, in the reverse order of ``open``. Idempotent.

        Each backend is closed even when closing an earlier one fails; the first error is raised
        after all were tried.
        """
        closers = [self.presence.aclose, self.broker.aclose]
        if self.user_limiter is not None:
            closers.insert(0, self.user_limiter.aclose)
        failure: BaseException | None = None
        for close in closers:
            try:
                await close()
            except BaseException as exc:  # closing the others still matters; re-raised below
                failure = failure or exc
        if failure is not None:
            raise failure


def create_broker_for(
    config: FeedsConfig, *, node_id: str = "", bus: MemoryBus | None = None
) -> Broker:
    """The broker ``config`` names, with its history policy and liveness probe settings.

    Also what a publish-only program (``sanic-feeds publish``) uses.
    """
    return create_broker(
        config.broker_address,
        prefix=config.redis_prefix,
        node_id=node_id,
        bus=bus,
        probe_interval=config.broker_probe_interval,
        probe_timeout=config.broker_probe_timeout,
        history=config.channel_namespaces.history_rules,
    )


def create_backends(config: FeedsConfig, *, node_id: str, bus: MemoryBus | None = None) -> Backends:
    """Build (not connect) the backends ``config`` names, for the node ``node_id``.

    For ``memory://`` the broker and presence live on ``bus`` (a new one if not given): nodes of
    one process that share a bus see each other as one cluster. The per-user limiter counts in
    this process for ``memory://`` and ``nats://``, and in Redis (or the Redis Cluster) otherwise.
    """
    bus = bus if bus is not None else MemoryBus()
    address = config.broker_address
    broker = create_broker_for(config, node_id=node_id, bus=bus)
    presence = create_presence(
        address, prefix=config.redis_prefix, shared=bus.presence, max_age=config.node_ttl
    )
    user_limiter: UserLimiter | None = None
    rate = config.user_rate_limit
    if rate is not None:
        if address.kind in ("memory", "nats"):
            # NATS has no atomic counters to share: the limit then holds per node.
            user_limiter = MemoryUserLimiter(rate)
        else:
            user_limiter = RedisUserLimiter(
                rate,
                address.url,
                config.redis_prefix,
                cluster=address.kind == "redis-cluster",
            )
    return Backends(broker, presence, user_limiter)
