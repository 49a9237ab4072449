"""Stopping background loops even when a cancellation gets lost on the way."""

from __future__ import annotations

import asyncio

from sanic_feeds.tasks import cancel_and_wait


async def test_task_that_swallows_one_cancellation_is_stopped() -> None:
    """A loop that loses one cancellation (as asyncio.timeout can on 3.11) still ends."""
    lost = 0

    async def stubborn() -> None:
        nonlocal lost
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if lost == 0:
                    lost += 1
                    continue  # the cancellation vanished, like a timeout that ate it
                raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task), 5)
    assert task.cancelled()
    assert lost == 1


async def test_gives_up_after_the_limit_on_a_task_that_never_stops() -> None:
    """A task that ignores every cancellation does not hang the caller beyond the limit."""
    stop = asyncio.Event()

    async def deaf() -> None:
        while not stop.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(deaf())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await cancel_and_wait(task, limit=0.5)
    assert 0.4 <= loop.time() - started < 2
    assert not task.done()
    stop.set()
    task.cancel()
    await asyncio.wait({task}, timeout=1)


async def test_none_and_finished_tasks_are_fine() -> None:
    """Nothing to stop, or already stopped: returns at once."""
    await cancel_and_wait(None)

    async def quick() -> int:
        return 1

    task = asyncio.create_task(quick())
    await task
    await cancel_and_wait(task)
