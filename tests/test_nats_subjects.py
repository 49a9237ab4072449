"""Channel names map to NATS subject tokens and back, exactly."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sanic_feeds.brokers.nats_subjects import from_token, to_token

channels = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}", fullmatch=True)


@given(channels)
def test_round_trip_and_safe_alphabet(name: str) -> None:
    token = to_token(name)
    assert from_token(token) == name
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)


@given(channels, channels)
def test_distinct_names_get_distinct_tokens(a: str, b: str) -> None:
    assert (to_token(a) == to_token(b)) == (a == b)


def test_examples() -> None:
    assert to_token("room.1:a@b_c") == "room_d1_ca_ab__c"
    with pytest.raises(ValueError, match="escaped"):
        from_token("a_x")
