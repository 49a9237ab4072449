"""The boundary between a member's replay and its live messages, without sockets.

The history read and the subscription are separate connections: a message the member's replay
already sent can reach the node afterwards, live (the read's reply overtook the publish) or in a
gap refill that starts from the node's own position. The member must get it once. The memory
broker's ``bus.store`` stores a message without publishing it, which makes both orders
deterministic here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from sanic_feeds.brokers import HistoryPolicy, MemoryBroker
from sanic_feeds.codec import FEED_JSON, Codec
from sanic_feeds.envelope import seal
from sanic_feeds.frames import payload_of, text_frame
from sanic_feeds.history import HistoryPage, JoinPosition
from sanic_feeds.hub import Hub
from sanic_feeds.membership import Memberships
from sanic_feeds.namespaces import ChannelOptions
from sanic_feeds.wire import WEBSOCKET, Wire

OPTIONS = ChannelOptions(history_size=100, history_ttl=60.0)


class Collect:
    """An outbound buffer that keeps what it was given, decoded."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def send(self, frame: bytes) -> None:
        self.bodies.append(orjson.loads(payload_of(frame)))

    def stored_ids(self) -> list[int]:
        return [b["id"] for b in self.bodies if "id" in b and b["type"] != "recovered"]


class Member:
    """A feed-protocol member as the memberships see it."""

    def __init__(self, client_id: str) -> None:
        self.id = client_id
        self.user = client_id
        self.outbound = Collect()
        self.overflowed = False

    @property
    def wire(self) -> Wire:
        return WEBSOCKET

    @property
    def codec(self) -> Codec:
        return FEED_JSON

    def send(self, body: bytes) -> None:
        self.outbound.send(text_frame(body))

    def overflow(self) -> None:
        self.overflowed = True


def data(n: int) -> bytes:
    return orjson.dumps({"type": "data", "channel": "c", "data": n})


class LateBroker(MemoryBroker):
    """A broker whose history read finds messages stored right before it that reach the node's
    subscription only later (``late``): the read's reply overtook their publish."""

    def __init__(self) -> None:
        super().__init__(history=HistoryPolicy(size=100))
        self.store_before_read = 0
        self.late: list[bytes] = []

    def store_unpublished(self, n: int) -> bytes:
        return self.bus.store("c", data(n), self.history_rules.for_channel("c"))[1]

    async def history(
        self, channel: str, since: int | None, epoch: str | None, limit: int
    ) -> HistoryPage:
        while self.store_before_read:
            self.store_before_read -= 1
            self.late.append(self.store_unpublished(len(self.late) + 100))
        return await super().history(channel, since, epoch, limit)


async def setup() -> tuple[LateBroker, Hub, Memberships]:
    broker = LateBroker()
    hub = Hub(broker, history_limit=100)
    await broker.open(hub.deliver, hub.gap)

    async def nothing() -> None:
        return None

    async def nobody(channel: str) -> int:
        return 0

    memberships = Memberships(
        hub,
        broker,
        client_buffer=1 << 20,
        options_for=lambda channel: OPTIONS,
        notices_for=lambda channel: False,
        node_id="n1",
        reported=nothing,
        others_in=nobody,
    )
    return broker, hub, memberships


async def test_a_live_message_the_replay_already_sent_is_not_sent_again() -> None:
    """The read returns a message whose publish reaches the node after the member went live:
    the member gets it once, in order, then what follows."""
    broker, hub, memberships = await setup()
    for n in range(1, 4):
        await broker.publish_stored("c", data(n))
    broker.store_before_read = 2  # ids 4 and 5: stored, read, published late
    member = Member("m")
    await memberships.join(member, "c", since=1, epoch=None, greeting=None)
    for late in broker.late:
        hub.deliver("c", seal(late))
    await broker.publish_stored("c", data(6))
    assert member.outbound.stored_ids() == [2, 3, 4, 5, 6]
    kinds = [b["type"] for b in member.outbound.bodies]
    assert kinds == ["data", "data", "data", "data", "recovered", "subscribed", "data"]


async def test_a_gap_refill_from_behind_a_member_skips_what_its_replay_sent() -> None:
    """The node missed messages a member's replay just gave it; the node's gap refill sends
    them to the others and not again to that member."""
    broker, hub, memberships = await setup()
    await memberships.join(first := Member("a"), "c", since=None, epoch=None, greeting=None)
    await broker.publish_stored("c", data(1))  # the node's stream is at 1
    for n in (2, 3):
        broker.store_unpublished(n)  # missed by the node (its subscription was lost)
    back = Member("b")
    await memberships.join(back, "c", since=1, epoch=None, greeting=None)  # replays 2, 3
    hub.gap("c")
    async with asyncio.timeout(5):
        while hub.recovered < 2:
            await asyncio.sleep(0.01)
    await broker.publish_stored("c", data(4))
    assert first.outbound.stored_ids() == [1, 2, 3, 4]
    assert back.outbound.stored_ids() == [2, 3, 4]


async def test_a_resync_replays_again_from_its_own_since() -> None:
    """A member that resyncs gets its new replay whole, whatever its earlier replay held."""
    broker, hub, memberships = await setup()
    for n in range(1, 4):
        await broker.publish_stored("c", data(n))
    broker.store_before_read = 1  # id 4, late
    member = Member("m")
    await memberships.join(member, "c", since=2, epoch=None, greeting=None)
    await memberships.resync(member, "c", since=1, epoch=None)
    for late in broker.late:
        hub.deliver("c", seal(late))
    await broker.publish_stored("c", data(5))
    assert member.outbound.stored_ids() == [3, 4, 2, 3, 4, 5]


async def test_a_join_at_the_top_skips_live_messages_up_to_it() -> None:
    """A join whose reply carries the stream position (Centrifugo's) does not get a message at
    or below that position afterwards, though its publish reaches the node late."""
    broker, hub, memberships = await setup()
    await broker.publish_stored("c", data(1))
    broker.store_before_read = 1  # id 2: read as the top, published late
    member = Member("m")
    positions: list[JoinPosition] = []

    def acknowledge(position: JoinPosition) -> bytes | None:
        positions.append(position)
        return None

    await memberships.join_at(
        member,
        "c",
        since=None,
        epoch=None,
        wire=WEBSOCKET,
        sink=member.outbound,
        acknowledge=acknowledge,
    )
    assert positions[0].offset == 2
    for late in broker.late:
        hub.deliver("c", seal(late))
    await broker.publish_stored("c", data(3))
    assert member.outbound.stored_ids() == [3]
