"""Redis Cluster's slot map and redirects, as pure data: no sockets, no asyncio.

A cluster splits the key space into 16384 hash slots, each served by one master. Every key of a
channel (its history stream, counter, epoch) and its shard channel carry the hash tag
``{<channel>}``, so they hash to one slot and one Lua script can touch them all. The cluster
broker reads the map from ``CLUSTER SLOTS`` and routes each command by the slot of its key;
a master that no longer serves a slot answers ``MOVED <slot> <host>:<port>`` (the command did
not run), and one that is handing a slot over answers ``ASK`` for keys already moved.

Slots are computed by redis-py's ``key_slot`` (CRC16 and the hash-tag rule, as Redis does).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

Address = tuple[str, int]
"""A node as ``(host, port)``."""

SLOTS = REDIS_CLUSTER_HASH_SLOTS

__all__ = ["SLOTS", "Address", "Redirect", "SlotMap", "key_slot", "parse_redirect", "probe_tag"]


class SlotMap:
    """Which master serves each slot. Built from a ``CLUSTER SLOTS`` reply; immutable."""

    __slots__ = ("_owners", "ranges")

    def __init__(self, ranges: Iterable[tuple[int, int, Address]]) -> None:
        self.ranges = tuple(sorted(ranges))
        """``(first, last, master)`` for every range of slots that has a master."""
        owners: list[Address | None] = [None] * SLOTS
        for first, last, master in self.ranges:
            owners[first : last + 1] = [master] * (last - first + 1)
        self._owners = owners

    @classmethod
    def from_reply(cls, reply: object, asked: Address) -> SlotMap:
        """Read a ``CLUSTER SLOTS`` reply (as hiredis decodes it) from the node at ``asked``.

        A node that does not know its own address reports an empty host: it is ``asked``'s.
        ``ValueError`` for a reply of another shape.
        """
        if not isinstance(reply, list):
            raise ValueError(f"CLUSTER SLOTS: unexpected reply {reply!r}")
        ranges = []
        for entry in reply:
            if not isinstance(entry, list) or len(entry) < 3 or not isinstance(entry[2], list):
                raise ValueError(f"CLUSTER SLOTS: unexpected entry {entry!r}")
            raw_host, port = entry[2][0], int(entry[2][1])
            host = raw_host.decode() if isinstance(raw_host, bytes) else str(raw_host)
            if host in ("", "?"):
                host = asked[0]
            ranges.append((int(entry[0]), int(entry[1]), (host, port)))
        return cls(ranges)

    def owner(self, slot: int) -> Address | None:
        """The master serving ``slot``, or None while none does (a failover under way)."""
        return self._owners[slot]

    def move(self, slot: int, master: Address) -> SlotMap:
        """The map after a ``MOVED`` reply: ``slot`` is served by ``master``."""
        ranges = [r for r in self.ranges if not r[0] <= slot <= r[1]]
        for first, last, owner in self.ranges:
            if first <= slot <= last:
                if first < slot:
                    ranges.append((first, slot - 1, owner))
                if slot < last:
                    ranges.append((slot + 1, last, owner))
        ranges.append((slot, slot, master))
        return SlotMap(ranges)

    @property
    def masters(self) -> frozenset[Address]:
        return frozenset(master for _, _, master in self.ranges)

    @property
    def covered(self) -> int:
        """Slots that have a master."""
        return sum(last - first + 1 for first, last, _ in self.ranges)

    def slots_of(self, master: Address) -> int:
        return sum(last - first + 1 for first, last, owner in self.ranges if owner == master)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SlotMap) and self.ranges == other.ranges

    def __hash__(self) -> int:
        return hash(self.ranges)

    def __repr__(self) -> str:
        return f"SlotMap({len(self.ranges)} ranges, {len(self.masters)} masters)"


@dataclass(frozen=True)
class Redirect:
    """A ``MOVED`` or ``ASK`` error reply: ``slot`` is (for now, with ASK) at ``address``."""

    kind: str
    slot: int
    address: Address


def parse_redirect(error: str, current_host: str) -> Redirect | None:
    """``MOVED 3999 10.0.0.2:6381`` -> a :class:`Redirect`; None for any other error.

    A node that does not know its peer's host name sends ``MOVED 3999 :6381``: the host is then
    the one the command went to (``current_host``).
    """
    parts = error.split()
    if len(parts) != 3 or parts[0] not in ("MOVED", "ASK"):
        return None
    host, _, port = parts[2].rpartition(":")
    try:
        return Redirect(parts[0], int(parts[1]), (host or current_host, int(port)))
    except ValueError:
        return None


def probe_tag(slots: SlotMap, master: Address) -> str:
    """A hash tag whose slot ``master`` serves: the node's probe channel on that shard
    (``...:{<tag>}``) must live there, since ``SPUBLISH`` reaches only the slot's shard."""
    for number in range(SLOTS * 8):
        tag = str(number)
        if slots.owner(key_slot(tag.encode())) == master:
            return tag
    raise ValueError(f"{master[0]}:{master[1]} serves no slot")
