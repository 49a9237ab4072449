"""Channel name rules and channel-name patterns (sanic_feeds.channels)."""

from __future__ import annotations

import string
from fnmatch import fnmatchcase

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sanic_feeds.channels import (
    CHANNEL_RULES,
    MAX_CHANNEL_LENGTH,
    ChannelPatterns,
    is_valid_channel,
)

ALLOWED_FIRST = string.ascii_letters + string.digits
ALLOWED_REST = ALLOWED_FIRST + "_.:@-"

# -- is_valid_channel ---------------------------------------------------------------------------


def test_max_length_is_128() -> None:
    """The documented maximum channel length is 128 and the rules text says so."""
    assert MAX_CHANNEL_LENGTH == 128
    assert "1-128" in CHANNEL_RULES


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "Z",
        "0",
        "9",
        "lobby",
        "room-1",
        "ticker.AAPL",
        "user@example.com",
        "ns:room:42",
        "a_b",
        "a-",
        "a.",
        "a:",
        "a@",
        "a_",
        "0_.:@-",
        "a" * 127,
        "a" * 128,
        "9" + "-" * 127,
    ],
)
def test_valid_channel_names(name: str) -> None:
    """Names of 1-128 allowed characters starting with a letter or digit are accepted."""
    assert is_valid_channel(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a" * 129,
        "a" * 1000,
        "-a",
        "_a",
        ".a",
        ":a",
        "@a",
        "-",
        " a",
        "a ",
        "a b",
        "a/b",
        "a#b",
        "a*b",
        "a?b",
        "a,b",
        "a\n",
        "\na",
        "a\x00",
        "é",
        "aé",
        "日本",
        "a\u200b",
        "\u0661",  # ARABIC-INDIC DIGIT ONE: a digit, but not ASCII
        "\uff41",  # FULLWIDTH LATIN SMALL LETTER A
    ],
)
def test_invalid_channel_names(name: str) -> None:
    """Empty, too long, leading punctuation, other characters and non-ASCII are rejected."""
    assert not is_valid_channel(name)


@pytest.mark.parametrize("value", [None, 1, 1.0, True, b"lobby", ["lobby"], {"lobby": 1}, object()])
def test_non_strings_are_invalid(value: object) -> None:
    """Anything that is not a str is rejected, even bytes spelling a valid name."""
    assert not is_valid_channel(value)


@settings(max_examples=100, deadline=None)
@given(
    first=st.sampled_from(ALLOWED_FIRST),
    rest=st.text(alphabet=ALLOWED_REST, max_size=MAX_CHANNEL_LENGTH - 1),
)
def test_every_allowed_name_is_valid(first: str, rest: str) -> None:
    """Any allowed first character followed by up to 127 allowed characters is valid."""
    assert is_valid_channel(first + rest)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=140) | st.text(alphabet=ALLOWED_REST + " /é\n", max_size=140))
def test_validity_matches_the_written_rules(name: str) -> None:
    """is_valid_channel agrees with the rules stated in CHANNEL_RULES for arbitrary text."""
    expected = (
        1 <= len(name) <= MAX_CHANNEL_LENGTH
        and name[0] in ALLOWED_FIRST
        and all(c in ALLOWED_REST for c in name)
    )
    assert is_valid_channel(name) is expected


# -- ChannelPatterns ----------------------------------------------------------------------------


def test_empty_patterns_match_nothing_and_are_falsy() -> None:
    """No patterns: bool() is False and no channel matches."""
    patterns = ChannelPatterns()
    assert not patterns
    assert patterns.patterns == ()
    assert not patterns.matches("anything")
    assert not patterns.matches("")


def test_non_empty_patterns_are_truthy() -> None:
    """At least one pattern: bool() is True."""
    assert ChannelPatterns(["a"])
    assert ChannelPatterns.parse("ticker.*")


@pytest.mark.parametrize(
    ("pattern", "channel", "expected"),
    [
        ("ticker.*", "ticker.AAPL", True),
        ("ticker.*", "ticker.", True),
        ("ticker.*", "ticker", False),
        ("ticker.*", "xticker.AAPL", False),
        ("ticker.*", "Ticker.AAPL", False),  # case-sensitive
        ("room-?", "room-1", True),
        ("room-?", "room-12", False),
        ("room-?", "room-", False),
        ("room-[0-3]", "room-2", True),
        ("room-[0-3]", "room-4", False),
        ("lobby", "lobby", True),
        ("lobby", "lobby2", False),
        ("LOBBY", "lobby", False),
        ("*", "anything", True),
        ("a.b", "aXb", False),  # '.' is literal, not a regex wildcard
    ],
)
def test_pattern_matching(pattern: str, channel: str, expected: bool) -> None:
    """Patterns are case-sensitive shell globs matched against the whole channel name."""
    patterns = ChannelPatterns([pattern])
    assert patterns.matches(channel) is expected
    assert patterns.matches(channel) is expected  # the cached answer is the same


def test_any_pattern_matching_is_enough() -> None:
    """A channel matches when any one of several patterns matches it."""
    patterns = ChannelPatterns(["ticker.*", "room-?", "lobby"])
    assert patterns.matches("ticker.X")
    assert patterns.matches("room-9")
    assert patterns.matches("lobby")
    assert not patterns.matches("other")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ()),
        (" ", ()),
        (",", ()),
        (" , ,, ", ()),
        ("a", ("a",)),
        ("a,b", ("a", "b")),
        (" a , b ", ("a", "b")),
        ("ticker.*, room-?,,lobby,", ("ticker.*", "room-?", "lobby")),
        (",,x,,", ("x",)),
    ],
)
def test_parse_comma_list(text: str, expected: tuple[str, ...]) -> None:
    """parse() splits on commas, strips spaces around each pattern and drops empty entries."""
    patterns = ChannelPatterns.parse(text)
    assert patterns.patterns == expected
    assert bool(patterns) is bool(expected)


def test_constructor_strips_and_drops_empty() -> None:
    """The constructor strips and drops blank patterns just like parse()."""
    assert ChannelPatterns([" a ", "", "  ", "b"]).patterns == ("a", "b")


def test_parsed_patterns_with_spaces_still_match() -> None:
    """Spaces around patterns in the list do not become part of the pattern."""
    patterns = ChannelPatterns.parse(" ticker.* ,  room-? ")
    assert patterns.matches("ticker.A")
    assert patterns.matches("room-1")
    assert not patterns.matches(" ticker.A")


def test_repr_lists_patterns() -> None:
    """repr() shows the patterns."""
    assert repr(ChannelPatterns.parse("a, b*")) == "ChannelPatterns(['a', 'b*'])"


def test_cache_stays_bounded_and_correct() -> None:
    """After more than 10000 distinct names the cache is bounded and answers stay correct."""
    patterns = ChannelPatterns(["hit-*"])
    for i in range(25_000):
        name = f"hit-{i}" if i % 3 == 0 else f"miss-{i}"
        assert patterns.matches(name) is (i % 3 == 0)
    assert len(patterns._cache) <= 10_001
    # Names seen long ago (evicted) and recently (cached) both answer correctly.
    for i in (0, 1, 3, 24_999, 24_998, 24_996):
        name = f"hit-{i}" if i % 3 == 0 else f"miss-{i}"
        assert patterns.matches(name) is (i % 3 == 0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(alphabet="ab*?", min_size=1, max_size=4), max_size=4), st.data())
def test_matches_agrees_with_fnmatchcase(pattern_list: list[str], data: st.DataObject) -> None:
    """matches() (first and cached answers) equals fnmatchcase against any of the patterns."""
    patterns = ChannelPatterns(pattern_list)
    names = data.draw(st.lists(st.text(alphabet="ab", max_size=5), max_size=20))
    for name in names + names:
        assert patterns.matches(name) is any(fnmatchcase(name, p) for p in pattern_list)
