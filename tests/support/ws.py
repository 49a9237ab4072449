"""Async helpers for talking to the feed server over WebSockets in tests.

Every helper has a deadline: a test that waits for a message that never comes must fail with a
message saying what it was waiting for, not hang until the global pytest timeout.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection

# ASYNC109 (prefer asyncio.timeout over a ``timeout`` parameter) is silenced below on purpose: a
# per-call ``timeout=`` keeps test code short, and each helper applies it with asyncio.timeout.

__all__ = [
    "Check",
    "eventually",
    "expect_marker",
    "is_data",
    "is_pong",
    "new_marker",
    "recv_json",
    "recv_until",
]

Check = Callable[[], Awaitable[object]] | Callable[[], object]
"""A condition for ``eventually``: sync or async, truthy when satisfied."""


def _decode(frame: str | bytes) -> dict[str, Any]:
    """Decode one frame; the protocol only sends JSON objects in text frames."""
    if isinstance(frame, bytes):
        raise AssertionError(f"expected a text frame, got a binary frame: {frame[:200]!r}")
    try:
        message = json.loads(frame)
    except ValueError as exc:
        raise AssertionError(f"frame is not valid JSON ({exc}): {frame[:200]!r}") from None
    if not isinstance(message, dict):
        raise AssertionError(f"expected a JSON object, got {type(message).__name__}: {frame!r}")
    return message


async def recv_json(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    """Receive the next frame and return it decoded as a JSON object.

    Raises TimeoutError if nothing arrives within ``timeout`` seconds, AssertionError if the frame
    is binary, not JSON or not an object, and ``ConnectionClosed`` if the server closes.
    """
    try:
        async with asyncio.timeout(timeout):
            frame = await ws.recv()
    except TimeoutError:
        raise TimeoutError(f"no message within {timeout} s") from None
    return _decode(frame)


async def recv_until(
    ws: ClientConnection,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float = 5.0,
) -> dict[str, Any]:
    """Receive frames until one satisfies ``predicate`` and return it; others are dropped.

    For protocols that interleave frames a test does not care about (presence updates, pings).
    ``timeout`` bounds the whole wait, not each frame. On timeout the ``type`` of every skipped
    message is listed, which usually shows at once what the server sent instead.
    """
    skipped: list[object] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = _decode(await ws.recv())
                if predicate(message):
                    return message
                skipped.append(message.get("type", "<no type>"))
    except TimeoutError:
        raise TimeoutError(
            f"no matching message within {timeout} s; skipped {len(skipped)} "
            f"message(s) of type {skipped!r}"
        ) from None


def new_marker() -> str:
    """A value no other message carries, for :func:`expect_marker`."""
    return f"marker-{uuid.uuid4().hex}"


async def expect_marker(
    ws: ClientConnection, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0
) -> None:
    """Fail unless the next message ``ws`` receives is the marker (``predicate`` true).

    How a test shows that nothing arrived, without sleeping and hoping: after the step that
    must deliver nothing, send a marker along a path ordered after it (a message published on
    the same channel, or a ``ping`` whose ``pong`` follows every frame already queued), wait for
    the marker, and fail if anything came before it.
    """
    message = await recv_json(ws, timeout)
    if not predicate(message):
        raise AssertionError(f"expected nothing before the marker, got {message!r}")


def is_data(marker: object) -> Callable[[dict[str, Any]], bool]:
    """The predicate for a data message published with ``marker`` (any JSON value) as its
    data."""
    return lambda message: message.get("type") == "data" and message.get("data") == marker


def is_pong(message: dict[str, Any]) -> bool:
    return message == {"type": "pong"}


async def eventually(
    check: Check,
    timeout: float = 10.0,
    interval: float = 0.05,
    *,
    description: str | None = None,
) -> None:
    """Poll ``check`` (sync or async) until it returns something truthy.

    For state that converges asynchronously (subscriptions reaching Redis, presence counts), where
    a fixed sleep would be either flaky or slow. An AssertionError raised by ``check`` counts as
    "not yet" and is reported if time runs out; other exceptions propagate. An async check is
    itself bounded by the remaining time. On timeout raises AssertionError naming ``description``
    (default: the check's name) and the last result.
    """
    what = description or getattr(check, "__qualname__", None) or repr(check)
    deadline = time.monotonic() + timeout
    last: str = "never evaluated"
    while True:
        remaining = deadline - time.monotonic()
        try:
            async with asyncio.timeout(max(remaining, 0.0)):
                result = check()
                value: object = await result if inspect.isawaitable(result) else result
        except AssertionError as exc:
            last = f"AssertionError: {exc}"
        except TimeoutError:
            last = "the check itself did not finish in time"
        else:
            if value:
                return
            last = repr(value)
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition {what!r} not met within {timeout} s (last: {last})")
        await asyncio.sleep(min(interval, max(deadline - time.monotonic(), 0.0)))
