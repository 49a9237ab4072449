"""Pure rules for members whose replay ended beyond the node's stream: who is skipped, and until
when."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sanic_feeds.history import stamp
from sanic_feeds.stream_positions import StreamPositions


def stored(offset: int, epoch: str = "e") -> bytes:
    return stamp(b'{"type":"data","channel":"c","data":%d}' % offset, offset, epoch)


NOTICE = b'{"type":"user_joined","channel":"c","client":"x","user":"u"}'


def test_a_member_ahead_skips_what_it_holds_until_the_stream_passes_it() -> None:
    """Stored messages up to the member's end skip it; the first one past it does not, and from
    then on nothing does (the member is forgotten)."""
    positions = StreamPositions()
    positions.fanned_out("c", stored(3))
    positions.hold("c", "m", ("e", 5))
    assert set(positions.fanned_out("c", stored(4))) == {"m"}
    assert set(positions.fanned_out("c", stored(5))) == {"m"}
    assert set(positions.fanned_out("c", stored(6))) == set()
    assert set(positions.fanned_out("c", stored(5))) == set()  # forgotten, not skipped again
    assert positions.last["c"] == ("e", 6)  # an overtaken message does not move it back
    positions.fanned_out("c", stored(2, epoch="f"))
    assert positions.last["c"] == ("f", 2)  # a new epoch does


def test_a_member_the_stream_already_reached_is_never_skipped() -> None:
    """When the node fanned out the member's end already, nothing up to it can come again."""
    positions = StreamPositions()
    positions.fanned_out("c", stored(7))
    positions.hold("c", "m", ("e", 7))
    assert set(positions.fanned_out("c", stored(7))) == set()


def test_another_epoch_or_a_notice_is_not_held() -> None:
    """A member holds only stored messages of its end's epoch; notices are never held; a
    message of another epoch means the stream moved on."""
    positions = StreamPositions()
    positions.hold("c", "m", ("e", 5))
    assert set(positions.fanned_out("c", NOTICE)) == set()
    assert set(positions.fanned_out("c", NOTICE, exclude="x")) == {"x"}
    assert set(positions.fanned_out("c", stored(2, "other"))) == set()
    assert set(positions.fanned_out("c", stored(3))) == set()  # forgotten at the other epoch


def test_the_excluded_client_and_the_holders_are_both_skipped() -> None:
    """The envelope's excluded client is skipped along with the members who hold the message."""
    positions = StreamPositions()
    positions.hold("c", "a", ("e", 4))
    positions.hold("c", "b", ("e", 2))
    assert set(positions.fanned_out("c", stored(3), exclude="x")) == {"a", "x"}
    assert set(positions.fanned_out("c", stored(4))) == {"a"}


def test_leaving_resyncing_or_emptying_the_channel_forgets_the_member() -> None:
    """A member that left, or holds nothing (a resync about to replay again), is not skipped;
    nor is anyone once the channel emptied."""
    positions = StreamPositions()
    positions.hold("c", "a", ("e", 4))
    positions.forget("c", "a")
    positions.hold("c", "b", ("e", 4))
    positions.hold("c", "b", None)
    positions.hold("c", "d", ("e", 4))
    positions.drop("c")
    assert "c" not in positions.last
    assert set(positions.fanned_out("c", stored(3))) == set()


@given(
    stream=st.integers(min_value=0, max_value=30),
    end=st.integers(min_value=0, max_value=30),
    top=st.integers(min_value=0, max_value=40),
)
def test_a_member_gets_exactly_what_follows_its_end(stream: int, end: int, top: int) -> None:
    """Wherever the node's stream stands when the member goes live, and however far the
    member's replay reached, the member then gets each stored message after its end once."""
    positions = StreamPositions()
    if stream:
        positions.fanned_out("c", stored(stream))
    positions.hold("c", "m", ("e", end))
    received = [
        offset
        for offset in range(stream + 1, top + 1)
        if "m" not in positions.fanned_out("c", stored(offset))
    ]
    assert received == list(range(max(stream, end) + 1, top + 1))
