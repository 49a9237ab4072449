"""NATS presence: node reports in a JetStream key-value bucket whose entries expire.

Bucket ``<prefix>_presence`` (``T(x)`` is ``x`` as a subject token, see
``brokers/nats_subjects.py``)::

    node.<T(node id)>                       {"expires": unix s, "rooms": {...}, "clients": n,
                                             "users": {key: count}, "epoch": n}
    members.<T(node id)>.<T(channel)>       {"expires": unix s, "members": [member, ...]}
    reaped.<T(node id)>                     empty: the claim of that node's expiry
    reaped.<T(node id)>.<epoch>             the same, for a node that came back ``epoch`` times

The bucket's max age (``max_age``, the node ttl) removes what a crashed node left behind; the
server here (2.9) has no per-key ttl, so each value carries its own expiry too and readers skip
expired ones: a report counts exactly until its ttl, whatever the bucket's age limit.
Keeping an unchanged member list alive rewrites it with a new expiry (a key-value entry cannot
be extended in place), from the copy this node wrote last.

Readers list the live node reports from the stream's per-subject state (``STREAM.INFO`` with
a subject filter), then read each one: a key-value watcher is not used for this, since
nats-py's watcher can signal "no more entries" before the entries the server already sent
have been handed over, which reads as an empty cluster under load.

Counts per node (a user's connections with a per-user connection limit, a channel's
occupancy with event webhooks) travel in the node reports: a key's total is this node's live
count plus what the other nodes reported last, so a count made on another node counts here
from that node's next report on. They vanish with the report, so nothing is left to clean;
what a node must still learn is which keys a crashed node held. Each node keeps the counts of
the other nodes' last reports it read; when a report it knew is gone, it creates
``reaped.<node>`` (a key-value create, which only one node's can do) and, if it won, hands
the dead node's keys to its caller. A count that finds such a report gone claims it the same
way first, so the first count of a key after its last holder died is told it lapsed, as on
Redis. A node that stops cleanly creates its own claim first, so
nobody claims its last report; and a purged report (what a clean stop leaves, also from a node
of an older release that made no claim of its own) is never claimed: only reports that expired
are. The claim key goes with the bucket's max age (``node_ttl``):
a node that notices a death later than that after another one claimed it claims it again.

A node that was cut off past its ttl (or paused) and comes back finds its own claim key
(:meth:`NatsPresence.counts_cleared`, every sweep): the others counted its keys as gone and
said so. It then counts in a new epoch (its reports carry ``epoch``, and a claim of its next
expiry is ``reaped.<node>.<epoch>``, which nobody made yet), and its reports leave out each of
its keys until it sets that key again (:meth:`NatsPresence.set_count`), which then moves the
total from what the others saw: so the node whose count brings a key back from zero is the one
told so, once. Its reports count again as soon as they are back; only the lapse is undone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence

import orjson
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.client import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KV_PURGE, KeyValue

from ..brokers.nats_connect import first_connection
from ..brokers.nats_subjects import from_token, to_token
from ..errors import BrokerUnavailable
from ..nats_urls import nats_servers, nats_tls
from .base import CountChange, Counted, Member, NodeReport, Presence, RoomTotals
from .nats_counts import ReportedCounts, claim_key

log = logging.getLogger(__name__)


class NatsPresence(Presence):
    def __init__(self, url: str, prefix: str = "sanic-feeds:", *, max_age: float = 60.0) -> None:
        self._servers = nats_servers(url)
        self._tls = nats_tls(url)
        self._bucket = f"{to_token(prefix.rstrip(':.') or 'feeds')}_presence"
        self._max_age = max_age
        self._nc: Client | None = None
        self._kv: KeyValue | None = None
        self._js: JetStreamContext | None = None
        self._written: dict[tuple[str, str], bytes] = {}
        """(node, channel) -> the member list JSON this process wrote last."""
        self._counts = ReportedCounts()
        """The counts this process's nodes report, and what it read of the others'."""

    async def open(self) -> None:
        try:
            self._nc = await first_connection(
                "presence: cannot connect to NATS",
                self._servers,
                error_cb=self._error,
                tls=self._tls,
            )
            js = self._js = self._nc.jetstream()
            try:
                self._kv = await js.key_value(self._bucket)
            except NatsError:
                self._kv = await js.create_key_value(
                    bucket=self._bucket, ttl=self._max_age, history=1
                )
        except BrokerUnavailable:
            await self.aclose()
            raise
        except (NatsError, OSError) as exc:
            await self.aclose()
            raise BrokerUnavailable(f"presence bucket {self._bucket!r}: {exc!r}") from exc

    async def aclose(self) -> None:
        nc, self._nc = self._nc, None
        self._kv = None
        self._js = None
        if nc is not None and not nc.is_closed:
            # With NATS down, nats-py's flush of the closing connection raises
            # (ConnectionResetError): stopping the node must not fail for it.
            with contextlib.suppress(NatsError, OSError):
                await nc.close()

    def _require(self, connected: bool = False) -> KeyValue:
        """The bucket; with ``connected``, only while the connection is up.

        Reports are buffered by nats-py through a reconnect (they time out after 5 s); a read,
        or the withdrawal of a stopping node, while NATS is out of reach is refused at once.
        """
        if self._kv is None or self._nc is None:
            raise BrokerUnavailable("presence is not open")
        if connected and not self._nc.is_connected:
            raise BrokerUnavailable("presence unavailable: not connected to NATS")
        return self._kv

    async def _error(self, exc: Exception) -> None:
        nc = self._nc
        if nc is None or not nc.is_connected:
            # A failed reconnect attempt (every 0.2 s while NATS is down): the broker's own
            # connection already reports the outage.
            log.debug("NATS presence connection: reconnect failed: %r", exc)
            return
        log.warning("NATS presence connection error: %r", exc)

    async def report_rooms(
        self,
        node_id: str,
        rooms: Mapping[str, int],
        clients: int,
        ttl: float,
        members: Mapping[str, Sequence[Member]] | None = None,
    ) -> None:
        kv = self._require()
        expires = time.time() + ttl
        node = to_token(node_id)
        report = {
            "expires": expires,
            "rooms": {c: n for c, n in rooms.items() if n > 0},
            "clients": clients,
        }
        report.update(self._counts.report(node_id))
        members = members or {}
        try:
            for channel, listed in members.items():
                key = f"members.{node}.{to_token(channel)}"
                if listed:
                    text = b"[" + b",".join(m.to_json() for m in listed) + b"]"
                    self._written[(node_id, channel)] = text
                    await kv.put(key, _with_expiry(expires, text))
                else:
                    self._written.pop((node_id, channel), None)
                    await kv.purge(key)
            for channel in rooms:
                kept = self._written.get((node_id, channel))
                if channel not in members and kept is not None:
                    await kv.put(f"members.{node}.{to_token(channel)}", _with_expiry(expires, kept))
            # The node's report last: readers find members only through a live report.
            await kv.put(f"node.{node}", orjson.dumps(report))
        except (NatsError, OSError) as exc:
            raise BrokerUnavailable(f"presence report failed: {exc!r}") from exc

    async def withdraw(self, node_id: str) -> None:
        # A stopping node does not wait out a reconnect: its report expires by itself.
        kv = self._require(connected=True)
        try:
            with contextlib.suppress(KeyWrongLastSequenceError):  # its own claim comes first
                await kv.create(claim_key(node_id, self._counts.epochs.get(node_id, 0)), b"")
            await kv.purge(f"node.{to_token(node_id)}")
        except (NatsError, OSError) as exc:
            raise BrokerUnavailable(f"presence withdraw failed: {exc!r}") from exc
        for key in [k for k in self._written if k[0] == node_id]:
            del self._written[key]
        self._counts.forget(node_id)

    async def _reports(self) -> dict[str, dict[str, object]]:
        """Node id -> its live report."""
        kv = self._require(connected=True)
        assert self._js is not None
        prefix = f"$KV.{self._bucket}."
        try:
            info = await self._js.stream_info(
                f"KV_{self._bucket}", subjects_filter=f"{prefix}node.*"
            )
            keys = [subject[len(prefix) :] for subject in info.state.subjects or {}]
            entries = await asyncio.gather(*(_latest(kv, key) for key in keys))
        except (NatsError, OSError) as exc:
            raise BrokerUnavailable(f"presence read failed: {exc!r}") from exc
        found, withdrawn = _live_reports(keys, entries)
        self._counts.read(found)
        self._counts.withdrawn(withdrawn)
        return found

    async def nodes(self) -> list[str]:
        return sorted(await self._reports())

    async def add_count(self, key: str, node_id: str, delta: int) -> Counted:
        before = self._counts.own.get(node_id, {}).get(key, 0)
        total, lapsed = await self._count(key, node_id, max(before + delta, 0), before)
        return Counted(total, lapsed=lapsed)

    async def set_count(self, key: str, node_id: str, value: int) -> CountChange:
        was_cleared = key in self._counts.cleared.get(node_id, ())
        before = self._counts.before_set(node_id, key)
        try:
            total, lapsed = await self._count(key, node_id, max(value, 0), before)
        except BaseException:
            if was_cleared:  # still left out of the reports until a set succeeds
                self._counts.cleared.setdefault(node_id, set()).add(key)
            raise
        return CountChange(total, max(value, 0) - before, lapsed)

    async def _count(self, key: str, node_id: str, count: int, before: int) -> tuple[int, bool]:
        """Make ``count`` this node's count of ``key``: the live total, and lapsed. A count
        that fails leaves the node's count as it was: the caller takes it as not made."""
        previous = self._counts.own.get(node_id, {}).get(key, 0)
        self._counts.put(node_id, key, count)
        try:
            reports = await self._reports()
        except BaseException:
            self._counts.put(node_id, key, previous)
            raise
        total = self._counts.total(key, node_id, reports)
        with contextlib.suppress(BrokerUnavailable):  # claimed by the next sweep instead
            await self._claim_vanished(reports)
        return total, self._counts.lapsed(key, total, count - before)

    async def counts_cleared(self, node_id: str, *, lapsed: bool) -> bool:
        # A lapse alone clears nothing here (the counts come back with the next report):
        # only a claim, which told the cluster the node's keys were gone, must be undone.
        if not self._counts.own.get(node_id):
            return False
        try:
            await self._require(connected=True).get(
                claim_key(node_id, self._counts.epochs.get(node_id, 0))
            )
        except KeyNotFoundError:
            return False
        except (NatsError, OSError) as exc:
            raise BrokerUnavailable(f"presence read failed: {exc!r}") from exc
        self._counts.claimed_alive(node_id)
        return True

    async def counts_restored(self, node_id: str) -> None:
        # counts_cleared moved the node to a new epoch, whose claim key nobody made yet.
        return

    async def claim_expired(self, node_id: str) -> list[str]:
        await self._claim_vanished(await self._reports())
        keys, self._counts.unhanded = self._counts.unhanded, set()
        return sorted(keys)

    async def _claim_vanished(self, reports: Mapping[str, object]) -> None:
        """Claim the nodes whose reports were read here before and are gone now."""
        seen = self._counts.seen
        if not any(n not in reports for n in seen):
            return
        kv = self._require(connected=True)
        for dead in [n for n in seen if n not in reports]:
            epoch, counts = last = seen.pop(dead)
            try:
                await kv.create(claim_key(dead, epoch), b"")
            except KeyWrongLastSequenceError:
                continue  # another node claimed it, or it stopped cleanly
            except (NatsError, OSError) as exc:
                seen[dead] = last  # try again next time
                raise BrokerUnavailable(f"claim of expired counts failed: {exc!r}") from exc
            self._counts.won(counts)

    async def node_reports(self) -> dict[str, NodeReport]:
        found = {}
        for node_id, report in (await self._reports()).items():
            counts, clients = report["rooms"], report["clients"]
            if isinstance(counts, dict) and isinstance(clients, int):
                found[node_id] = NodeReport(counts, clients)
        return found

    async def rooms(self, exclude_node: str = "") -> RoomTotals:
        totals = RoomTotals()
        for node_id, report in (await self._reports()).items():
            if node_id != exclude_node:
                counts = report["rooms"]
                clients = report["clients"]
                if isinstance(counts, dict) and isinstance(clients, int):
                    totals.add(counts, clients)
        return totals

    async def members(self, channel: str, exclude_node: str = "") -> list[Member]:
        kv = self._require(connected=True)
        found: list[Member] = []
        now = time.time()
        for node_id in await self.nodes():
            if node_id == exclude_node:
                continue
            try:
                entry = await kv.get(f"members.{to_token(node_id)}.{to_token(channel)}")
            except KeyNotFoundError:
                continue
            except (NatsError, OSError) as exc:
                raise BrokerUnavailable(f"presence read failed: {exc!r}") from exc
            if entry.value:
                listed = orjson.loads(entry.value)
                if float(listed["expires"]) > now:
                    found.extend(Member.from_json(orjson.dumps(m)) for m in listed["members"])
        return found


def _live_reports(
    keys: Sequence[str], entries: Sequence[tuple[bytes | None, bool]]
) -> tuple[dict[str, dict[str, object]], list[str]]:
    """Node id -> its report, of the reports read that have not expired; and the nodes whose
    reports were purged (stopped cleanly)."""
    now = time.time()
    found: dict[str, dict[str, object]] = {}
    withdrawn = []
    for key, (value, purged) in zip(keys, entries, strict=True):
        node_id = from_token(key.partition(".")[2])
        if purged:
            withdrawn.append(node_id)
        elif value:
            report = orjson.loads(value)
            if float(report["expires"]) > now:
                found[node_id] = report
    return found, withdrawn


async def _latest(kv: KeyValue, key: str) -> tuple[bytes | None, bool]:
    """The key's value (None where it is gone since it was listed), and whether it was
    purged: a node's report is purged only by the node's clean stop (:meth:`NatsPresence.
    withdraw`), while a crashed node's report expires, so a purge says "not dead"."""
    try:
        return (await kv.get(key)).value, False
    except KeyNotFoundError as exc:
        return None, exc.op == KV_PURGE


def _with_expiry(expires: float, members_json: bytes) -> bytes:
    return b'{"expires":%s,"members":%s}' % (repr(expires).encode(), members_json)
