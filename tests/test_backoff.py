"""Reconnect delays (pure): growing while connections keep dropping at once, forgotten once one
held for a while."""

from __future__ import annotations

from sanic_feeds.brokers.backoff import Backoff


def test_first_attempt_is_immediate_then_delays_double_up_to_the_cap() -> None:
    backoff = Backoff(first=0.05, most=0.4, jitter=lambda: 1.0)
    assert [backoff.delay() for _ in range(6)] == [0.0, 0.05, 0.1, 0.2, 0.4, 0.4]


def test_a_connection_that_drops_at_once_does_not_restart_the_delays() -> None:
    """A peer that accepts and drops: each reconnect waits longer than the last."""
    backoff = Backoff(first=0.05, most=2.0, steady=5.0, jitter=lambda: 1.0)
    seen = []
    now = 0.0
    for _ in range(5):
        seen.append(backoff.delay())
        backoff.up(now)
        now += 0.1  # dropped 0.1 s later
        backoff.lost(now)
    assert seen == [0.0, 0.05, 0.1, 0.2, 0.4]


def test_a_connection_that_held_makes_the_next_attempt_immediate() -> None:
    backoff = Backoff(first=0.05, steady=5.0, jitter=lambda: 1.0)
    for _ in range(4):
        backoff.delay()
    backoff.up(100.0)
    backoff.lost(106.0)
    assert backoff.delay() == 0.0
    assert backoff.delay() == 0.05


def test_jitter_scales_the_delay() -> None:
    backoff = Backoff(first=1.0, jitter=lambda: 0.5)
    backoff.delay()
    assert backoff.delay() == 0.5
