"""Gap refills in the hub: messages held back while the history is read go through the same
replay rule as a member's resync, bounded in bytes."""

from __future__ import annotations

import asyncio

import orjson

from sanic_feeds.brokers import HistoryPolicy, MemoryBroker
from sanic_feeds.envelope import seal
from sanic_feeds.errors import BrokerUnavailable
from sanic_feeds.frames import payload_of
from sanic_feeds.hub import Hub


class Collect:
    def __init__(self) -> None:
        self.bodies: list[dict[str, object]] = []

    def send(self, frame: bytes) -> None:
        self.bodies.append(orjson.loads(payload_of(frame)))


def data(n: int, size: int = 10) -> bytes:
    return orjson.dumps({"type": "data", "channel": "c", "data": n, "pad": "x" * size})


async def setup(park_limit: int = 0) -> tuple[MemoryBroker, Hub, Collect]:
    broker = MemoryBroker(history=HistoryPolicy(size=100))
    hub = Hub(broker, history_limit=100, park_limit=park_limit)
    await broker.open(hub.deliver, hub.gap)
    member = Collect()
    await hub.join("c", "m1", member)
    await broker.publish_stored("c", data(1))
    return broker, hub, member


async def test_held_back_messages_follow_the_refill_without_repeats() -> None:
    """During a refill, live messages wait; those the history already gave are dropped."""
    broker, hub, member = await setup()
    stored = [
        broker.bus.store("c", data(n), broker.history_rules.for_channel("c"))[1] for n in (2, 3)
    ]
    hub.gap("c")  # the node missed 2 and 3 ...
    for body in stored:  # ... which arrive late, as a re-subscription would hand them over
        hub.deliver("c", seal(body))
    await broker.publish_stored("c", data(4))  # live, during the refill
    async with asyncio.timeout(5):
        while len(member.bodies) < 4:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0)
    assert [b["data"] for b in member.bodies] == [1, 2, 3, 4]


async def test_too_much_held_back_ends_in_a_gap_notice() -> None:
    """Past the byte limit the held-back messages are dropped and members are told."""
    broker, hub, member = await setup(park_limit=2000)
    hub.gap("c")
    for n in range(2, 12):
        hub.deliver(
            "c", seal(broker.bus.store("c", data(n, 500), broker.history_rules.for_channel("c"))[1])
        )
    async with asyncio.timeout(5):
        while not any(b["type"] == "gap" for b in member.bodies):
            await asyncio.sleep(0.01)
    # What the history held still arrived, once each, before the notice.
    replayed = [b["data"] for b in member.bodies if b["type"] == "data"]
    assert replayed == list(range(1, 12))
    assert member.bodies[-1]["type"] == "gap"


class FailsOnce(MemoryBroker):
    """A broker whose first SUBSCRIBE fails after a while (as a refused or lost one would)."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    async def subscribe(self, channel: str) -> None:
        self.attempts += 1
        await asyncio.sleep(0.05)
        if self.attempts == 1:
            raise BrokerUnavailable("refused")
        await super().subscribe(channel)


async def test_a_join_waiting_behind_a_failed_subscribe_subscribes_again() -> None:
    """Two joins at once, the first SUBSCRIBE fails: the second join does not take the failed
    attempt for a subscription; it subscribes again and then really receives."""
    broker = FailsOnce()
    hub = Hub(broker)
    await broker.open(hub.deliver, hub.gap)
    first, second = Collect(), Collect()
    results = await asyncio.gather(
        hub.join("c", "a", first), hub.join("c", "b", second), return_exceptions=True
    )
    assert isinstance(results[0], BrokerUnavailable) and results[1] is None
    assert broker.attempts == 2
    assert "c" in broker.subscriptions
    await broker.publish("c", seal(data(1)))
    assert [b["data"] for b in second.bodies] == [1]
