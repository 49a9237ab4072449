"""How a node's counts recover from a failed count: a recount that fails partway is made
again, whole, at the next check. Memory presence on a clock moved by hand, with counts made to
fail on purpose: no server, no waiting."""

from __future__ import annotations

from unittest.mock import ANY

import pytest

from sanic_feeds.admission import UserSlots
from sanic_feeds.count_reaper import CountReaper
from sanic_feeds.errors import BrokerUnavailable
from sanic_feeds.occupancy import Occupancy
from sanic_feeds.presence import CountChange, Counted, MemoryPresence
from sanic_feeds.presence.nats import NatsPresence
from sanic_feeds.protocol import CloseCode
from sanic_feeds.recount import Recount


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Holder:
    """Holds one key; its recount sets it, failing the first ``fails`` times."""

    def __init__(self, presence: MemoryPresence, node: str, key: str, fails: int = 0) -> None:
        self._presence, self._node, self._key = presence, node, key
        self.fails = fails
        self.recounts = 0

    @property
    def holds_counts(self) -> bool:
        return True

    async def recount(self) -> None:
        if self.fails:
            self.fails -= 1
            raise BrokerUnavailable("down (test)")
        await self._presence.set_count(self._key, self._node, 1)
        self.recounts += 1

    async def settle(self) -> None:
        return


async def claimed_node(presence: MemoryPresence, clock: Clock) -> None:
    """Node ``back`` counted two keys, was cut off past its ttl and claimed by ``alive``."""
    await presence.report_rooms("back", {}, 0, ttl=1)
    await presence.set_count("ann", "back", 1)
    await presence.set_count("#room:a", "back", 1)
    clock.now += 2
    await presence.report_rooms("alive", {}, 0, ttl=100)
    assert await presence.claim_expired("alive") == ["#room:a", "ann"]
    await presence.report_rooms("back", {}, 0, ttl=100)  # back


async def test_a_recount_that_fails_partway_is_made_again_whole() -> None:
    """The first holder's recount fails: the second still sets its counts (which lists the
    node as counting again), the failure is raised, and the next check recounts anyway,
    though the backend no longer says the counts were cleared."""
    clock = Clock()
    presence = MemoryPresence(clock=clock)
    await claimed_node(presence, clock)
    users, rooms = Holder(presence, "back", "ann", fails=1), Holder(presence, "back", "#room:a")
    recount = Recount(presence, "back")
    recount.holders += [users, rooms]
    with pytest.raises(BrokerUnavailable):
        await recount.check()
    assert (users.recounts, rooms.recounts) == (0, 1)
    await recount.check()
    assert (users.recounts, rooms.recounts) == (1, 2)
    assert (await presence.add_count("ann", "alive", 0)).total == 1
    await recount.check()  # done: nothing more
    assert (users.recounts, rooms.recounts) == (1, 2)


class FlakyPresence(MemoryPresence):
    """Memory presence whose next ``fails`` counts raise, before changing anything."""

    fails = 0

    async def add_count(self, key: str, node_id: str, delta: int) -> Counted:
        self._maybe_fail()
        return await super().add_count(key, node_id, delta)

    async def set_count(self, key: str, node_id: str, value: int) -> CountChange:
        self._maybe_fail()
        return await super().set_count(key, node_id, value)

    def _maybe_fail(self) -> None:
        if self.fails:
            self.fails -= 1
            raise BrokerUnavailable("down (test)")


async def dead_node_counted(presence: MemoryPresence, clock: Clock, *keys: str) -> None:
    """Node ``dead`` counted ``keys`` and stopped reporting; ``alive`` is live."""
    await presence.report_rooms("dead", {}, 0, ttl=1)
    for key in keys:
        await presence.set_count(key, "dead", 1)
    clock.now += 2
    await presence.report_rooms("alive", {}, 0, ttl=100)


async def test_claimed_counts_that_fail_are_counted_at_the_next_sweep() -> None:
    """The survivor claims a dead node's user and channel, and their zero counts fail: the
    claim already took them from the backend, so the next sweep counts them again, and the
    channel gets its one "vacated"."""
    clock = Clock()
    presence = FlakyPresence(clock=clock)
    await dead_node_counted(presence, clock, "ann", "#room:a")
    events: list[tuple[str, str]] = []
    occupancy = Occupancy(presence, "alive", lambda _: 0, lambda *event: events.append(event))
    reaper = CountReaper(presence, "alive", interval=60)
    reaper.takers.append(occupancy.take)
    reaper.recount.holders.append(occupancy)
    presence.fails = 2
    with pytest.raises(BrokerUnavailable):
        await reaper.sweep()
    await occupancy.aclose()
    assert events == []
    assert await presence.claim_expired("alive") == []  # claimed: only the retries have them
    await reaper.sweep()
    await occupancy.aclose()
    assert events == [("channel.vacated", "a")]
    assert (await presence.add_count("ann", "alive", 0)).total == 0
    await reaper.sweep()  # nothing more
    await occupancy.aclose()
    assert events == [("channel.vacated", "a")]


class LostReplyPresence(MemoryPresence):
    """Memory presence whose next ``lost`` sets reach the backend and then raise (the reply
    lost on the way back)."""

    lost = 0

    async def set_count(self, key: str, node_id: str, value: int) -> CountChange:
        changed = await super().set_count(key, node_id, value)
        if self.lost:
            self.lost -= 1
            raise BrokerUnavailable("reply lost (test)")
        return changed


async def test_a_user_count_whose_answer_was_lost_is_set_right_at_the_next_sweep() -> None:
    """The connection is refused (its count failed), but the count reached the backend: the
    next sweep sets the user's count back to what the node holds."""
    presence = LostReplyPresence()
    await presence.report_rooms("n1", {}, 0, ttl=100)
    await presence.report_rooms("n2", {}, 0, ttl=100)
    slots = UserSlots(presence, "n1", 2, lambda: None)
    reaper = CountReaper(presence, "n1", interval=60)
    reaper.recount.holders.append(slots)
    presence.lost = 1
    assert await slots.acquire("ann") == (CloseCode.BROKER_UNAVAILABLE, ANY)
    assert (await presence.add_count("ann", "n2", 0)).total == 1  # what the backend carries
    await reaper.sweep()
    assert (await presence.add_count("ann", "n2", 0)).total == 0


async def test_a_leave_whose_count_failed_says_vacated_at_the_next_sweep() -> None:
    """The last leave's set to 0 fails: the backend still counts the node, so the next sweep
    sets it again, and that count says "vacated"."""
    presence = FlakyPresence()
    await presence.report_rooms("n1", {}, 0, ttl=100)
    members = {"a": 1}
    events: list[tuple[str, str]] = []
    occupancy = Occupancy(
        presence, "n1", lambda channel: members.get(channel, 0), lambda *event: events.append(event)
    )
    reaper = CountReaper(presence, "n1", interval=60)
    reaper.recount.holders.append(occupancy)
    occupancy.changed("a")
    await occupancy.aclose()
    members["a"] = 0
    presence.fails = 1
    occupancy.changed("a")
    await occupancy.aclose()
    assert events == [("channel.occupied", "a")]
    await reaper.sweep()
    await occupancy.aclose()
    assert events == [("channel.occupied", "a"), ("channel.vacated", "a")]


async def test_a_failed_nats_count_leaves_the_nodes_own_count_as_it_was() -> None:
    """On NATS a node's count travels in its reports: a count whose read of the others fails
    must not be carried by the next report (the caller took it as not made)."""
    presence = NatsPresence("nats://127.0.0.1:1")

    async def down() -> dict[str, dict[str, object]]:
        raise BrokerUnavailable("down (test)")

    presence._reports = down  # type: ignore[method-assign]
    with pytest.raises(BrokerUnavailable):
        await presence.set_count("ann", "n1", 1)
    assert presence._counts.report("n1") == {}


def test_no_user_id_shares_a_channels_occupancy_counter() -> None:
    """A user id that looks like an occupancy counter (``#room:<channel>``) is counted under
    ``#user:``, so its connections and the channel's occupancy never mix."""
    from sanic_feeds.admission import counter_of
    from sanic_feeds.occupancy import KEY_PREFIX

    assert counter_of("ann") == "ann"
    assert counter_of(f"{KEY_PREFIX}lobby") == f"#user:{KEY_PREFIX}lobby"
    assert not counter_of(f"{KEY_PREFIX}lobby").startswith(KEY_PREFIX)
