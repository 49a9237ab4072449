"""How a node's counts recover from a failed count: a recount that fails partway is made
again, whole, at the next check. Memory presence on a clock moved by hand, with counts made to
fail on purpose: no server, no waiting."""

from __future__ import annotations

from sanic_feeds.errors import BrokerUnavailable
from sanic_feeds.presence import MemoryPresence
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
    try:
        await recount.check()
    except BrokerUnavailable:
        pass
    else:
        raise AssertionError("the failure was not raised")
    assert (users.recounts, rooms.recounts) == (0, 1)
    await recount.check()
    assert (users.recounts, rooms.recounts) == (1, 2)
    assert (await presence.add_count("ann", "alive", 0)).total == 1
    await recount.check()  # done: nothing more
    assert (users.recounts, rooms.recounts) == (1, 2)
