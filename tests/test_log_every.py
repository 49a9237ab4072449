"""The throttle behind every "at most one line per period" log."""

from __future__ import annotations

from sanic_feeds.log_every import LogEvery


def test_one_line_per_period() -> None:
    """The first event is due; the next ones only once the period has passed since it."""
    throttle = LogEvery(10.0)
    assert throttle.due(100.0)
    assert not throttle.due(105.0)
    assert not throttle.due(109.9)
    assert throttle.due(110.0)
    assert not throttle.due(115.0)
