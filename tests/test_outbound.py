"""Bounded per-connection outbound queues and the once-per-turn flusher (sanic_feeds.outbound)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

import pytest

from sanic_feeds.outbound import Flusher, Outbound


class FakeTransport:
    """Records writes; the test sets how many bytes it pretends to still hold."""

    def __init__(self, *, fail: bool = False) -> None:
        self.writes: list[bytes] = []
        self.buffered = 0
        self.closing = False
        self.aborted = 0
        self.fail = fail

    def write(self, data: bytes) -> None:
        if self.fail:
            raise ConnectionResetError("pretend the socket broke")
        self.writes.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.aborted += 1
        self.closing = True


class Overflows:
    """Counts on_overflow calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def make(
    flusher: Flusher, limit: int = 1000, transport: FakeTransport | None = None
) -> tuple[Outbound, FakeTransport, Overflows]:
    transport = transport or FakeTransport()
    overflows = Overflows()
    outbound = Outbound(cast(asyncio.WriteTransport, transport), flusher, limit, overflows)
    return outbound, transport, overflows


async def next_turns() -> None:
    """Let the loop run the flusher's call_soon callback."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


@pytest.fixture
async def flusher() -> Flusher:
    return Flusher(asyncio.get_running_loop())


async def test_sends_in_one_turn_become_one_write(flusher: Flusher) -> None:
    """Several sends in one loop turn are written as ONE write, frames concatenated in order."""
    outbound, transport, overflows = make(flusher)
    outbound.send(b"one")
    outbound.send(b"two")
    outbound.send(b"three")
    assert transport.writes == []  # nothing is written synchronously
    await next_turns()
    assert transport.writes == [b"onetwothree"]
    assert outbound.frames_sent == 3
    assert overflows.calls == 0
    assert not outbound.closed


async def test_single_frame_written_as_is(flusher: Flusher) -> None:
    """One queued frame is written unchanged."""
    outbound, transport, _ = make(flusher)
    outbound.send(b"solo")
    await next_turns()
    assert transport.writes == [b"solo"]
    assert outbound.frames_sent == 1


async def test_later_turns_get_their_own_writes(flusher: Flusher) -> None:
    """Sends in a later loop turn are written in a later, separate write."""
    outbound, transport, _ = make(flusher)
    outbound.send(b"a")
    await next_turns()
    outbound.send(b"b")
    outbound.send(b"c")
    await next_turns()
    assert transport.writes == [b"a", b"bc"]
    assert outbound.frames_sent == 3


class CountingLoop:
    """Forwards call_soon to the running loop and records each scheduled callback."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.callbacks: list[Callable[[], object]] = []

    def call_soon(self, callback: Callable[[], object]) -> asyncio.Handle:
        self.callbacks.append(callback)
        return self.loop.call_soon(callback)

    def time(self) -> float:
        return self.loop.time()


async def test_many_outbounds_flushed_in_one_callback() -> None:
    """Sends on many connections in one turn schedule ONE flusher callback that writes them all."""
    counting = CountingLoop()
    flusher = Flusher(cast(asyncio.AbstractEventLoop, counting))
    conns = [make(flusher) for _ in range(50)]
    for i, (outbound, _, _) in enumerate(conns):
        outbound.send(b"x%d" % i)
        outbound.send(b"!")
    assert len(counting.callbacks) == 1
    await next_turns()
    for i, (_, transport, _) in enumerate(conns):
        assert transport.writes == [b"x%d!" % i]
    # The next turn's sends schedule exactly one more callback.
    for outbound, _, _ in conns:
        outbound.send(b"again")
    assert len(counting.callbacks) == 2
    await next_turns()
    assert all(transport.writes[-1] == b"again" for _, transport, _ in conns)


async def test_all_outbounds_written_by_the_time_the_first_is(flusher: Flusher) -> None:
    """One flush pass writes every dirty connection: when one has its write, all do."""
    conns = [make(flusher) for _ in range(10)]
    for outbound, _, _ in conns:
        outbound.send(b"f")
    first_transport = conns[0][1]
    for _ in range(10):  # bounded: a loop turn or two is all the flusher needs
        if first_transport.writes:
            break
        await asyncio.sleep(0)
    assert all(transport.writes == [b"f"] for _, transport, _ in conns)


async def test_overflow_by_pending_bytes(flusher: Flusher) -> None:
    """Queuing past the limit: on_overflow once, closed, queue dropped, later sends ignored."""
    outbound, transport, overflows = make(flusher, limit=10)
    outbound.send(b"12345")
    outbound.send(b"67890")  # exactly the limit: still fine
    assert overflows.calls == 0
    assert not outbound.closed
    outbound.send(b"!")  # 11 bytes: over
    assert overflows.calls == 1
    assert outbound.closed
    assert outbound.buffered() == 0
    outbound.send(b"more")
    outbound.send(b"x" * 100)
    await next_turns()
    assert overflows.calls == 1
    assert transport.writes == []
    assert outbound.frames_sent == 0
    outbound.flush()
    assert transport.writes == []


async def test_single_frame_bigger_than_limit_is_written_alone(flusher: Flusher) -> None:
    """One message may always be in flight: a lone frame over the limit is written, not cut off."""
    outbound, transport, overflows = make(flusher, limit=10)
    outbound.send(b"x" * 11)
    await next_turns()
    assert transport.writes == [b"x" * 11]
    assert overflows.calls == 0
    assert not outbound.closed


async def test_frame_behind_an_unsent_oversized_frame_overflows(flusher: Flusher) -> None:
    """A second frame queued while the big one is still unsent passes the limit: overflow."""
    outbound, transport, overflows = make(flusher, limit=10)
    outbound.send(b"x" * 11)
    await next_turns()
    transport.buffered = 11  # the kernel has not taken the big frame yet
    outbound.send(b"y")
    await next_turns()
    assert overflows.calls == 1
    assert outbound.closed
    assert transport.writes == [b"x" * 11]


async def test_two_queued_frames_over_the_limit_overflow_at_send(flusher: Flusher) -> None:
    """Queued bytes over the limit overflow at once, before any flush."""
    outbound, transport, overflows = make(flusher, limit=10)
    outbound.send(b"x" * 6)
    outbound.send(b"x" * 6)
    assert overflows.calls == 1
    assert outbound.closed
    await next_turns()
    assert transport.writes == []


async def test_overflow_at_flush_counts_transport_buffer(flusher: Flusher) -> None:
    """At flush, transport-held bytes plus queued bytes over the limit overflow; nothing written."""
    outbound, transport, overflows = make(flusher, limit=100)
    transport.buffered = 95
    outbound.send(b"123")
    outbound.send(b"456")  # 6 queued: under the limit alone, 101 with the transport's 95
    assert overflows.calls == 0
    await next_turns()
    assert overflows.calls == 1
    assert outbound.closed
    assert transport.writes == []
    assert outbound.buffered() == 95  # only what the transport holds
    outbound.send(b"later")
    await next_turns()
    assert transport.writes == []
    assert overflows.calls == 1


async def test_flush_exactly_at_limit_is_written(flusher: Flusher) -> None:
    """Transport bytes plus queued bytes equal to the limit are still written."""
    outbound, transport, overflows = make(flusher, limit=100)
    transport.buffered = 94
    outbound.send(b"123456")
    await next_turns()
    assert transport.writes == [b"123456"]
    assert overflows.calls == 0
    assert outbound.high_water == 100


async def test_closing_transport_gets_nothing(flusher: Flusher) -> None:
    """A transport that is closing gets no write; the outbound becomes closed, no overflow."""
    outbound, transport, overflows = make(flusher)
    transport.closing = True
    outbound.send(b"hello")
    await next_turns()
    assert transport.writes == []
    assert outbound.closed
    assert outbound.buffered() == 0
    assert overflows.calls == 0
    outbound.send(b"again")
    await next_turns()
    assert transport.writes == []


async def test_high_water_tracks_the_maximum(flusher: Flusher) -> None:
    """high_water is the largest transport-held plus written byte count seen at any flush."""
    outbound, transport, _ = make(flusher, limit=10_000)
    assert outbound.high_water == 0
    outbound.send(b"x" * 10)
    await next_turns()
    assert outbound.high_water == 10
    transport.buffered = 500
    outbound.send(b"y" * 20)
    outbound.send(b"z" * 30)
    await next_turns()
    assert outbound.high_water == 550
    transport.buffered = 0
    outbound.send(b"w")
    await next_turns()
    assert outbound.high_water == 550


async def test_buffered_counts_queue_and_transport(flusher: Flusher) -> None:
    """buffered() is queued bytes plus what the transport holds."""
    outbound, transport, _ = make(flusher)
    transport.buffered = 40
    outbound.send(b"abc")
    outbound.send(b"de")
    assert outbound.buffered() == 45
    await next_turns()
    assert outbound.buffered() == 40


async def test_failing_transport_does_not_stop_the_others(
    flusher: Flusher, caplog: pytest.LogCaptureFixture
) -> None:
    """A write that raises aborts that connection; the next one in the same flush is written."""
    broken, broken_transport, broken_overflows = make(flusher, transport=FakeTransport(fail=True))
    healthy, healthy_transport, _ = make(flusher)
    broken.send(b"doomed")
    healthy.send(b"fine")
    with caplog.at_level(logging.ERROR, logger="sanic_feeds.outbound"):
        await next_turns()
    assert healthy_transport.writes == [b"fine"]
    assert broken_transport.aborted == 1
    assert broken.closed
    assert broken_overflows.calls == 0
    assert any("flushing a connection failed" in r.getMessage() for r in caplog.records)
    broken.send(b"after")
    await next_turns()
    assert broken_transport.aborted == 1


async def test_flusher_keeps_working_after_a_failure(flusher: Flusher) -> None:
    """After a flush in which one transport raised, later sends on other connections still flush."""
    broken, _, _ = make(flusher, transport=FakeTransport(fail=True))
    healthy, healthy_transport, _ = make(flusher)
    broken.send(b"x")
    await next_turns()
    healthy.send(b"later")
    await next_turns()
    assert healthy_transport.writes == [b"later"]


async def test_abort_drops_queue_and_aborts_transport(flusher: Flusher) -> None:
    """abort() drops what is queued, closes the outbound and aborts the transport."""
    outbound, transport, overflows = make(flusher)
    outbound.send(b"queued")
    outbound.abort()
    assert outbound.closed
    assert transport.aborted == 1
    await next_turns()
    assert transport.writes == []
    assert overflows.calls == 0


async def test_direct_flush_writes_now(flusher: Flusher) -> None:
    """flush() called directly writes at once; the later flusher pass writes nothing more."""
    outbound, transport, _ = make(flusher)
    outbound.send(b"a")
    outbound.send(b"b")
    outbound.flush()
    assert transport.writes == [b"ab"]
    await next_turns()
    assert transport.writes == [b"ab"]


async def test_send_after_direct_flush_is_still_flushed(flusher: Flusher) -> None:
    """A send after a direct flush in the same turn is written by the flusher, exactly once."""
    outbound, transport, _ = make(flusher)
    outbound.send(b"a")
    outbound.flush()
    outbound.send(b"b")
    await next_turns()
    assert transport.writes == [b"a", b"b"]
    assert outbound.frames_sent == 2


# -- gathering under load, sliced passes ---------------------------------------------------------


class SteppingClock:
    """A loop whose clock moves ``step`` seconds each time it is read (a slow machine)."""

    def __init__(self, step: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.now = 0.0
        self.step = step

    def time(self) -> float:
        self.now += self.step
        return self.now

    def call_soon(self, callback: Callable[[], object]) -> asyncio.Handle:
        return self.loop.call_soon(callback)

    def call_later(self, delay: float, callback: Callable[[], object]) -> asyncio.TimerHandle:
        return self.loop.call_later(delay, callback)


async def test_quiet_flusher_writes_on_the_next_turn_busy_one_gathers() -> None:
    flusher = Flusher(asyncio.get_running_loop(), interval=0.05)
    outbound, transport, _ = make(flusher)
    outbound.send(b"a")
    await next_turns()
    assert transport.writes == [b"a"]  # quiet: no wait
    outbound.send(b"b")
    await next_turns()
    assert transport.writes == [b"a"]  # busy (flushed just now): waits the interval
    outbound.send(b"c")
    await asyncio.sleep(0.1)
    assert transport.writes == [b"a", b"bc"]  # ... and the two went out in one write


async def test_waiting_stops_when_it_gathers_nothing_and_resumes_when_frames_pile_up() -> None:
    flusher = Flusher(asyncio.get_running_loop(), interval=0.05)
    conns = [make(flusher) for _ in range(10)]
    for outbound, _, _ in conns:
        outbound.send(b"first")
    await next_turns()  # quiet pass
    for outbound, _, _ in conns:
        outbound.send(b"one each")  # busy: waited for, but one frame per connection
    await asyncio.sleep(0.1)
    assert flusher.waiting is False
    for outbound, _, _ in conns:
        outbound.send(b"no wait")
    await next_turns()
    assert all(t.writes[-1] == b"no wait" for _, t, _ in conns)  # written on the next turn
    for outbound, _, _ in conns:
        outbound.send(b"x")
        outbound.send(b"y")  # frames pile up even without waiting
    await next_turns()
    assert flusher.waiting is True


async def test_waiting_is_probed_again_after_many_passes() -> None:
    flusher = Flusher(asyncio.get_running_loop(), interval=0.05)
    flusher.waiting = False
    outbound, transport, _ = make(flusher)
    for n in range(40):
        outbound.send(b"%d" % n)
        await next_turns()
        if flusher.waiting:
            break
    assert flusher.waiting, "waiting is tried again after PROBE_EVERY busy passes"
    assert len(transport.writes) < 40


async def test_a_long_pass_is_written_in_slices_and_late_frames_join_unwritten_connections() -> (
    None
):
    clock = SteppingClock(step=0.0005)  # every look at the clock: half a millisecond later
    flusher = Flusher(cast(asyncio.AbstractEventLoop, clock))
    conns = [make(flusher) for _ in range(200)]
    for outbound, _, _ in conns:
        outbound.send(b"m1")
    await asyncio.sleep(0)  # exactly one slice runs
    written = [bool(t.writes) for _, t, _ in conns]
    assert 0 < sum(written) < 200
    first_unwritten = written.index(False)
    for outbound, _, _ in conns:
        outbound.send(b"m2")  # arrives during the pass
    for _ in range(50):
        await asyncio.sleep(0)
    for n, (_, transport, _) in enumerate(conns):
        if n < first_unwritten:
            assert transport.writes == [b"m1", b"m2"]  # written before m2: next pass
        else:
            assert transport.writes == [b"m1m2"]  # m2 joined its write
    assert flusher.frames == 400
