"""Commands to the right master of a Redis Cluster, and the slot map kept current.

The router holds one :class:`~.redis_shard.Shard` per master and sends each command to the
master of its route's slot, on that master's batching command pool: the hot path stays what it
is on a single Redis (one write per loop turn per connection), spread over the masters.

Redirects are followed only where they prove the command did not run:

- ``MOVED``: another master serves the slot. The map is read again and the command sent there.
- ``ASK``: the slot is being migrated and this key has gone already: the command is sent to the
  importing master once, preceded by ``ASKING``; the map does not change.
- ``TRYAGAIN`` (keys of one command split by a migration) and ``CLUSTERDOWN``: sent again shortly.
- :class:`~.redis_commands.NotSent` from a shard that was retired meanwhile (a failover gave its
  slots to a replica): sent to the new master.

Anything else, :class:`~.redis_commands.OutcomeUnknown` above all, goes back to the caller, whose
rules decide (a stored publish looks itself up by nonce; it is never sent blindly again).

The map is read again after a redirect, while any master is unhealthy (its connection lost, its
probe failing: a failover may be under way) every ``CHECK_INTERVAL``, and every
``REFRESH_INTERVAL`` regardless. ``on_layout`` hears of every reading, so the broker can move the
subscriptions whose slot has a new master.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace

from ..errors import BrokerUnavailable
from ..tasks import cancel_and_wait
from .cluster_slots import Address, SlotMap, key_slot, parse_redirect
from .redis_cluster_topology import Layout, discover
from .redis_commands import NotSent
from .redis_shard import Shard
from .resp import Endpoint, Reply, ReplyError

log = logging.getLogger(__name__)

CHECK_INTERVAL = 0.2
"""Seconds between two looks at the masters' health (and readings of the map while one fails)."""

REFRESH_INTERVAL = 5.0
"""Seconds between two readings of the map when nothing prompted one."""

MAX_REDIRECTS = 8
"""Redirects and retries one command may take before it fails with ``NotSent``."""

RETRY_DELAYS = (0.02, 0.05, 0.1, 0.2, 0.4, 0.5, 0.5, 0.5)
"""Seconds before each retry after ``TRYAGAIN`` or ``CLUSTERDOWN``: about 2 s in all, the
length of a slot's migration or of an election in a small cluster."""

OWNER_WAIT = 5.0
"""Seconds a command waits for a master of its slot (a failover under way) before ``NotSent``."""


class ClusterRouter:
    """``await open()``; ``call(command, route)``; ``await aclose()``."""

    def __init__(
        self,
        seeds: list[Endpoint],
        open_shard: Callable[[Address, SlotMap], Awaitable[Shard]],
        on_layout: Callable[[], None],
        slot_of: Callable[[str], int],
    ) -> None:
        self._seeds = seeds
        self._open_shard = open_shard
        self._on_layout = on_layout
        self._slot_of = slot_of
        self.slots = SlotMap(())
        self.shards: dict[Address, Shard] = {}
        self._known: dict[Address, None] = {}
        """Every node any layout named, masters and replicas: where to ask next time."""
        self._applying = asyncio.Lock()
        self._refreshing: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self._closing = False
        self.refreshes = 0
        self.redirects = 0

    async def open(self) -> None:
        """Read the layout and open every master; ``BrokerUnavailable`` with the reason."""
        self._closing = False
        layout = await discover(self._seeds, complete=True)
        await self._apply(layout)
        missing = layout.slots.masters - self.shards.keys()
        if missing:
            await self.aclose()
            names = ", ".join(f"{h}:{p}" for h, p in sorted(missing))
            raise BrokerUnavailable(f"cannot connect to the Redis Cluster master(s) {names}")
        self._watcher = asyncio.create_task(self._watch(), name="sanic-feeds:cluster-watch")

    async def aclose(self) -> None:
        self._closing = True
        await cancel_and_wait(self._watcher)
        self._watcher = None
        await cancel_and_wait(self._refreshing)
        shards, self.shards = list(self.shards.values()), {}
        for shard in shards:
            await shard.aclose()

    def wake(self) -> None:
        """Read the map again soon (a subscription was refused or dropped)."""
        self._wake.set()

    def owner(self, slot: int) -> Shard | None:
        """The open shard serving ``slot``, or None while there is none."""
        address = self.slots.owner(slot)
        shard = self.shards.get(address) if address is not None else None
        return shard if shard is not None and not shard.closed else None

    async def shard_for(self, slot: int) -> Shard:
        """The shard serving ``slot``, waiting (up to ``OWNER_WAIT``) for the map to name one."""
        deadline = time.monotonic() + OWNER_WAIT
        while (shard := self.owner(slot)) is None:
            if self._closing or time.monotonic() > deadline:
                raise NotSent(f"no Redis Cluster master serves slot {slot}")
            await self.refresh()
            if self.owner(slot) is None:
                await asyncio.sleep(CHECK_INTERVAL)
        return shard

    # -- commands ----------------------------------------------------------------------------

    async def call(
        self, command: bytes, route: str | None = None, *, carried: bool = False
    ) -> Reply:
        """Send ``command`` to the master of ``route``'s slot (to every master without a route:
        ``SCRIPT LOAD``) and return its reply. Raises as ``CommandPool.call`` does."""
        if route is None:
            replies = await asyncio.gather(*(s.commands.call(command) for s in self._open()))
            return replies[0] if replies else None
        slot = self._slot_of(route)
        asked: Shard | None = None
        for attempt in range(MAX_REDIRECTS):
            shard = asked or await self.shard_for(slot)
            try:
                return await shard.commands.call(
                    command, route, asking=asked is not None, carried=carried
                )
            except ReplyError as exc:
                asked = await self._redirected(exc, shard, slot, RETRY_DELAYS[attempt])
            except NotSent:
                if not shard.closed:
                    raise
                asked = None  # retired meanwhile: its slots have another master now
        raise NotSent(f"slot {slot}: still redirected after {MAX_REDIRECTS} tries")

    async def _redirected(
        self, error: ReplyError, shard: Shard, slot: int, delay: float
    ) -> Shard | None:
        """Act on an error reply that proves the command did not run; return the shard to ASK,
        or None to send to the slot's master. Any other error is raised again."""
        self.redirects += 1
        if error.code in ("TRYAGAIN", "CLUSTERDOWN"):
            if error.code == "CLUSTERDOWN":
                self.wake()
            await asyncio.sleep(delay)
            return None
        redirect = parse_redirect(str(error), shard.address[0])
        if redirect is None:
            self.redirects -= 1
            raise error
        if redirect.kind == "ASK":
            target = self.shards.get(redirect.address)
            if target is None:
                if not self.slots.slots_of(redirect.address):
                    # A new master importing its first slot: it has no shard yet (its probe
                    # channel needs a slot of its own). Refused, safely: the command did not run.
                    self.wake()
                    raise NotSent(f"slot {slot} is moving to a master not in the map yet")
                target = await self._open_shard(redirect.address, self.slots)
                self.shards[redirect.address] = target
            return target
        await self.refresh()
        if self.slots.owner(slot) != redirect.address:  # the node asked knew less than Redis
            await self._apply(Layout(self.slots.move(slot, redirect.address), frozenset()))
        return None

    # -- the layout --------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read the layout again (once, however many callers ask at the same time)."""
        running = self._refreshing
        if running is None or running.done():
            running = self._refreshing = asyncio.create_task(self._refresh())
        await asyncio.shield(running)

    async def _refresh(self) -> None:
        self.refreshes += 1
        try:
            layout = await discover(self._candidates(), complete=False)
        except BrokerUnavailable as exc:
            log.debug("Redis Cluster layout not read: %s", exc)
            return
        await self._apply(layout)

    def _candidates(self) -> Iterable[Endpoint]:
        """Healthy masters first (they know the latest layout), then every other node known."""
        seed = self._seeds[0]
        healthy = [s for s in self._open() if s.error is None]
        others = [a for a in self._known if a not in {s.address for s in healthy}]
        yield from (s.endpoint for s in healthy)
        for host, port in others:
            yield replace(seed, host=host, port=port)
        yield from self._seeds

    async def _apply(self, layout: Layout) -> None:
        """Open the new masters, take the map, let the broker move subscriptions, then close
        the shards that serve nothing any more (their waiting commands go to the new ones)."""
        async with self._applying:
            for node in layout.nodes:
                self._known[node] = None
            slots = layout.slots
            stale = [
                shard
                for address, shard in self.shards.items()
                if address not in slots.masters
                or (shard.probe_key and slots.owner(key_slot(shard.probe_key)) != address)
            ]
            changed = slots != self.slots
            for address in slots.masters:
                current = self.shards.get(address)
                if current is None or current in stale:
                    try:
                        self.shards[address] = await self._open_shard(address, slots)
                    except BrokerUnavailable as exc:
                        log.warning("Redis Cluster master %s:%d: %s", *address, exc)
                        self.shards.pop(address, None)
                        changed = True
            self.slots = slots
            if changed:
                log.info("Redis Cluster layout: %d masters", len(slots.masters))
            self._on_layout()
            for shard in stale:
                if self.shards.get(shard.address) is shard:
                    del self.shards[shard.address]
                await shard.aclose()

    async def _watch(self) -> None:
        last = time.monotonic()
        while not self._closing:
            try:
                async with asyncio.timeout(CHECK_INTERVAL):
                    await self._wake.wait()
            except TimeoutError:
                pass
            woken = self._wake.is_set()
            self._wake.clear()
            unhealthy = any(s.error is not None for s in self._open())
            missing = bool(self.slots.masters - self.shards.keys())
            now = time.monotonic()
            if woken or unhealthy or missing or now - last >= REFRESH_INTERVAL:
                last = now
                await self.refresh()

    def _open(self) -> list[Shard]:
        return [s for s in self.shards.values() if not s.closed]
