"""Joining and leaving channels on behalf of a member: acknowledgement, replay, notices.

A join is acknowledged only when it holds: the broker confirmed the subscription and this node's
presence report lists the member. Live messages arriving meanwhile are parked in a
:class:`~sanic_feeds.replay.ReplayBuffer` (bounded in bytes like the member's buffer) and follow
the acknowledgement, after the replay if the member asked for one, without repeating it. The
node owns one :class:`Memberships`; sessions reach it through the node's ``Host`` methods.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from . import protocol
from .brokers import Broker
from .envelope import seal
from .errors import BrokerUnavailable
from .history import HistoryPage, JoinPosition
from .host import ChannelMember, Participant
from .hub import Hub, Sink, read_history
from .namespaces import ChannelOptions
from .presence import Member
from .replay import ReplayBuffer
from .session_state import JoinOutcome
from .wire import Wire

log = logging.getLogger(__name__)


class Memberships:
    """The member-facing half of channel membership (the hub keeps the tables)."""

    def __init__(
        self,
        hub: Hub,
        broker: Broker,
        *,
        client_buffer: int,
        options_for: Callable[[str], ChannelOptions],
        notices_for: Callable[[str], bool],
        node_id: str,
        reported: Callable[[], Awaitable[None]],
        others_in: Callable[[str], Awaitable[int]],
    ) -> None:
        """``others_in(channel)``: how many members other nodes report in ``channel`` (read
        only for channels whose namespace caps its members)."""
        self._hub = hub
        self._broker = broker
        self._client_buffer = client_buffer
        self._options_for = options_for
        self._others_in = others_in
        self._notices_for = notices_for
        self._node_id = node_id
        self._reported = reported

    async def join(
        self,
        member: Participant,
        channel: str,
        since: int | None,
        epoch: str | None,
        greeting: tuple[bytes, ...] | None,
        ack: bytes | None = None,
    ) -> JoinOutcome:
        """Join ``channel``, acknowledge it once it holds (``greeting``, else ``ack`` or
        ``subscribed``),
        replay from ``since`` if given. Or refuse: the broker could not subscribe, or the
        channel has its namespace's ``max_members`` already.

        The cap counts this node's members now and the others' as last reported, so joins on
        several nodes at the same moment may pass it by a few; it is a guard against runaway
        rooms, not an exact seat count.
        """
        options = self._options_for(channel)
        parked = ReplayBuffer(self._client_buffer, member.wire)
        record = Member(member.id, member.user, round(time.time(), 3), self._node_id)
        try:
            if options.max_members and await self._full(channel, options.max_members):
                return JoinOutcome.CHANNEL_FULL
            await self._hub.join(channel, member.id, parked, member.wire, record)
        except BrokerUnavailable as exc:
            log.warning("client=%s could not join %s: %s", member.id, channel, exc)
            return JoinOutcome.BROKER_UNAVAILABLE
        await self._reported()
        for body in greeting or ():
            member.send(body)
        seen = None if since is None else await self._recover(member, channel, since, epoch)
        if greeting is None:
            member.send(ack or member.codec.subscribed(channel))
        self._go_live(member, channel, parked, seen)
        if self._notices_for(channel):
            notice = protocol.user_joined(channel, member.id, member.user)
            await self._announce(channel, seal(notice, exclude=member.id))
        return JoinOutcome.JOINED

    async def join_at(
        self,
        member: ChannelMember,
        channel: str,
        *,
        since: int | None,
        epoch: str | None,
        wire: Wire,
        sink: Sink,
        acknowledge: Callable[[JoinPosition], bytes | None],
        info: object = None,
        chan_info: object = None,
    ) -> JoinOutcome:
        """Join for a protocol whose acknowledgement carries the stream position and the
        replay itself (Centrifugo's subscribe reply): ``acknowledge`` turns the position into
        the reply (or None: the caller sends it later), sent before any live frame; live
        frames then go to ``sink`` (the member's outbound, or something that holds them).

        With ``since`` (recovery) the position says whether every message after it is still
        there; without, it is the channel's newest id, read after the join holds, so nothing
        published after it can be missed.

        ``info`` and ``chan_info`` (the connection's and this subscription's info) go into
        the member's presence record and its join and leave notices.
        """
        options = self._options_for(channel)
        parked = ReplayBuffer(self._client_buffer, wire)
        now = round(time.time(), 3)
        record = Member(member.id, member.user, now, self._node_id, info, chan_info)
        try:
            if options.max_members and await self._full(channel, options.max_members):
                return JoinOutcome.CHANNEL_FULL
            await self._hub.join(channel, member.id, parked, wire, record)
        except BrokerUnavailable as exc:
            log.warning("client=%s could not join %s: %s", member.id, channel, exc)
            return JoinOutcome.BROKER_UNAVAILABLE
        await self._reported()
        size = options.history.size
        position = JoinPosition(history=size > 0)
        if size > 0:
            position = await self._position(channel, since, epoch, size)
        acknowledgement = acknowledge(position)
        if acknowledgement is not None:
            member.send(acknowledgement)
        if parked.overflowed:
            member.overflow()
        else:
            seen = parked.unseen(position.epoch, position.offset) if size > 0 else parked.frames
            for frame in seen:
                sink.send(frame)
            holds = (position.epoch, position.offset) if size > 0 else None
            self._hub.swap(channel, member.id, sink, holds)
        if self._notices_for(channel):
            notice = protocol.user_joined(channel, member.id, member.user, info, chan_info)
            await self._announce(channel, seal(notice, exclude=member.id))
        return JoinOutcome.JOINED

    async def _position(
        self, channel: str, since: int | None, epoch: str | None, size: int
    ) -> JoinPosition:
        if since is None:
            top = await read_history(self._broker, channel, 0, None, 0)
            return JoinPosition(True, top.epoch, top.top)
        page: HistoryPage = await read_history(self._broker, channel, since, epoch, size)
        if not page.complete:  # a hole the client must fill itself: it resumes from the top
            return JoinPosition(True, page.epoch, page.top, recovering=True)
        last = page.offsets[-1] if page.offsets else since
        return JoinPosition(True, page.epoch, last, True, True, page.messages)

    async def _full(self, channel: str, most: int) -> bool:
        here = self._hub.members(channel)
        return here >= most or here + await self._others_in(channel) >= most

    async def resync(
        self, member: Participant, channel: str, since: int, epoch: str | None
    ) -> None:
        """Replay a joined channel from ``since`` (then ``subscribed``), parking live frames."""
        parked = ReplayBuffer(self._client_buffer, member.wire)
        self._hub.swap(channel, member.id, parked)
        seen = await self._recover(member, channel, since, epoch)
        member.send(member.codec.subscribed(channel))
        self._go_live(member, channel, parked, seen)

    async def leave(self, member: ChannelMember, channel: str) -> None:
        """Leave ``channel``; the notice names the member as its presence record did (with
        the info it joined with)."""
        record = self._hub.records(channel).get(member.id)
        await self._hub.leave(channel, member.id)
        if self._notices_for(channel):
            info, chan_info = (None, None) if record is None else (record.info, record.chan_info)
            notice = protocol.user_left(channel, member.id, member.user, info, chan_info)
            await self._announce(channel, seal(notice))

    async def leave_all(self, member: ChannelMember, channels: list[str]) -> None:
        """Leave every channel of a member whose connection ended."""
        for channel in channels:
            try:
                await self.leave(member, channel)
            except Exception:  # leaving must finish for every channel, whatever one does
                log.exception("client=%s: leaving %s failed", member.id, channel)

    async def _recover(
        self, member: Participant, channel: str, since: int, epoch: str | None
    ) -> tuple[str, int]:
        """Send the stored messages after ``since``, then ``recovered``.

        Returns the position (epoch, id) the client now holds everything up to, so that the
        parked live frames the history already contained can be dropped.
        """
        size = self._options_for(channel).history.size
        if size <= 0:  # history is off here: nothing to recover from, and the client is told
            member.send(member.codec.recovered(channel, False, 0, "", 0))
            return "", 0
        page = await read_history(self._broker, channel, since, epoch, size)
        for body in page.messages:
            member.send(body)
        last = page.offsets[-1] if page.offsets else (since if page.complete else 0)
        member.send(
            member.codec.recovered(channel, page.complete, len(page.messages), page.epoch, last)
        )
        return page.epoch, last

    def _go_live(
        self, member: Participant, channel: str, parked: ReplayBuffer, seen: tuple[str, int] | None
    ) -> None:
        """Forward the parked frames not already replayed, then switch the member to its real
        buffer, with no await in between: nothing is lost or doubled. Stored messages up to
        ``seen`` that reach the node only later skip the member (the hub keeps ``seen``)."""
        if parked.overflowed:
            member.overflow()
            return
        frames = parked.frames if seen is None else parked.unseen(*seen)
        outbound = member.outbound
        for frame in frames:
            outbound.send(frame)
        self._hub.swap(channel, member.id, outbound, seen)

    async def _announce(self, channel: str, payload: bytes) -> None:
        try:
            await self._broker.publish(channel, payload)
        except BrokerUnavailable as exc:
            log.warning("join/leave notice on %s not sent: %s", channel, exc)
