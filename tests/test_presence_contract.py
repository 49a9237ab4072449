"""The presence contract (node room reports), run against memory and Redis."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest

from sanic_feeds.presence import Member, Presence, create_presence


@pytest.fixture
async def presence(broker_url: str) -> AsyncIterator[Presence]:
    backend = create_presence(broker_url, prefix=f"test-{secrets.token_hex(3)}:")
    await backend.open()
    yield backend
    await backend.aclose()


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


async def test_reports_expire(presence: Presence) -> None:
    """A node that stops reporting (crashed) drops out after its ttl."""
    await presence.report_rooms("crashed", {"a": 3}, 3, ttl=0.3)
    await presence.report_rooms("alive", {"a": 1}, 1, ttl=10)
    assert (await presence.rooms()).rooms == {"a": 4}
    await asyncio.sleep(0.5)
    totals = await presence.rooms()
    assert (totals.rooms, totals.clients) == ({"a": 1}, 1)
    assert await presence.nodes() == ["alive"]


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


async def test_unchanged_lists_stay_alive_with_the_report(presence: Presence) -> None:
    """A report that does not resend a channel's list keeps it alive (refreshes its expiry)."""
    await presence.report_rooms("n1", {"a": 1}, 1, 0.4, {"a": [member("c1", "n1")]})
    await asyncio.sleep(0.25)
    await presence.report_rooms("n1", {"a": 1}, 1, 0.4)
    await asyncio.sleep(0.25)
    assert [m.client for m in await presence.members("a")] == ["c1"]


async def test_crashed_node_members_disappear(presence: Presence) -> None:
    """Members of a node that stops reporting vanish once its ttl has passed: no ghosts."""
    await presence.report_rooms("dead", {"a": 1}, 1, 0.3, {"a": [member("ghost", "dead")]})
    await presence.report_rooms("alive", {"a": 1}, 1, 10, {"a": [member("c1", "alive")]})
    await asyncio.sleep(0.5)
    assert [m.client for m in await presence.members("a")] == ["c1"]
    await presence.withdraw("alive")
    assert await presence.members("a") == []
