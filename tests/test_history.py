"""Pure history rules: stamping ids, choosing a replay page, and de-duplicating parked frames."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sanic_feeds.frames import text_frame
from sanic_feeds.history import build_page, position_of, stamp
from sanic_feeds.replay import ReplayBuffer


def entries(first: int, last: int) -> list[tuple[int, bytes]]:
    return [(o, b'{"id":%d}' % o) for o in range(first, last + 1)]


def test_stamp_puts_id_and_epoch_first() -> None:
    """A stored message is the same JSON object with id and epoch as its first fields."""
    assert stamp(b'{"type":"data","data":1}', 7, "ab12") == (
        b'{"id":7,"epoch":"ab12","type":"data","data":1}'
    )
    with pytest.raises(ValueError, match="non-empty JSON object"):
        stamp(b"{}", 1, "x")
    with pytest.raises(ValueError, match="non-empty JSON object"):
        stamp(b"[1]", 1, "x")


@settings(max_examples=300, deadline=None)
@given(
    first=st.integers(1, 50),
    count=st.integers(0, 50),
    since=st.integers(0, 120),
    limit=st.integers(1, 60),
)
def test_page_is_contiguous_to_the_top_and_complete_only_without_holes(
    first: int, count: int, since: int, limit: int
) -> None:
    """Whatever is kept, a page ends at the newest message and is complete only if nothing
    between since and it is missing."""
    top = first + count - 1 if count else 0
    kept = entries(first, top) if count else []
    page = build_page(kept, since=since, wanted_epoch="e", epoch="e", top=top, limit=limit)
    if page.offsets:
        assert page.offsets[-1] == top
        assert page.offsets == list(range(page.offsets[0], top + 1))
    missing_start = (since if since <= top else 0) + 1
    holes = page.offsets[:1] != [missing_start] and missing_start <= top
    if page.complete:
        assert since <= top
        assert not holes
        assert len(page.offsets) == top - since
    if since <= top and top - since <= limit and (since >= first - 1 or top == 0):
        assert page.complete


def test_replay_buffer_forwards_only_what_the_history_did_not_hold() -> None:
    """Parked frames with ids up to the replayed one (same epoch) are dropped; others pass."""
    parked = ReplayBuffer(limit=10_000)
    frames = [
        text_frame(b'{"id":4,"epoch":"e","type":"data","data":4}'),
        text_frame(b'{"type":"user_joined","channel":"c","client":"x","user":"u"}'),
        text_frame(b'{"id":5,"epoch":"e","type":"data","data":5}'),
        text_frame(b'{"id":6,"epoch":"e","type":"data","data":6}'),
        text_frame(b'{"id":2,"epoch":"other","type":"data","data":2}'),
    ]
    for frame in frames:
        parked.send(frame)
    assert parked.unseen("e", 5) == [frames[1], frames[3], frames[4]]


def test_replay_buffer_is_bounded() -> None:
    """Too much parked during a replay marks the buffer overflowed and keeps nothing."""
    parked = ReplayBuffer(limit=100)
    for _ in range(10):
        parked.send(text_frame(b"x" * 30))
    assert parked.overflowed
    assert parked.frames == []


def test_position_of_reads_stamped_prefix_only() -> None:
    """position_of finds (epoch, id) of stamped messages and None for anything else."""
    assert position_of(stamp(b'{"type":"data","data":1}', 42, "ab12")) == ("ab12", 42)
    assert position_of(b'{"type":"data"}') is None
    assert position_of(b'{"id":"x","epoch":"e",') is None
    assert position_of(b'{"id":5}') is None
