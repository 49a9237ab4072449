"""The per-node counts NATS presence carries in node reports: this process's side of them.

Pure bookkeeping (no I/O): what this process's nodes count, what the other nodes' last reports
said (so that a node's death can be claimed with what it held), what claims won here still
have to clear, and each node's epoch and keys to set again after it was claimed while alive
(see ``presence/nats.py``). It must never talk to NATS itself.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..brokers.nats_subjects import to_token

MAX_CLAIMED = 100_000
"""Keys of claimed dead nodes kept until counted, at most: a key nobody counts again (its
count dropped after failing for long) must not stay forever; the oldest go first, and their
next count is then not told they lapsed."""


def claim_key(node_id: str, epoch: int) -> str:
    """The key whose creation claims ``node_id``'s expiry in ``epoch`` (0: as before epochs)."""
    token = to_token(node_id)
    return f"reaped.{token}.{epoch}" if epoch else f"reaped.{token}"


class ReportedCounts:
    """Counts of this process's nodes, and what it read of the others'."""

    def __init__(self) -> None:
        self.own: dict[str, dict[str, int]] = {}
        """Node of this process -> key -> its count (what its reports carry)."""
        self.seen: dict[str, tuple[int, dict[str, int]]] = {}
        """Other node -> the epoch and counts of its last report read here (what it held if
        it dies, and which claim key says so)."""
        self.epochs: dict[str, int] = {}
        """Node of this process -> how many times it found its counts claimed while alive."""
        self.cleared: dict[str, set[str]] = {}
        """Node of this process -> its keys the others saw cleared and it has not set since:
        left out of its reports, and counted as zero before by a set."""
        self.claimed: dict[str, int] = {}
        """Key -> what the dead nodes claimed here counted of it, until it is counted."""
        self.unhanded: set[str] = set()
        """Keys claimed here that ``claim_expired`` has not handed over yet."""

    def report(self, node_id: str) -> dict[str, object]:
        """The fields of ``node_id``'s report that carry its counts (``users``, ``epoch``)."""
        fields: dict[str, object] = {}
        cleared = self.cleared.get(node_id, set())
        if users := self.own.get(node_id):
            fields["users"] = {k: n for k, n in users.items() if k not in cleared}
        if epoch := self.epochs.get(node_id, 0):
            fields["epoch"] = epoch
        return fields

    def forget(self, node_id: str) -> None:
        """``node_id`` of this process stopped."""
        self.own.pop(node_id, None)
        self.cleared.pop(node_id, None)

    def before_set(self, node_id: str, key: str) -> int:
        """``node_id``'s count of ``key`` as the cluster knows it, before it is set: zero for a
        key cleared by a claim (which its reports count again from now on)."""
        cleared = self.cleared.get(node_id, set())
        if key in cleared:
            cleared.discard(key)
            return 0
        return self.own.get(node_id, {}).get(key, 0)

    def put(self, node_id: str, key: str, count: int) -> None:
        mine = self.own.setdefault(node_id, {})
        mine[key] = count
        if not count:
            del mine[key]

    def read(self, reports: Mapping[str, Mapping[str, object]]) -> None:
        """Remember what the other nodes' live reports hold."""
        for node_id, report in reports.items():
            counts, epoch = report.get("users"), report.get("epoch", 0)
            if isinstance(counts, dict) and counts and node_id not in self.own:
                self.seen[node_id] = (epoch if isinstance(epoch, int) else 0, counts)
            else:
                self.seen.pop(node_id, None)

    def withdrawn(self, nodes: list[str]) -> None:
        """``nodes`` stopped cleanly (their reports were purged): nothing of theirs is claimed
        (a node of an older release purges its report without claiming it first)."""
        for node_id in nodes:
            self.seen.pop(node_id, None)

    def total(self, key: str, node_id: str, reports: Mapping[str, Mapping[str, object]]) -> int:
        """``key``'s count over ``node_id`` (its own, as it is here) and the others' reports."""
        total = self.own.get(node_id, {}).get(key, 0)
        for other, report in reports.items():
            users = report.get("users")
            if other != node_id and isinstance(users, dict):
                reported = users.get(key, 0)
                total += reported if isinstance(reported, int) else 0
        return total

    def won(self, counts: Mapping[str, int]) -> None:
        """This process won the claim of a dead node that held ``counts``."""
        for key, count in counts.items():
            if isinstance(count, int) and count > 0:
                self.claimed[key] = self.claimed.get(key, 0) + count
                self.unhanded.add(key)
        while len(self.claimed) > MAX_CLAIMED:  # the oldest first (dicts keep their order)
            oldest = next(iter(self.claimed))
            del self.claimed[oldest]
            self.unhanded.discard(oldest)

    def lapsed(self, key: str, total: int, change: int) -> bool:
        """A count of ``key`` that moved its total by ``change`` to ``total``: whether it is
        the one that clears what claimed dead nodes held of it, and that left it at zero."""
        cleared = self.claimed.pop(key, 0)
        return cleared > 0 and total - change == 0

    def claimed_alive(self, node_id: str) -> None:
        """``node_id`` of this process found its claim key: count in a new epoch, with every
        key it holds to be set again."""
        self.epochs[node_id] = self.epochs.get(node_id, 0) + 1
        self.cleared[node_id] = set(self.own.get(node_id, {}))
