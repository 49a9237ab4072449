"""The presence contract (node room reports, per-node counts and the claim of a dead node's),
run against memory, Redis, Redis Cluster and NATS.

Expiry is tested without sleeping: the memory backend runs on a clock the test advances, and
Redis, which expires keys on its own clock, is polled until the expiry shows, with a deadline.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import pytest

from sanic_feeds.brokers.nats_subjects import to_token
from sanic_feeds.presence import (
    CountChange,
    Counted,
    Member,
    MemoryPresence,
    Presence,
    create_presence,
)
from sanic_feeds.presence.nats import NatsPresence
from sanic_feeds.presence.redis import RedisPresence
from support.ws import eventually

ExpiryCheck = Callable[[], Awaitable[bool]]

TTL = 1.0
"""Ttl of the reports that must expire; Redis tests wait for it in real time."""

REDIS_EXPIRY_SLACK_S = 5.0
"""How much later than its ttl a Redis expiry may be seen on a loaded machine."""


class ManualClock:
    """The memory backend's clock, moved only by the test."""

    STEP = 0.01

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def wait_for(self, check: ExpiryCheck, within: float) -> None:
        """Advance in steps of ``STEP`` until ``check`` holds; fail if that takes past
        ``within`` seconds (so an expiry that comes late fails here, unlike with Redis)."""
        start = self.now
        steps = 0
        while not await check():
            if steps * self.STEP > within:
                raise AssertionError(f"{check.__qualname__} still false {within} s later")
            steps += 1
            self.now = start + steps * self.STEP


class RedisClock:
    """Real time: Redis expires the keys itself, so the test polls until it shows."""

    async def wait_for(self, check: ExpiryCheck, within: float) -> None:
        await eventually(check, timeout=within + REDIS_EXPIRY_SLACK_S, interval=0.02)


Clock = ManualClock | RedisClock


@pytest.fixture
def clock(backend_url: str) -> Clock:
    return ManualClock() if backend_url == "memory://" else RedisClock()


OpenPeer = Callable[[], Awaitable[Presence]]


@pytest.fixture
async def open_peer(backend_url: str, clock: Clock) -> AsyncIterator[OpenPeer]:
    """Opens another client of the same presence (same backend, same prefix): what another
    node would use. The memory backend serves one process, so its peers share one object."""
    prefix = f"test-{secrets.token_hex(3)}:"
    shared = MemoryPresence(clock=clock) if isinstance(clock, ManualClock) else None
    async with AsyncExitStack() as stack:

        async def open_peer() -> Presence:
            backend = shared or create_presence(backend_url, prefix=prefix)
            await backend.open()
            stack.push_async_callback(backend.aclose)
            return backend

        yield open_peer


@pytest.fixture
async def presence(open_peer: OpenPeer) -> Presence:
    return await open_peer()


def member_gone(presence: Presence, channel: str, client: str) -> ExpiryCheck:
    async def member_gone() -> bool:
        return client not in [m.client for m in await presence.members(channel)]

    return member_gone


async def test_reports_are_summed_over_nodes(presence: Presence) -> None:
    """rooms() adds every live node's counts per channel, and their clients."""
    await presence.report_rooms("n1", {"a": 2, "b": 1}, 3, ttl=10)
    await presence.report_rooms("n2", {"a": 5}, 5, ttl=10)
    totals = await presence.rooms()
    assert totals.rooms == {"a": 7, "b": 1}
    assert totals.clients == 8
    assert await presence.nodes() == ["n1", "n2"]


async def test_a_new_report_replaces_the_old(presence: Presence) -> None:
    """A node's report is a snapshot: channels it no longer has disappear."""
    await presence.report_rooms("n1", {"a": 2, "b": 1}, 2, ttl=10)
    await presence.report_rooms("n1", {"b": 4}, 4, ttl=10)
    totals = await presence.rooms()
    assert totals.rooms == {"b": 4}
    assert totals.clients == 4


async def test_exclude_node(presence: Presence) -> None:
    """A node can leave its own report out (it adds its live numbers instead)."""
    await presence.report_rooms("me", {"a": 1}, 1, ttl=10)
    await presence.report_rooms("other", {"a": 2}, 2, ttl=10)
    totals = await presence.rooms(exclude_node="me")
    assert (totals.rooms, totals.clients) == ({"a": 2}, 2)


async def test_reports_expire(presence: Presence, clock: Clock) -> None:
    """A node that stops reporting (crashed) drops out after its ttl."""
    await presence.report_rooms("crashed", {"a": 3}, 3, ttl=TTL)
    await presence.report_rooms("alive", {"a": 1}, 1, ttl=10 * TTL)
    assert (await presence.rooms()).rooms == {"a": 4}

    async def only_alive_left() -> bool:
        return await presence.nodes() == ["alive"]

    await clock.wait_for(only_alive_left, within=TTL)
    totals = await presence.rooms()
    assert (totals.rooms, totals.clients) == ({"a": 1}, 1)


async def test_withdraw_removes_at_once(presence: Presence) -> None:
    """A node shutting down cleanly removes its report immediately."""
    await presence.report_rooms("n1", {"a": 1}, 1, ttl=10)
    await presence.withdraw("n1")
    totals = await presence.rooms()
    assert (totals.rooms, totals.clients) == ({}, 0)
    assert await presence.nodes() == []


def member(client: str, node: str, user: str = "u") -> Member:
    return Member(client, user, 1700000000.5, node)


async def test_member_lists_per_node_and_channel(presence: Presence) -> None:
    """members() gathers every live node's list for a channel; a new list replaces the old."""
    await presence.report_rooms(
        "n1", {"a": 2}, 2, 10, {"a": [member("c1", "n1"), member("c2", "n1")]}
    )
    await presence.report_rooms(
        "n2", {"a": 1, "b": 1}, 1, 10, {"a": [member("c3", "n2")], "b": [member("c3", "n2")]}
    )
    assert sorted(m.client for m in await presence.members("a")) == ["c1", "c2", "c3"]
    assert [m.client for m in await presence.members("b")] == ["c3"]
    assert sorted(m.client for m in await presence.members("a", exclude_node="n1")) == ["c3"]
    got = await presence.members("b")
    assert got == [Member("c3", "u", 1700000000.5, "n2")]
    await presence.report_rooms("n1", {"a": 1}, 1, 10, {"a": [member("c2", "n1")]})
    assert sorted(m.client for m in await presence.members("a")) == ["c2", "c3"]
    await presence.report_rooms("n2", {"a": 1}, 1, 10, {"b": []})
    assert await presence.members("b") == []


async def test_member_info_is_part_of_the_record(presence: Presence) -> None:
    """A member's connection and channel info travel with its record, so presence read on
    any node shows them."""
    shown = Member("c1", "u", 1700000000.5, "n1", {"role": "x"}, {"seat": [1, 2]})
    await presence.report_rooms("n1", {"i": 1}, 1, 10, {"i": [shown, member("c2", "n1")]})
    got = sorted(await presence.members("i"), key=lambda m: m.client)
    assert got == [shown, member("c2", "n1")]
    assert got[0].public()["info"] == {"role": "x"} and "info" not in got[1].public()


def test_records_of_an_older_release_are_read() -> None:
    """A record written before ``info``, ``chan_info`` (or ``node``) existed is still read;
    one without them is written as it was."""
    old = b'{"client":"c1","user":"u","joined_at":1700000000.5}'
    assert Member.from_json(old) == Member("c1", "u", 1700000000.5)
    assert Member.from_json(Member("c1", "u", 1.5, "n").to_json()) == Member("c1", "u", 1.5, "n")
    assert b"info" not in Member("c1", "u", 1.5, "n").to_json()


async def test_unchanged_lists_stay_alive_with_the_report(presence: Presence, clock: Clock) -> None:
    """A report that does not resend a channel's list keeps it alive (refreshes its expiry).

    Two witness nodes, reported just after the first report, show when time has passed: the
    list is refreshed once half its ttl is gone, and checked once its first ttl is gone. On a
    loaded machine the refresh can come too late to prove anything (after the first ttl): the
    scenario is then run again on a fresh channel, at most three times.
    """
    for attempt in range(3):
        channel, witnesses = f"a{attempt}", f"b{attempt}"
        started = time.monotonic()
        await presence.report_rooms("n1", {channel: 1}, 1, TTL, {channel: [member("c1", "n1")]})
        await presence.report_rooms(
            "half", {witnesses: 1}, 1, TTL / 2, {witnesses: [member("h", "half")]}
        )
        await presence.report_rooms(
            "full", {witnesses: 1}, 1, TTL, {witnesses: [member("f", "full")]}
        )
        await clock.wait_for(member_gone(presence, witnesses, "h"), within=TTL / 2)
        refreshed_in_time = isinstance(clock, ManualClock) or time.monotonic() - started < TTL * 0.8
        await presence.report_rooms("n1", {channel: 1}, 1, TTL)
        await clock.wait_for(member_gone(presence, witnesses, "f"), within=TTL)
        if refreshed_in_time:
            assert [m.client for m in await presence.members(channel)] == ["c1"]
            return
    pytest.skip("the machine was too loaded to refresh a report within its ttl, three times")


async def test_crashed_node_members_disappear(presence: Presence, clock: Clock) -> None:
    """Members of a node that stops reporting vanish once its ttl has passed: no ghosts."""
    await presence.report_rooms("dead", {"a": 1}, 1, TTL, {"a": [member("ghost", "dead")]})
    await presence.report_rooms("alive", {"a": 1}, 1, 10 * TTL, {"a": [member("c1", "alive")]})
    await clock.wait_for(member_gone(presence, "a", "ghost"), within=TTL)
    assert [m.client for m in await presence.members("a")] == ["c1"]
    await presence.withdraw("alive")
    assert await presence.members("a") == []


async def test_memory_report_counts_until_its_ttl_on_the_given_clock() -> None:
    """MemoryPresence reads expiry from the clock it is given: a report counts until exactly
    ``ttl`` later on that clock, whatever the real time."""
    clock = ManualClock()
    presence = MemoryPresence(clock=clock)
    await presence.report_rooms("n1", {"a": 1}, 1, ttl=30, members={"a": [member("c1", "n1")]})
    clock.now += 29.99
    assert await presence.nodes() == ["n1"]
    assert [m.client for m in await presence.members("a")] == ["c1"]
    clock.now += 0.01
    assert await presence.nodes() == []
    assert await presence.members("a") == []


async def test_user_connections_count_over_live_nodes(presence: Presence) -> None:
    """A user's connections are summed over the nodes; a node's counts reach the others with
    its next report at the latest; a withdrawn node's no longer count."""
    for node in ("n1", "n2"):
        await presence.report_rooms(node, {}, 0, ttl=10)
    assert await presence.user_connections("ann", "n1", 1) == 1
    assert await presence.user_connections("ann", "n1", 1) == 2
    await presence.report_rooms("n1", {}, 2, ttl=10)
    assert await presence.user_connections("ann", "n2", 1) == 3
    await presence.report_rooms("n2", {}, 1, ttl=10)
    assert await presence.user_connections("bob", "n2", 1) == 1
    assert await presence.user_connections("ann", "n1", -1) == 2
    await presence.report_rooms("n1", {}, 1, ttl=10)
    await presence.withdraw("n2")
    assert await presence.user_connections("ann", "n1", 0) == 1
    assert await presence.user_connections("ann", "n1", -1) == 0
    assert await presence.user_connections("ann", "n1", -1) == 0  # never below zero


async def test_a_crashed_nodes_user_connections_stop_counting(
    presence: Presence, clock: Clock
) -> None:
    await presence.report_rooms("alive", {}, 1, ttl=10 * TTL)
    await presence.report_rooms("crashed", {}, 1, ttl=TTL)
    await presence.user_connections("ann", "crashed", 1)
    await presence.report_rooms("crashed", {}, 1, ttl=TTL)
    assert await presence.user_connections("ann", "alive", 0) == 1

    async def crashed_gone() -> bool:
        return await presence.user_connections("ann", "alive", 0) == 0

    await clock.wait_for(crashed_gone, within=TTL)


DEAD_TTL = TTL / 2
"""Ttl of the node that crashes in the count tests: only long enough to be seen alive once."""


async def dead_holder(open_peer: OpenPeer, keys: list[str]) -> Presence:
    """A node ``dead`` that counts ``keys`` once and reports for ``DEAD_TTL`` only (then
    crashes)."""
    dead = await open_peer()
    await dead.report_rooms("dead", {}, 0, ttl=DEAD_TTL)
    for key in keys:
        assert await dead.add_count(key, "dead", 1) == Counted(1)
    await dead.report_rooms("dead", {}, 0, ttl=DEAD_TTL)  # where counts travel in the report
    return dead


async def gone(presence: Presence, clock: Clock, node: str) -> None:
    async def node_gone() -> bool:
        return node not in await presence.nodes()

    await clock.wait_for(node_gone, within=DEAD_TTL)


async def test_a_dead_nodes_last_counts_lapse_once(
    presence: Presence, open_peer: OpenPeer, clock: Clock
) -> None:
    """A node that stops reporting leaves counts behind: its keys are claimed by one caller,
    once; counting each then clears it and says "lapsed" only where no live node counts the
    key; a later count of the key starts from zero again."""
    await presence.report_rooms("alive", {}, 0, ttl=10 * TTL)
    await dead_holder(open_peer, ["#room:a", "#room:b"])
    assert await presence.add_count("#room:b", "alive", 1) == Counted(2)
    await presence.report_rooms("alive", {}, 0, ttl=10 * TTL)
    assert await presence.claim_expired("alive") == []  # nobody dead yet
    await gone(presence, clock, "dead")
    assert await presence.claim_expired("alive") == ["#room:a", "#room:b"]
    assert await presence.claim_expired("alive") == []  # claimed once
    assert await presence.add_count("#room:a", "alive", 0) == Counted(0, lapsed=True)
    assert await presence.add_count("#room:b", "alive", 0) == Counted(1)
    assert await presence.add_count("#room:a", "alive", 0) == Counted(0)
    assert await presence.add_count("#room:a", "alive", 1) == Counted(1)
    assert await presence.add_count("#room:b", "alive", -1) == Counted(0)


async def test_racing_claims_lapse_a_key_once(
    presence: Presence, open_peer: OpenPeer, clock: Clock
) -> None:
    """Two survivors claim and count at the same moment: each dead node's keys go to one of
    them, and each key that lost its last holder lapses for exactly one."""
    keys = [f"#room:r{i}" for i in range(5)]
    other = await open_peer()
    await presence.report_rooms("s1", {}, 0, ttl=10 * TTL)
    await other.report_rooms("s2", {}, 0, ttl=10 * TTL)
    await dead_holder(open_peer, keys)
    assert await presence.claim_expired("s1") == await other.claim_expired("s2") == []
    await gone(presence, clock, "dead")

    async def claim_and_count(survivor: Presence, node: str) -> list[Counted]:
        claimed = await survivor.claim_expired(node)
        return [await survivor.add_count(key, node, 0) for key in claimed]

    one, two = await asyncio.gather(claim_and_count(presence, "s1"), claim_and_count(other, "s2"))
    assert sorted([one, two], key=len) == [[], [Counted(0, lapsed=True)] * len(keys)]


async def test_a_count_before_the_claim_is_told_the_key_lapsed(
    presence: Presence, open_peer: OpenPeer, clock: Clock
) -> None:
    """A survivor whose first count of a key comes after its last holder died, before any
    claim, is the one told the key lapsed (then that it holds it): never twice."""
    await presence.report_rooms("alive", {}, 0, ttl=10 * TTL)
    await dead_holder(open_peer, ["#room:c"])
    assert await presence.claim_expired("alive") == []
    await gone(presence, clock, "dead")
    first = await presence.add_count("#room:c", "alive", 1)
    later = [await presence.add_count(k, "alive", 0) for k in await presence.claim_expired("alive")]
    assert first.total == 1
    lapses = [c.lapsed for c in (first, *later)].count(True)
    assert lapses == 1


async def test_a_withdrawn_nodes_counts_are_not_claimed_twice(
    presence: Presence, open_peer: OpenPeer
) -> None:
    """A node that stops cleanly counts back to zero first: nothing of it lapses later."""
    await presence.report_rooms("alive", {}, 0, ttl=10 * TTL)
    leaving = await open_peer()
    await leaving.report_rooms("leaving", {}, 0, ttl=10 * TTL)
    await leaving.add_count("#room:d", "leaving", 1)
    await leaving.report_rooms("leaving", {}, 0, ttl=10 * TTL)
    assert await presence.claim_expired("alive") == []
    assert await leaving.add_count("#room:d", "leaving", -1) == Counted(0)
    await leaving.withdraw("leaving")
    for key in await presence.claim_expired("alive"):
        assert not (await presence.add_count(key, "alive", 0)).lapsed


async def cut_off_and_claimed(
    presence: Presence, open_peer: OpenPeer, clock: Clock, counts: dict[str, int]
) -> tuple[Presence, list[Counted]]:
    """A node ``back`` sets ``counts`` and stops reporting (cut off, not dead); the survivor
    ``alive`` claims it and counts each claimed key: those zero counts."""
    back = await open_peer()
    await back.report_rooms("back", {}, 0, ttl=DEAD_TTL)
    for key, count in counts.items():
        assert (await back.set_count(key, "back", count)).change == count
    await back.report_rooms("back", {}, 0, ttl=DEAD_TTL)  # where counts travel in the report
    assert await presence.claim_expired("alive") == []  # alive reads back's report
    await gone(presence, clock, "back")
    claimed = await presence.claim_expired("alive")
    assert claimed == sorted(counts)
    return back, [await presence.add_count(key, "alive", 0) for key in claimed]


async def test_a_node_whose_counts_were_claimed_sets_them_again(
    presence: Presence, open_peer: OpenPeer, clock: Clock
) -> None:
    """A node cut off past its ttl had its counts claimed and cleared (its only-held key
    lapsed); back, it learns so and sets each count again: totals are right, the key that came
    back from zero is the one change that says so (occupied, once), the key another node kept
    says nothing, a repeat changes nothing, and its next death is claimed again."""
    await presence.report_rooms("alive", {}, 0, ttl=10 * TTL)
    assert await presence.set_count("#room:kept", "alive", 1) == CountChange(1, 1)
    await presence.report_rooms("alive", {}, 0, ttl=10 * TTL)
    counts = {"#room:kept": 1, "#room:only": 1, "#room:left": 1, "ann": 2}
    back, cleared = await cut_off_and_claimed(presence, open_peer, clock, counts)
    lapsed = dict(zip(sorted(counts), [c.lapsed for c in cleared], strict=True))
    assert lapsed == {"#room:kept": False, "#room:left": True, "#room:only": True, "ann": True}
    await back.report_rooms("back", {}, 0, ttl=10 * TTL)  # it is back
    assert await back.counts_cleared("back", lapsed=False)
    assert await back.set_count("#room:only", "back", 1) == CountChange(1, 1)
    assert await back.set_count("#room:kept", "back", 1) == CountChange(2, 1)
    assert await back.set_count("#room:left", "back", 0) == CountChange(0, 0)  # said vacated
    assert (await back.set_count("ann", "back", 2)).total == 2
    await back.report_rooms("back", {}, 0, ttl=10 * TTL)
    await back.counts_restored("back")
    assert not await back.counts_cleared("back", lapsed=False)
    assert await back.set_count("#room:only", "back", 1) == CountChange(1, 0)  # idempotent
    assert await presence.add_count("ann", "alive", 0) == Counted(2)
    assert await presence.add_count("#room:only", "alive", 0) == Counted(1)
    assert await presence.set_count("#room:kept", "alive", 0) == CountChange(1, -1)
    await back.report_rooms("back", {}, 0, ttl=DEAD_TTL)  # now it dies
    await gone(presence, clock, "back")
    again = [await presence.add_count(k, "alive", 0) for k in await presence.claim_expired("alive")]
    assert [c.lapsed for c in again] == [True, True, True]  # #room:kept, #room:only, ann


@pytest.mark.parametrize("lapsed", [False, True])
async def test_counts_cleared_says_no_for_a_node_that_kept_reporting(
    presence: Presence, lapsed: bool
) -> None:
    """A node whose counts nobody claimed is told they are intact, unless its report lapsed
    on a backend where a lapse alone lets others drop its counts."""
    await presence.report_rooms("steady", {}, 0, ttl=10 * TTL)
    await presence.set_count("#room:s", "steady", 1)
    await presence.report_rooms("steady", {}, 0, ttl=10 * TTL)
    cleared = await presence.counts_cleared("steady", lapsed=lapsed)
    assert cleared == (lapsed and not isinstance(presence, NatsPresence))


async def test_a_node_back_before_the_claims_counts_changes_nothing(
    presence: Presence, open_peer: OpenPeer, clock: Clock, backend_url: str
) -> None:
    """The node comes back after a survivor claimed it but before it counted the claimed
    keys: its count is still there, so setting it again changes nothing, and the survivor's
    count then finds it live: no lapse, no occupied, the total right."""
    if backend_url.startswith("nats"):
        pytest.skip("on NATS the claim says the counts are gone before the lapse is decided")
    await presence.report_rooms("alive", {}, 0, ttl=10 * TTL)
    back = await open_peer()
    await back.report_rooms("back", {}, 0, ttl=DEAD_TTL)
    await back.set_count("#room:mid", "back", 1)
    await back.report_rooms("back", {}, 0, ttl=DEAD_TTL)
    assert await presence.claim_expired("alive") == []
    await gone(presence, clock, "back")
    assert await presence.claim_expired("alive") == ["#room:mid"]
    await back.report_rooms("back", {}, 0, ttl=10 * TTL)
    assert await back.counts_cleared("back", lapsed=False)
    assert await back.set_count("#room:mid", "back", 1) == CountChange(1, 0)
    assert await presence.add_count("#room:mid", "alive", 0) == Counted(1)
    await back.counts_restored("back")
    assert not await back.counts_cleared("back", lapsed=False)


async def test_a_claimed_node_that_counts_on_still_learns_of_the_claim(
    presence: Presence, open_peer: OpenPeer, clock: Clock
) -> None:
    """A node back from a cut-off counts on (a new user, a new channel) before its sweep asks
    whether it was claimed: those counts list it as counting again, and it must still be
    told its counts were cleared, until it says it set them again."""
    await presence.report_rooms("alive", {}, 0, ttl=10 * TTL)
    back, _ = await cut_off_and_claimed(presence, open_peer, clock, {"#room:x": 1})
    await back.report_rooms("back", {}, 0, ttl=10 * TTL)  # it is back
    assert await back.add_count("bob", "back", 1) == Counted(1)
    assert await back.set_count("#room:y", "back", 1) == CountChange(1, 1)
    await back.report_rooms("back", {}, 0, ttl=10 * TTL)
    assert await back.counts_cleared("back", lapsed=False)
    assert (await back.set_count("#room:x", "back", 1)).total == 1
    await back.counts_restored("back")
    assert not await back.counts_cleared("back", lapsed=False)


async def test_counts_go_on_after_redis_forgets_its_scripts(
    presence: Presence, backend_url: str
) -> None:
    """Counts are sent as EVALSHA: where Redis no longer knows a script (a restart, SCRIPT
    FLUSH), it is loaded again and the count made once."""
    if not isinstance(presence, RedisPresence):
        pytest.skip("scripts are Redis's")
    await presence.report_rooms("n1", {}, 0, ttl=10 * TTL)
    assert await presence.add_count("ann", "n1", 1) == Counted(1)
    await presence._require().script_flush()
    assert await presence.add_count("ann", "n1", 1) == Counted(2)
    assert await presence.set_count("bob", "n1", 1) == CountChange(1, 1)
    assert await presence.add_count("ann", "n1", -2) == Counted(0)


async def test_a_node_that_purged_its_report_is_not_claimed(
    presence: Presence, open_peer: OpenPeer
) -> None:
    """A node of an older release stops cleanly by purging its report, without a claim of
    its own: the purge says it did not crash, so nobody claims its keys (no second
    "vacated")."""
    if not isinstance(presence, NatsPresence):
        pytest.skip("reports are purged on NATS")
    await presence.report_rooms("alive", {}, 0, ttl=10 * TTL)
    old = await open_peer()
    await old.report_rooms("old", {}, 0, ttl=10 * TTL)
    await old.set_count("#room:o", "old", 1)
    await old.report_rooms("old", {}, 0, ttl=10 * TTL)
    assert await presence.claim_expired("alive") == []  # alive reads old's report
    assert isinstance(old, NatsPresence)
    await old._require().purge(f"node.{to_token('old')}")  # its stop: no claim made
    assert await presence.claim_expired("alive") == []
