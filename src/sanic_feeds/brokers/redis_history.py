"""Each channel's history on Redis: a stream written and read by Lua scripts, one round trip each.

A stored publish is one ``EVALSHA`` (``redis_scripts.PUBLISH_STORED``): numbered, appended to
the stream and published in one atomic step, with no key of its own (an idempotency key only
when the caller gives one). When its reply is lost, the publish is looked up in the stream by
its nonce instead of sent blindly again: found, it succeeded; not found after Redis itself closed
the connection, it never ran and is sent again (at most ``PUBLISH_ATTEMPTS`` sends); not found
after this side gave up on a silent connection, it may still run, so it is reported as failed.
History reads go from the newest end down to the reader's position and no further.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..envelope import now_us
from ..errors import BrokerUnavailable
from ..history import HistoryPage, HistoryRules, Stored, page_from_newest
from .redis_commands import OutcomeUnknown
from .redis_keys import history_keys
from .redis_scripts import FIND_PUBLISHES, PUBLISH_STORED, READ_HISTORY, Script
from .resp import Reply, ReplyError, bulk, encode


class Commands(Protocol):
    """Where the commands go: one Redis's :class:`~.redis_commands.CommandPool`, or a cluster's
    router, which sends each to the master of its ``route``'s slot."""

    async def call(
        self, command: bytes, route: str | None = None, *, carried: bool = False
    ) -> Reply: ...


FIND_DEPTH = 1000
"""Newest stream entries searched (at least; twice the publishes looked up, if more) for
publishes whose reply was lost. Not finding it there leads
to one more send only when Redis itself closed the connection (so the command cannot still run):
a message could then be stored twice only if over this many were stored on its channel between
the lost reply and the lookup, milliseconds later."""

PUBLISH_ATTEMPTS = 3
"""Sends of one stored publish (each after Redis closed the connection with no trace of it),
and lookups of a lost reply, before the publish is reported as failed."""


PREPARED_KEPT = 10_000
"""Channels whose prepared publish (and last expiry renewal) a node keeps before it forgets
those it has neither prepared nor renewed within the last second."""

_RENEW, _KEEP = bulk(b"1"), bulk(b"0")


def renewal_window(ttl: float) -> float:
    """Seconds a node lets go by between two renewals of a channel's expiry: the keys expire
    ttl after the last publish to within this (a second; a tenth of a ttl under ten seconds)."""
    return min(1.0, ttl / 10)


@dataclass(slots=True)
class _Prepared:
    """What every stored publish to one channel sends alike, encoded once: a publish then
    encodes only its body, header and nonce (most of a publish's own Python time was spent
    encoding the same keys and settings again)."""

    keys: tuple[str, str, str]
    settings: tuple[bytes, bytes, bytes]
    """The script's first three arguments: max length, ttl (ms), the pub/sub channel."""
    head: bytes
    """``EVALSHA``, the script, the keys and ``settings``, in RESP, with the whole count."""
    window: float
    """Seconds between two renewals of the channel's expiry (:func:`renewal_window`)."""
    made: float
    """When it was prepared (monotonic seconds)."""
    renewed: float = -1e9
    """When this node last had the channel's expiry renewed (monotonic seconds)."""


class Untraceable:
    """A lookup that cannot tell: the publish is not in the stream, but it may have been
    trimmed away. The publish is then reported failed, never sent again."""


UNTRACEABLE = Untraceable()


class StreamHistory:
    """Stored publishes and history reads of every channel, on the broker's command pool."""

    def __init__(
        self,
        commands: Commands,
        prefix: str,
        node: str,
        rules: HistoryRules,
        channel_key: Callable[[str], bytes],
        publish_script: Script = PUBLISH_STORED,
    ) -> None:
        self._commands = commands
        self._publish = publish_script
        self.scripts = (publish_script, READ_HISTORY, FIND_PUBLISHES)
        """Every script this history runs, loaded when it opens."""
        self._prefix = prefix
        self.rules = rules
        self._channel_key = channel_key
        # The salt makes nonces (and the epochs the script derives from them) differ from
        # those of an earlier process that had the same node id: a given node id, restarted,
        # counts from 1 again, and would otherwise find its predecessor's publishes as its own
        # and give a history that starts anew an epoch the channel had before.
        salt = secrets.token_hex(4).encode()
        self._nonces = (b"%s-%s-%d" % (node.encode(), salt, n) for n in itertools.count(1))
        self.refused_unknown = 0
        """Publishes whose outcome stayed unknown (reported as unavailable, never retried)."""
        self.resolved = 0
        """Publishes whose lost reply was recovered by finding them in the stream."""
        self.lost_replies = 0
        """Stored publishes whose reply was lost (then looked up, and maybe sent again)."""
        self._loading: dict[bytes, asyncio.Future[Reply]] = {}
        self._lookups: dict[str, dict[bytes, asyncio.Future[Stored | Untraceable | None]]] = {}
        """Channel -> nonces of lost replies waiting for the next scan of its stream."""
        self._scans: set[asyncio.Future[None]] = set()
        self._prepared: dict[str, _Prepared] = {}

    def _history_keys(self, channel: str) -> tuple[str, str, str]:
        return history_keys(self._prefix, channel)

    async def publish_stored(
        self, channel: str, body: bytes, idempotency_key: str | None = None
    ) -> Stored:
        if not body.startswith(b"{") or body == b"{}":
            raise ValueError("a stored message must be a non-empty JSON object")
        prepared = self._prepared.get(channel) or self._prepare(channel)
        nonce = next(self._nonces)
        now = time.monotonic()
        renew = now - prepared.renewed >= prepared.window
        header = b" %d" % now_us()  # envelope header: no excluded client, the publish time
        if idempotency_key is None:
            command = b"".join(
                (prepared.head, bulk(body), bulk(header), bulk(nonce), _RENEW if renew else _KEEP)
            )
        else:
            keys = (*prepared.keys, f"{prepared.keys[1]}:pub:{idempotency_key}")
            args = (*prepared.settings, body, header, nonce, b"1" if renew else b"0")
            command = encode(b"EVALSHA", self._publish.sha, len(keys), *keys, *args)
        for attempt in range(PUBLISH_ATTEMPTS):
            try:
                reply = await self._run(self._publish, command, route=channel)
            except OutcomeUnknown as exc:
                self.lost_replies += 1
                found = await self._find(channel, nonce, exc)
                if isinstance(found, Stored):
                    self.resolved += 1
                    return found
                if found is UNTRACEABLE or exc.may_still_run or attempt == PUBLISH_ATTEMPTS - 1:
                    self.refused_unknown += 1
                    raise BrokerUnavailable(
                        f"publish to {channel!r}: reply lost and outcome unknown; not retried"
                    ) from exc
                continue  # Redis closed the connection and has no trace of it: it never ran
            if renew:
                prepared.renewed = now
            return _stored(reply)
        raise AssertionError("unreachable")  # pragma: no cover

    def _prepare(self, channel: str) -> _Prepared:
        prepared = self._prepared
        now = time.monotonic()
        if len(prepared) >= PREPARED_KEPT:
            # Forget what its next publish would renew anyway; keep what was just prepared (its
            # first publish, which renews, may still wait for its reply).
            self._prepared = prepared = {
                c: p for c, p in prepared.items() if now - max(p.renewed, p.made) < 1.0
            }
        policy = self.rules.for_channel(channel)
        keys = self._history_keys(channel)
        settings = (
            b"%d" % max(policy.size, 1),
            b"%d" % max(int(policy.ttl * 1000), 1),
            self._channel_key(channel),
        )
        # The whole command has 3 + 3 keys + 7 arguments; the last four are the publish's own.
        head = encode(b"EVALSHA", self._publish.sha, len(keys), *keys, *settings)
        head = b"*%d" % (3 + len(keys) + len(settings) + 4) + head[head.index(b"\r\n") :]
        made = _Prepared(keys, settings, head, renewal_window(policy.ttl), now)
        prepared[channel] = made
        return made

    async def _find(
        self, channel: str, nonce: bytes, lost: OutcomeUnknown
    ) -> Stored | Untraceable | None:
        """Look a publish whose reply was lost up in the stream; None when it is not there,
        ``UNTRACEABLE`` when its absence proves nothing (the history was trimmed).

        The lookups of one channel made in the same loop turn (a lost connection takes many
        replies with it) share one scan of the stream's tail.
        """
        delay = 0.05
        for attempt in range(PUBLISH_ATTEMPTS):
            waiting = self._lookups.get(channel)
            if waiting is None:
                waiting = self._lookups[channel] = {}
                asyncio.get_running_loop().call_soon(self._look_up, channel)
            future = waiting.get(nonce)
            if future is None:
                future = waiting[nonce] = asyncio.get_running_loop().create_future()
            try:
                return await future
            except BrokerUnavailable as exc:  # a read: trying again is safe
                if attempt == PUBLISH_ATTEMPTS - 1:
                    raise BrokerUnavailable(
                        f"publish to {channel!r}: reply lost and Redis unreachable to check ({exc})"
                    ) from lost
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _look_up(self, channel: str) -> None:
        waiting = self._lookups.pop(channel, {})
        if waiting:
            task = asyncio.ensure_future(self._scan(channel, waiting))
            self._scans.add(task)
            task.add_done_callback(self._scans.discard)

    async def _scan(
        self, channel: str, waiting: dict[bytes, asyncio.Future[Stored | Untraceable | None]]
    ) -> None:
        _, stream_key, epoch_key = self._history_keys(channel)
        depth = max(FIND_DEPTH, 2 * len(waiting))
        try:
            reply = await self._run(
                FIND_PUBLISHES,
                _evalsha(FIND_PUBLISHES, [stream_key, epoch_key], [depth, *waiting]),
                route=channel,
            )
        except BrokerUnavailable as exc:
            for future in waiting.values():
                if not future.done():
                    future.set_exception(exc)
            return
        epoch, oldest = _text(reply[0]), int(reply[1])
        found = {reply[i]: int(reply[i + 1]) for i in range(2, len(reply) - 1, 2)}
        # Once the history has been trimmed, a publish that ran may have been trimmed away
        # before the lookup: not finding it then proves nothing.
        absent: Stored | Untraceable | None = None if oldest <= 1 else UNTRACEABLE
        for nonce, future in waiting.items():
            if not future.done():
                offset = found.get(nonce)
                future.set_result(absent if offset is None else Stored(offset, epoch))

    async def open(self) -> None:
        """Load every script now, so the first burst does not meet NOSCRIPT."""
        await asyncio.gather(*(self.load(script) for script in self.scripts))

    async def _run(self, script: Script, command: bytes, route: str) -> Reply:
        """``command`` (an EVALSHA of ``script``), loading the script when Redis does not know
        it (a restart, SCRIPT FLUSH): a NOSCRIPT reply means it did not run, so sending it
        again is safe. Callers that meet NOSCRIPT together share one SCRIPT LOAD."""
        carried = script is self._publish  # its reply comes with the node's own copy
        try:
            return await self._commands.call(command, route=route, carried=carried)
        except ReplyError as exc:
            if exc.code != "NOSCRIPT":
                raise BrokerUnavailable(f"Redis refused a script: {exc}") from exc
        await self.load(script, route)
        try:
            return await self._commands.call(command, route=route, carried=carried)
        except ReplyError as exc:
            raise BrokerUnavailable(f"Redis refused a script: {exc}") from exc

    async def load(self, script: Script, route: str | None = None) -> None:
        """SCRIPT LOAD, once however many callers ask at the same time; on the connection of
        ``route`` (the one whose command met NOSCRIPT), so the retry follows the load there."""
        loading = self._loading.get(script.sha)
        if loading is None:
            loading = asyncio.ensure_future(
                self._commands.call(encode(b"SCRIPT", b"LOAD", script.source), route=route)
            )
            self._loading[script.sha] = loading
            loading.add_done_callback(lambda _: self._loading.pop(script.sha, None))
        try:
            await asyncio.shield(loading)
        except ReplyError as exc:
            raise BrokerUnavailable(f"Redis refused a script: {exc}") from exc

    async def remove(self, channel: str) -> None:
        """Delete the channel's stream, offset counter and epoch in one command (one slot)."""
        try:
            await self._commands.call(encode(b"DEL", *self._history_keys(channel)), route=channel)
        except ReplyError as exc:
            raise BrokerUnavailable(f"Redis refused to remove a history: {exc}") from exc

    async def history(
        self, channel: str, since: int | None, epoch: str | None, limit: int
    ) -> HistoryPage:
        seq_key, stream_key, epoch_key = self._history_keys(channel)
        keys = [seq_key, stream_key, epoch_key]
        args: list[bytes | str | int] = [-1 if since is None else since, epoch or "", limit]
        reply = await self._run(READ_HISTORY, _evalsha(READ_HISTORY, keys, args), route=channel)
        top, current, entries = int(reply[0]), _text(reply[1]), reply[2]
        # Entry ids are "0-<offset>"; the body is the first field ("d").
        newest_first = [(int(entry_id[2:]), fields[1]) for entry_id, fields in entries]
        return page_from_newest(
            newest_first, since=since, wanted_epoch=epoch, epoch=current, top=top, limit=limit
        )


def _evalsha(
    script: Script, keys: Sequence[bytes | str], args: Sequence[bytes | str | int]
) -> bytes:
    return encode(b"EVALSHA", script.sha, len(keys), *keys, *args)


def _text(value: Reply) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stored(reply: Reply) -> Stored:
    return Stored(int(reply[0]), _text(reply[1]))
