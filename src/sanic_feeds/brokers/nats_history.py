"""Each channel's history on NATS JetStream: one stream per prefix, one subject per channel.

The stream ``<prefix>_history`` holds the subjects ``<prefix>.hist.<channel token>``, at most
``size`` messages per subject (``max_msgs_per_subject``), each kept ``ttl`` seconds
(``max_age``). Stream sequences are global, so each channel numbers its own messages: a stored
publish carries ``Feeds-Offset`` (the previous message's plus one) and ``Feeds-Epoch``, and is
sent with ``Nats-Expected-Last-Subject-Sequence`` set to the stream sequence of the channel's
newest message. The server refuses it if another node stored one meanwhile; the publisher then
reads the channel's newest message again and retries. So offsets are assigned without gaps or
duplicates by the server's own check, with one round trip in the common case (each node caches
every channel's newest position). An empty subject (never written, or every message expired)
starts a new epoch at offset 1.

Every stored publish carries a ``Nats-Msg-Id`` (the caller's idempotency key, else a nonce of
this node), so a publish whose acknowledgement was lost is simply sent again: the server's
duplicate window answers with the first one's sequence instead of storing it twice.

History reads walk from the newest message back through the previous-sequence header, so they
cost what the reader missed, not the size of the history.

The stream's limits are the widest namespace's. A channel of a namespace with a smaller
``history_size`` is cut to its size when read; one with a shorter ``history_ttl`` has its older
messages left out when read (by the time JetStream stored them), and once its newest message is
older than that ttl its history counts as gone: reads find it empty, and the next stored
publish starts a new epoch at offset 1, as on the other brokers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RawStreamMsg, StorageType
from nats.js.errors import BadRequestError, NotFoundError

from ..envelope import seal
from ..errors import BrokerUnavailable
from ..history import (
    HistoryPage,
    HistoryRules,
    Stored,
    new_epoch,
    page_from_newest,
    read_start,
    stamp,
)

EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
MSG_ID = "Nats-Msg-Id"
OFFSET = "Feeds-Offset"
EPOCH = "Feeds-Epoch"

WRONG_LAST_SEQUENCE = 10071
"""JetStream's error code for a failed ``Nats-Expected-Last-Subject-Sequence`` check."""
STREAM_NAME_IN_USE = 10058

ATTEMPTS = 20
"""Sends of one stored publish (other nodes storing to the channel meanwhile, lost acks)."""

CACHED_CHANNELS = 10_000
"""Channels whose newest position a node remembers (least recently stored dropped first)."""


@dataclass(frozen=True)
class _Entry:
    seq: int
    """Stream sequence."""
    offset: int
    epoch: str
    previous: int
    """Stream sequence of the channel's message before it (0: none)."""
    msg_id: str
    data: bytes
    stored_at: float = 0.0
    """Unix time JetStream stored it (0: unknown, never counted as expired)."""

    def expired(self, ttl: float | None, now: float) -> bool:
        """Older than ``ttl`` (None: the stream's own age limit applies, nothing to check)."""
        return ttl is not None and self.stored_at > 0 and now - self.stored_at > ttl


def _entry(raw: RawStreamMsg) -> _Entry:
    headers = raw.headers or {}
    try:
        return _Entry(
            raw.seq or 0,
            int(headers[OFFSET]),
            headers[EPOCH],
            int(headers.get(EXPECTED_LAST, "0")),
            headers.get(MSG_ID, ""),
            raw.data or b"",
            raw.time.timestamp() if raw.time is not None else 0.0,
        )
    except (KeyError, ValueError) as exc:
        raise BrokerUnavailable(f"a history message without its offset headers: {exc}") from exc


class ChannelTurns:
    """One lock per channel, kept only while someone holds or waits for it."""

    __slots__ = ("_locks",)

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def of(self, channel: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(channel) or (asyncio.Lock(), 0)
        self._locks[channel] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[channel]
            if users == 1:
                del self._locks[channel]
            else:
                self._locks[channel] = (lock, users - 1)


class StreamHistory:
    """Stored publishes and history reads of every channel of one prefix."""

    def __init__(self, prefix_token: str, node: str, rules: HistoryRules) -> None:
        # One stream holds every channel, so its limits are the widest namespace's; a
        # channel of a narrower namespace is cut to its own size when read.
        self.policy = rules.widest
        self._rules = rules
        self.stream = f"{prefix_token}_history"
        self._subject_prefix = f"{prefix_token}.hist."
        self._nonces = (f"{node}-{n}" for n in itertools.count(1))
        self._newest: OrderedDict[str, _Entry | None] = OrderedDict()
        self._turns = ChannelTurns()
        self.conflicts = 0
        """Stored publishes refused because another node stored first (then sent again)."""
        self.lost_acks = 0

    def _ttl_of(self, channel: str) -> float | None:
        """The channel's own ttl where it is shorter than the stream's age limit, else None."""
        ttl = self._rules.for_channel(channel).ttl
        return ttl if ttl < self.policy.ttl else None

    def subject(self, channel_token: str) -> str:
        return self._subject_prefix + channel_token

    async def open(self, js: JetStreamContext) -> None:
        """Create the stream, or bring its limits to this node's policy."""
        ttl = max(self.policy.ttl, 0.001)
        config = {
            "name": self.stream,
            "subjects": [self._subject_prefix + ">"],
            "max_msgs_per_subject": max(self.policy.size, 1),
            "max_age": ttl,
            # The server refuses a duplicate window longer than the age limit.
            "duplicate_window": min(120.0, ttl),
            "storage": StorageType.FILE,
            "discard": DiscardPolicy.OLD,
            "num_replicas": 1,
        }
        try:
            try:
                await js.add_stream(**config)  # type: ignore[arg-type]  # nats-py takes **params
            except BadRequestError as exc:
                if exc.err_code != STREAM_NAME_IN_USE:
                    raise
                await js.update_stream(**config)  # type: ignore[arg-type]
        except (NatsError, OSError) as exc:
            raise BrokerUnavailable(f"JetStream stream {self.stream!r}: {exc!r}") from exc

    async def publish_stored(
        self,
        js: JetStreamContext,
        channel: str,
        subject: str,
        body: bytes,
        idempotency_key: str | None,
    ) -> tuple[Stored, bytes | None]:
        """Store; return where it landed and the envelope to publish live (None: a duplicate).

        One at a time per channel on this node: each store names the sequence it expects to
        follow, so publishes of one node racing each other would all but one be refused and
        sent again, over and over under load (a chat room at 40 messages/s on two nodes lost
        messages to exhausted attempts); in turn, only other nodes' stores can conflict.
        """
        if not body.startswith(b"{") or body == b"{}":
            raise ValueError("a stored message must be a non-empty JSON object")
        async with self._turns.of(channel):
            return await self._store(js, channel, subject, body, idempotency_key)

    async def _store(
        self,
        js: JetStreamContext,
        channel: str,
        subject: str,
        body: bytes,
        idempotency_key: str | None,
    ) -> tuple[Stored, bytes | None]:
        msg_id = f"{subject}:{idempotency_key}" if idempotency_key else next(self._nonces)
        sent = False
        ttl = self._ttl_of(channel)
        for _ in range(ATTEMPTS):
            if channel in self._newest:
                newest = self._newest[channel]
            else:
                newest = await self._read_newest(js, subject)
                if newest is not None and newest.msg_id == msg_id:
                    # Our own earlier send was stored (its ack was lost, or refused after it).
                    return Stored(newest.offset, newest.epoch), None if idempotency_key else seal(
                        newest.data
                    )
            restart = newest is None or newest.expired(ttl, time.time())
            offset = 1 if restart or newest is None else newest.offset + 1
            epoch = new_epoch() if restart or newest is None else newest.epoch
            stamped = stamp(body, offset, epoch)
            headers = {
                EXPECTED_LAST: str(0 if newest is None else newest.seq),
                MSG_ID: msg_id,
                OFFSET: str(offset),
                EPOCH: epoch,
            }
            try:
                ack = await js.publish(
                    subject, stamped, timeout=5.0, stream=self.stream, headers=headers
                )
            except BadRequestError as exc:
                self._newest.pop(channel, None)
                if exc.err_code == WRONG_LAST_SEQUENCE:
                    self.conflicts += 1
                    continue
                raise BrokerUnavailable(f"JetStream refused a stored publish: {exc!r}") from exc
            except TimeoutError:
                # The message may be stored: sending it again is safe (the same Nats-Msg-Id).
                self.lost_acks += 1
                self._newest.pop(channel, None)
                sent = True
                continue
            except (NatsError, OSError) as exc:
                self._newest.pop(channel, None)
                raise BrokerUnavailable(f"stored publish to {channel!r} failed: {exc!r}") from exc
            if ack.duplicate:
                self._newest.pop(channel, None)
                first = _entry(await self._get(js, ack.seq))
                replay = sent and not idempotency_key
                return Stored(first.offset, first.epoch), seal(first.data) if replay else None
            self._remember(channel, _Entry(ack.seq, offset, epoch, 0, msg_id, b"", time.time()))
            return Stored(offset, epoch), seal(stamped)
        raise BrokerUnavailable(f"stored publish to {channel!r}: {ATTEMPTS} attempts failed")

    async def remove(self, js: JetStreamContext, channel: str, subject: str) -> None:
        """Purge the channel's subject. Other nodes' cached newest position is stale then: their
        next stored publish is refused by the sequence check, and they read it again."""
        self._newest.pop(channel, None)
        try:
            await js.purge_stream(self.stream, subject=subject)
        except (NatsError, OSError) as exc:
            raise BrokerUnavailable(f"history purge failed: {exc!r}") from exc

    def _remember(self, channel: str, entry: _Entry) -> None:
        self._newest[channel] = entry
        self._newest.move_to_end(channel)
        if len(self._newest) > CACHED_CHANNELS:
            self._newest.popitem(last=False)

    async def _get(self, js: JetStreamContext, seq: int) -> RawStreamMsg:
        try:
            return await js.get_msg(self.stream, seq=seq)
        except (NatsError, OSError) as exc:
            raise BrokerUnavailable(f"history read failed: {exc!r}") from exc

    async def _read_newest(self, js: JetStreamContext, subject: str) -> _Entry | None:
        try:
            return _entry(await js.get_last_msg(self.stream, subject))
        except NotFoundError:
            return None
        except (NatsError, OSError) as exc:
            raise BrokerUnavailable(f"history read failed: {exc!r}") from exc

    async def history(
        self,
        js: JetStreamContext,
        channel: str,
        subject: str,
        since: int | None,
        epoch: str | None,
        limit: int,
    ) -> HistoryPage:
        """Up to ``limit`` messages after ``since``, from the newest the channel's own size and
        ttl keep."""
        size = self._rules.for_channel(channel).size
        limit = min(limit, size)
        ttl, now = self._ttl_of(channel), time.time()
        newest = await self._read_newest(js, subject)
        if newest is None or newest.expired(ttl, now):
            return page_from_newest(
                [], since=since, wanted_epoch=epoch, epoch="", top=0, limit=limit
            )
        start = max(
            read_start(since, epoch, newest.epoch, newest.offset), newest.offset - max(size, 1)
        )
        count = limit if since is None else limit + 1
        newest_first: list[tuple[int, bytes]] = []
        entry: _Entry | None = newest
        while entry is not None and len(newest_first) < count and entry.offset > start:
            newest_first.append((entry.offset, entry.data))
            if entry.previous == 0:
                break
            try:
                entry = _entry(await js.get_msg(self.stream, seq=entry.previous))
                if entry.epoch != newest.epoch or entry.expired(ttl, now):
                    entry = None
            except NotFoundError:  # dropped by the count or age limit: history ends here
                entry = None
            except (NatsError, OSError) as exc:
                raise BrokerUnavailable(f"history read failed: {exc!r}") from exc
        return page_from_newest(
            newest_first,
            since=since,
            wanted_epoch=epoch,
            epoch=newest.epoch,
            top=newest.offset,
            limit=limit,
        )
