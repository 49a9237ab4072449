"""Asking a Redis Cluster for its layout: which master serves which slots, and which nodes exist.

Each question goes on a short connection of its own to one node (tried in turn until one
answers), not on a shard's command connection: the layout is asked for precisely when a master
may be dead, and a question queued behind its silent connection would wait as long as the
commands it is meant to rescue.

At start the answers also tell a node that cannot serve as a cluster broker, in one plain
sentence: a Redis without cluster mode, or one without sharded pub/sub (before 7.0).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, replace

from ..errors import BrokerUnavailable
from .cluster_slots import SLOTS, Address, SlotMap
from .resp import Endpoint, Reply, ReplyError, encode, open_connection

ASK_TIMEOUT = 2.0
"""Seconds one node may take to connect and answer."""

SHARDED_PUBSUB_SINCE = (7, 0)
"""The first Redis with ``SSUBSCRIBE`` / ``SPUBLISH``."""


class NotUsable(BrokerUnavailable):
    """The node answers, but it cannot serve as a cluster broker (no cluster mode, too old)."""


@dataclass(frozen=True)
class Layout:
    """What one node said: the slot map, and every node it named (masters and replicas)."""

    slots: SlotMap
    nodes: frozenset[Address]


async def ask(endpoint: Endpoint, *commands: bytes) -> list[Reply]:
    """Send ``commands`` on a fresh connection and return their replies (errors included)."""
    replies: list[Reply] = []
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def take(reply: Reply) -> None:
        replies.append(reply)
        if len(replies) == len(commands) and not done.done():
            done.set_result(None)

    def lost(reason: str) -> None:
        if not done.done():
            done.set_exception(ConnectionError(reason))

    async with asyncio.timeout(ASK_TIMEOUT):
        conn = await open_connection(replace(endpoint, connect_timeout=ASK_TIMEOUT), take, lost)
        try:
            conn.write(b"".join(commands))
            await done
        finally:
            conn.close()
    return replies


async def read_layout(endpoint: Endpoint) -> Layout:
    """The layout as the node at ``endpoint`` sees it.

    Raises :class:`NotUsable` for a node that is not a Redis Cluster node or has no sharded
    pub/sub, ``OSError`` / ``ConnectionError`` / ``TimeoutError`` for one that cannot be asked.
    """
    where = f"{endpoint.host}:{endpoint.port}"
    info, slots = await ask(endpoint, encode(b"INFO", b"server"), encode(b"CLUSTER", b"SLOTS"))
    version = _version(info)
    if version < SHARDED_PUBSUB_SINCE:
        shown = ".".join(map(str, version))
        raise NotUsable(
            f"Redis {shown} at {where} has no sharded pub/sub (SSUBSCRIBE); "
            "a redis-cluster:// broker needs Redis 7.0 or later"
        )
    if isinstance(slots, ReplyError):
        if "cluster support disabled" in str(slots):
            raise NotUsable(
                f"{where} is a Redis without cluster mode (cluster-enabled no); "
                f"use --broker redis://{where} for a single Redis"
            )
        raise NotUsable(f"{where} refused CLUSTER SLOTS: {slots}")
    address = (endpoint.host, endpoint.port)
    try:
        layout = SlotMap.from_reply(slots, address)
    except ValueError as exc:
        raise NotUsable(f"{where}: {exc}") from None
    nodes = {address}
    for entry in slots:
        for node in entry[2:]:
            host = node[0].decode() if isinstance(node[0], bytes) else str(node[0])
            nodes.add((host or endpoint.host, int(node[1])))
    return Layout(layout, frozenset(nodes))


async def discover(seeds: Iterable[Endpoint], *, complete: bool) -> Layout:
    """Ask each node in turn; the first answer wins.

    ``complete``: refuse a layout with slots no master serves (at start: a cluster that is not
    ready, or not formed yet). :class:`NotUsable` from a node is raised at once; when no node
    answers, :class:`BrokerUnavailable` names each and why.
    """
    problems = []
    for endpoint in seeds:
        try:
            layout = await read_layout(endpoint)
        except (OSError, ConnectionError, TimeoutError) as exc:
            problems.append(f"{endpoint.host}:{endpoint.port}: {exc!r}")
            continue
        if complete and layout.slots.covered < SLOTS:
            raise NotUsable(
                f"the Redis Cluster at {endpoint.host}:{endpoint.port} serves "
                f"{layout.slots.covered} of {SLOTS} slots; is it formed and in state ok?"
            )
        return layout
    raise BrokerUnavailable("no Redis Cluster node answered: " + "; ".join(problems))


def _version(info: Reply) -> tuple[int, ...]:
    if isinstance(info, ReplyError) or not isinstance(info, bytes):
        return (0,)
    for line in info.decode(errors="replace").splitlines():
        if line.startswith("redis_version:"):
            text = line.partition(":")[2].strip()
            return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())
    return (0,)
