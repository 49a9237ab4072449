"""NATS presence: node reports in a JetStream key-value bucket whose entries expire.

Bucket ``<prefix>_presence`` (``T(x)`` is ``x`` as a subject token, see
``brokers/nats_subjects.py``)::

    node.<T(node id)>                       {"expires": unix s, "rooms": {...}, "clients": n,
                                             "users": {key: count}}
    members.<T(node id)>.<T(channel)>       {"expires": unix s, "members": [member, ...]}
    reaped.<T(node id)>                     empty: the claim of that node's expiry

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
nobody claims its last report. The claim key goes with the bucket's max age (``node_ttl``):
a node that notices a death later than that after another one claimed it claims it again.
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
from nats.js.kv import KeyValue

from ..brokers.nats_connect import first_connection
from ..brokers.nats_subjects import from_token, to_token
from ..config import nats_servers
from ..errors import BrokerUnavailable
from .base import Counted, Member, NodeReport, Presence, RoomTotals

log = logging.getLogger(__name__)


class NatsPresence(Presence):
    def __init__(self, url: str, prefix: str = "sanic-feeds:", *, max_age: float = 60.0) -> None:
        self._servers = nats_servers(url)
        self._bucket = f"{to_token(prefix.rstrip(':.') or 'feeds')}_presence"
        self._max_age = max_age
        self._nc: Client | None = None
        self._kv: KeyValue | None = None
        self._js: JetStreamContext | None = None
        self._written: dict[tuple[str, str], bytes] = {}
        """(node, channel) -> the member list JSON this process wrote last."""
        self._users: dict[str, dict[str, int]] = {}
        """Node -> key -> count, for the nodes of this process (their reports)."""
        self._seen: dict[str, dict[str, int]] = {}
        """Other node -> the counts of its last report read here (what it held if it dies)."""
        self._claimed: dict[str, int] = {}
        """Key -> what the dead nodes claimed here counted of it, until it is counted."""
        self._unhanded: set[str] = set()
        """Keys claimed here that ``claim_expired`` has not handed over yet."""

    async def open(self) -> None:
        try:
            self._nc = await first_connection(
                "presence: cannot connect to NATS", self._servers, error_cb=self._error
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
        users = self._users.get(node_id)
        if users:
            report["users"] = users
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
                await kv.create(f"reaped.{to_token(node_id)}", b"")
            await kv.purge(f"node.{to_token(node_id)}")
        except (NatsError, OSError) as exc:
            raise BrokerUnavailable(f"presence withdraw failed: {exc!r}") from exc
        for key in [k for k in self._written if k[0] == node_id]:
            del self._written[key]
        self._users.pop(node_id, None)

    async def _reports(self) -> dict[str, dict[str, object]]:
        """Node id -> its live report."""
        kv = self._require(connected=True)
        assert self._js is not None
        prefix = f"$KV.{self._bucket}."
        found: dict[str, dict[str, object]] = {}
        try:
            info = await self._js.stream_info(
                f"KV_{self._bucket}", subjects_filter=f"{prefix}node.*"
            )
            keys = [subject[len(prefix) :] for subject in info.state.subjects or {}]
            entries = await asyncio.gather(*(_latest(kv, key) for key in keys))
        except (NatsError, OSError) as exc:
            raise BrokerUnavailable(f"presence read failed: {exc!r}") from exc
        now = time.time()
        for key, value in zip(keys, entries, strict=True):
            if value:
                report = orjson.loads(value)
                if float(report["expires"]) > now:
                    found[from_token(key.partition(".")[2])] = report
        for node_id, report in found.items():
            counts = report.get("users")
            if isinstance(counts, dict) and counts and node_id not in self._users:
                self._seen[node_id] = counts
            else:
                self._seen.pop(node_id, None)
        return found

    async def nodes(self) -> list[str]:
        return sorted(await self._reports())

    async def add_count(self, key: str, node_id: str, delta: int) -> Counted:
        mine = self._users.setdefault(node_id, {})
        before = mine.get(key, 0)
        count = mine[key] = max(before + delta, 0)
        if not count:
            del mine[key]
        total = count
        reports = await self._reports()
        for other, report in reports.items():
            users = report.get("users")
            if other != node_id and isinstance(users, dict):
                reported = users.get(key, 0)
                total += reported if isinstance(reported, int) else 0
        with contextlib.suppress(BrokerUnavailable):  # claimed by the next sweep instead
            await self._claim_vanished(reports)
        cleared = self._claimed.pop(key, 0)
        return Counted(total, lapsed=cleared > 0 and total - (count - before) == 0)

    async def claim_expired(self, node_id: str) -> list[str]:
        await self._claim_vanished(await self._reports())
        keys, self._unhanded = self._unhanded, set()
        return sorted(keys)

    async def _claim_vanished(self, reports: Mapping[str, object]) -> None:
        """Claim the nodes whose reports were read here before and are gone now."""
        if not any(n not in reports for n in self._seen):
            return
        kv = self._require(connected=True)
        for dead in [n for n in self._seen if n not in reports]:
            counts = self._seen.pop(dead)
            try:
                await kv.create(f"reaped.{to_token(dead)}", b"")
            except KeyWrongLastSequenceError:
                continue  # another node claimed it, or it stopped cleanly
            except (NatsError, OSError) as exc:
                self._seen[dead] = counts  # try again next time
                raise BrokerUnavailable(f"claim of expired counts failed: {exc!r}") from exc
            for key, count in counts.items():
                if isinstance(count, int) and count > 0:
                    self._claimed[key] = self._claimed.get(key, 0) + count
                    self._unhanded.add(key)

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


async def _latest(kv: KeyValue, key: str) -> bytes | None:
    """The key's value, or None where it was purged or deleted since it was listed."""
    try:
        return (await kv.get(key)).value
    except KeyNotFoundError:
        return None


def _with_expiry(expires: float, members_json: bytes) -> bytes:
    return b'{"expires":%s,"members":%s}' % (repr(expires).encode(), members_json)
