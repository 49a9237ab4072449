"""One master of a Redis Cluster as the broker uses it: commands, sharded pub/sub, a probe.

Per master the node holds what it holds for a single Redis: a :class:`~.redis_commands.CommandPool`
(batched once per loop turn), and, for a subscribing node, a sharded
:class:`~.redis_subscriber.Subscriber` on one of the pool's connections, with its own
:class:`~.redis_probe.LivenessProbe`. The
probe's channel carries a hash tag whose slot this master serves (a shard channel reaches only
its own shard), so each master's subscriber is proven alive on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..errors import BrokerUnavailable
from .cluster_slots import Address
from .redis_commands import CommandPool
from .redis_probe import LivenessProbe
from .redis_subscriber import SHARDED, Refused, Subscriber
from .resp import Endpoint

log = logging.getLogger(__name__)


class Shard:
    """``await open()``, then ``commands`` and (if subscribing) ``subscriber``; ``aclose()``."""

    def __init__(
        self,
        address: Address,
        endpoint: Endpoint,
        *,
        client_name: str,
        connections: int,
        command_timeout: float,
        max_in_flight: int,
    ) -> None:
        self.address = address
        self.endpoint = endpoint
        self.commands = CommandPool(
            endpoint,
            connections=connections,
            max_in_flight=max_in_flight,
            command_timeout=command_timeout,
            client_name=client_name,
        )
        self.subscriber: Subscriber | None = None
        self.probe: LivenessProbe | None = None
        self.probe_key = b""
        self.closed = False

    def __repr__(self) -> str:
        return f"<Shard {self.address[0]}:{self.address[1]}>"

    async def open(self) -> None:
        """Connect the command pool (``BrokerUnavailable`` when the master cannot be reached)."""
        await self.commands.open()

    async def open_subscriber(
        self,
        probe_key: bytes,
        on_message: Callable[[bytes, bytes], None],
        on_resubscribed: Callable[[bytes], None],
        on_refused: Callable[[Refused], None],
        on_dropped: Callable[[bytes], None],
        *,
        confirm_timeout: float,
        probe_interval: float,
        probe_timeout: float,
    ) -> None:
        """Subscribe this master's probe channel and start probing through it."""
        subscriber = Subscriber(
            self.commands,
            on_message,
            on_resubscribed,
            confirm_timeout=confirm_timeout,
            mode=SHARDED,
            on_refused=on_refused,
            on_dropped=on_dropped,
        )
        self.subscriber = subscriber
        await subscriber.open(probe_key)
        self.probe_key = probe_key
        self.probe = LivenessProbe(
            self.commands,
            subscriber,
            probe_key,
            interval=probe_interval,
            timeout=probe_timeout,
            publish=b"SPUBLISH",
        )
        self.probe.start()

    @property
    def error(self) -> str | None:
        """Why this master cannot be counted on now, or None."""
        subscriber = self.subscriber
        if subscriber is not None and subscriber.error is not None:
            return f"subscriber connection lost: {subscriber.error}"
        if self.probe is not None and self.probe.error is not None:
            return f"liveness probe failed: {self.probe.error}"
        if self.commands.connected == 0:
            return "no command connection"
        return None

    def require_subscriber(self) -> Subscriber:
        if self.subscriber is None:
            raise BrokerUnavailable(f"{self!r} has no subscriber")
        return self.subscriber

    async def aclose(self) -> None:
        """Stop the probe and close every connection. What waits for a connection fails with
        :class:`~.redis_commands.NotSent`, so the router can send it to the slot's new master."""
        self.closed = True
        if self.probe is not None:
            await self.probe.stop()
        if self.subscriber is not None:
            await self.subscriber.aclose()
        await self.commands.aclose()
