"""The presence interface: what each node reports about its members, readable cluster-wide.

A node reports its per-channel member counts (``/api/rooms`` sums them over live nodes) and who
its members are (``presence``: client id, user, joined-at, and the connection's and channel's
info where a member has them). Reports expire: a node that crashes
stops refreshing, and its members disappear after ``ttl`` seconds instead of haunting the
channel as ghosts.

Beside the reports, nodes keep counters per node (:meth:`Presence.add_count`: a user's
connections, a channel's occupancy). A crashed node's counts stop counting when its report
expires, and they are cleared by whoever counts that key next or claims them
(:meth:`Presence.claim_expired`); the one caller whose clearing brings a key's live total to
zero is told so (:attr:`Counted.lapsed`), so "the last holder crashed" is said once.

A node that was only cut off (or paused) past its ttl is treated the same way while it is gone,
so when it is back it asks whether its counts were cleared (:meth:`Presence.counts_cleared`)
and sets each again to what it holds (:meth:`Presence.set_count`): setting, not adding, so
doing it twice, or after a count that was already there, changes nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import orjson

CLIENTS_FIELD = "#clients"
"""Report field holding the node's connection count; ``#`` cannot start a channel name."""

FACT_PREFIX = "#"
"""Report fields whose name starts with this are facts about the node (``#started``: Unix time
it started; ``#users``: distinct users connected; ``#version:<release>``: 1), not channels."""


@dataclass(frozen=True)
class Member:
    """One connection's membership of one channel, as presence shows it."""

    client: str
    user: str
    joined_at: float
    """Unix time (seconds) of the join."""
    node: str = ""
    info: object = field(default=None, hash=False)
    """The connection's info (a token's ``info`` claim, a connect hook's ``info``): kept in
    the record so that every node's presence shows it (Centrifugo's ``conn_info``)."""
    chan_info: object = field(default=None, hash=False)
    """The subscription's info (a subscription token's ``info`` claim, a subscribe hook's
    ``info``), Centrifugo's ``chan_info``."""

    def to_json(self) -> bytes:
        """The record as stored; ``info`` and ``chan_info`` only when set, so records of
        members without them stay as small as they were."""
        record: dict[str, object] = {
            "client": self.client,
            "user": self.user,
            "joined_at": self.joined_at,
            "node": self.node,
        }  # by hand: asdict() would deep-copy info and chan_info for every member reported
        if self.info is not None:
            record["info"] = self.info
        if self.chan_info is not None:
            record["chan_info"] = self.chan_info
        return orjson.dumps(record)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Member:
        """Read a stored record, also one written before a field existed (a node of an older
        release in the same cluster)."""
        data = orjson.loads(raw)
        return cls(
            str(data["client"]),
            str(data["user"]),
            float(data["joined_at"]),
            str(data.get("node", "")),
            data.get("info"),
            data.get("chan_info"),
        )

    def public(self) -> dict[str, object]:
        """What clients see (the node id is an operational detail); ``info`` and
        ``chan_info`` only when set."""
        shown: dict[str, object] = {
            "client": self.client,
            "user": self.user,
            "joined_at": self.joined_at,
        }
        if self.info is not None:
            shown["info"] = self.info
        if self.chan_info is not None:
            shown["chan_info"] = self.chan_info
        return shown


@dataclass
class RoomTotals:
    """Cluster-wide totals: members per channel, and connected clients."""

    rooms: dict[str, int] = field(default_factory=dict)
    clients: int = 0

    def add(self, counts: Mapping[str, int], clients: int) -> None:
        """Add one node's counts (non-positive numbers are dropped)."""
        for channel, count in counts.items():
            if count > 0 and not channel.startswith(FACT_PREFIX):
                self.rooms[channel] = self.rooms.get(channel, 0) + count
        self.clients += max(clients, 0)


@dataclass(frozen=True)
class NodeReport:
    """One live node's report as written: member counts per channel (with its facts, see
    :data:`FACT_PREFIX`) and its connection count."""

    counts: Mapping[str, int]
    clients: int

    @property
    def channels(self) -> dict[str, int]:
        return {c: n for c, n in self.counts.items() if not c.startswith(FACT_PREFIX) and n > 0}

    def fact(self, name: str) -> int:
        """A numeric fact (``started``, ``users``), 0 when the node did not report it."""
        return int(self.counts.get(FACT_PREFIX + name, 0))

    @property
    def version(self) -> str:
        prefix = FACT_PREFIX + "version:"
        return next((k[len(prefix) :] for k in self.counts if k.startswith(prefix)), "")


@dataclass(frozen=True)
class Counted:
    """What :meth:`Presence.add_count` found, at the one moment the change was made."""

    total: int
    """The key's count over every live node, the caller's included, after the change."""
    lapsed: bool = False
    """This call cleared the counts of nodes that stopped reporting, and without them (and
    before this call's own change) the key's live total was zero: the key lost its last
    holder when they expired. Of all callers, exactly one is told so per such loss."""


@dataclass(frozen=True)
class CountChange:
    """What :meth:`Presence.set_count` found, at the one moment the count was set."""

    total: int
    """The key's count over every live node, the caller's included, after the change."""
    change: int
    """The caller's new count minus what the backend still had of it: what the cluster-wide
    total moved by. Zero when the backend already had it (nothing was cleared)."""
    lapsed: bool = False
    """As :attr:`Counted.lapsed`: this call cleared the counts of nodes that stopped reporting,
    and without them (before this call's change) the key's live total was zero."""


class Presence(ABC):
    """Cluster-wide view of the nodes' rooms. Memory and Redis implementations."""

    @abstractmethod
    async def open(self) -> None:
        """Connect."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections. Idempotent."""

    @abstractmethod
    async def report_rooms(
        self,
        node_id: str,
        rooms: Mapping[str, int],
        clients: int,
        ttl: float,
        members: Mapping[str, Sequence[Member]] | None = None,
    ) -> None:
        """Replace ``node_id``'s report; it counts until ``ttl`` seconds from now.

        ``members`` replaces the node's member list of each channel it names (an empty list
        removes it); the lists of the other channels in ``rooms`` are only kept alive.
        """

    @abstractmethod
    async def withdraw(self, node_id: str) -> None:
        """Remove ``node_id``'s report at once (clean shutdown)."""

    @abstractmethod
    async def rooms(self, exclude_node: str = "") -> RoomTotals:
        """Sum of the live nodes' counts per channel, leaving out ``exclude_node``'s report.

        A node excludes its own (possibly stale) report and adds its live local counts instead.
        """

    @abstractmethod
    async def members(self, channel: str, exclude_node: str = "") -> list[Member]:
        """Members of ``channel`` on every live node but ``exclude_node``."""

    @abstractmethod
    async def nodes(self) -> list[str]:
        """Ids of the nodes whose reports have not expired."""

    async def user_connections(self, user: str, node_id: str, delta: int) -> int:
        """Add ``delta`` to ``user``'s connections on ``node_id``; return the user's
        connections over every live node, ``node_id``'s included.

        Counts of nodes whose reports expired (crashed) or were withdrawn no longer count.
        """
        return (await self.add_count(user, node_id, delta)).total

    @abstractmethod
    async def add_count(self, key: str, node_id: str, delta: int) -> Counted:
        """Add ``delta`` to ``node_id``'s count of ``key`` (never below zero) and read the
        key's live total, in one step no other count of the key comes between.

        Counts of nodes whose reports expired or were withdrawn no longer count; where this
        call clears them, it may be the one told that the key lapsed with them. ``node_id``
        must be listed (have reported) before it counts.
        """

    @abstractmethod
    async def set_count(self, key: str, node_id: str, value: int) -> CountChange:
        """Set ``node_id``'s count of ``key`` to ``value`` (at least zero) and read the key's
        live total, in one step, as :meth:`add_count` does.

        What a node uses where it knows its own count (a channel it has members of, or not;
        how many connections of a user it holds): a count the backend lost or cleared is
        restored by it, and one already there is left as it is, so it can be repeated.
        """

    @abstractmethod
    async def counts_cleared(self, node_id: str, *, lapsed: bool) -> bool:
        """Whether ``node_id``'s counts may have been cleared while it is alive, so that it
        must set them again (:meth:`set_count`) for its keys' totals to be right.

        True once another node claimed them as expired (the node was cut off from the backend
        past its ttl, or paused), or the backend lost them; with ``lapsed`` (the node's report
        went unrenewed past its ttl), also where others' counts then drop the fields of nodes
        that are not live. A backend that keeps the node's counts elsewhere than the backend's
        counters (NATS: in its reports) from then on treats them as zero until each is set.
        """

    @abstractmethod
    async def counts_restored(self, node_id: str) -> None:
        """``node_id`` set each of its counts again after :meth:`counts_cleared` said they
        may have been cleared: from now on that says no again, until the next claim.

        Where the backend learns of a claim from a mark the claim removes (Redis, memory),
        this writes the mark again; the node's ordinary counts never do, so a node that counts
        on between the claim and its check still learns of the claim. Where a claim is a new
        epoch of the node's counts (NATS), nothing is left to do."""

    @abstractmethod
    async def claim_expired(self, node_id: str) -> list[str]:
        """The keys counted by nodes that stopped reporting, each dead node's keys handed to
        one caller (``node_id``) only, and forgotten as claimed.

        The caller then counts each key (``add_count(key, node_id, 0)``), which clears the
        dead counts and tells whether the key lapsed: claiming keeps that work to one node and
        bounded by what the dead node counted, instead of a scan of every key.
        """

    @abstractmethod
    async def node_reports(self) -> dict[str, NodeReport]:
        """Node id -> its report, for every node whose report has not expired."""
