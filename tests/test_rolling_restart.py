"""Zero-loss rolling restart: the guarantee a cluster's users ask about first.

Three ``sanic-feeds serve`` processes share one private Redis. Nine clients follow one channel,
spread over the instances, each given all three URLs in a different order. A publisher posts
numbered messages over HTTP every few milliseconds to one instance after another, retrying a
failed post on the next instance with the same ``Idempotency-Key``. Instance 1 is stopped with
SIGTERM, its clients move on, it is started again on its port; then the same for instance 2.
Every client must have received every acknowledged message exactly once, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise, permutations

import httpx
import pytest

from sanic_feeds.client import Data, FeedClient, Welcome
from support.server_process import ServerProcess

CHANNEL = "ticks"
PUBLISH_INTERVAL_S = 0.015
"""Pause between two publishes (after the previous one was acknowledged)."""
PUBLISH_TIMEOUT_S = 2.0
"""One HTTP request; a request to an instance that is going down fails within this."""
PUBLISH_ROUNDS = 3
"""How many times a publish goes round every instance before it counts as failed."""
MOVE_TIMEOUT_S = 15.0
SETTLE_PUBLISHES = 25
"""Acknowledged publishes to wait for after each restart (and before the first stop)."""
SERVER_ARGS = ("--log-level", "warning")


class Progress:
    """Wakes waiters whenever a client or the publisher did something, so tests await
    conditions instead of sleeping."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.checks: list[Callable[[], None]] = []
        """Run on every wake-up: raise to end a wait early (a dead follower task, say)."""

    def changed(self) -> None:
        self._event.set()

    async def until(self, condition: Callable[[], bool], what: str, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for check in self.checks:
                        check()
                    if condition():
                        return
                    self._event.clear()
                    await self._event.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout} s waiting until {what}") from None


@dataclass
class Member:
    """One client, what it received, and where it has been."""

    name: str
    feed: FeedClient
    received: list[int] = field(default_factory=list)
    servers: list[str] = field(default_factory=list)
    """The base URL of each server that welcomed it, in order."""
    pongs: int = 0


async def follow(member: Member, progress: Progress) -> None:
    async for message in member.feed:
        if isinstance(message, Welcome):
            member.servers.append(member.feed.url)
        elif isinstance(message, Data):
            member.received.append(message.data["n"])
        elif message.type == "pong":
            member.pongs += 1
        progress.changed()


@dataclass
class Publisher:
    """Publishes 1, 2, 3, ... until stopped; records what was acknowledged and what failed."""

    http_urls: Sequence[str]
    progress: Progress
    acked: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    retries: int = 0
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        # trust_env=False: a proxy from HTTP_PROXY must never see requests to 127.0.0.1.
        async with httpx.AsyncClient(timeout=PUBLISH_TIMEOUT_S, trust_env=False) as http:
            n = 0
            while not self.stopping.is_set():
                n += 1
                (self.acked if await self._publish(http, n) else self.failed).append(n)
                self.progress.changed()
                await asyncio.sleep(PUBLISH_INTERVAL_S)  # pacing, not waiting for something

    async def _publish(self, http: httpx.AsyncClient, n: int) -> bool:
        """Post message ``n``, starting on instance ``n % 3`` and going round on failure; the
        same Idempotency-Key on every try makes a retry of a stored message store nothing."""
        headers = {"Idempotency-Key": f"tick-{n}"}
        count = len(self.http_urls)
        for attempt in range(PUBLISH_ROUNDS * count):
            base = self.http_urls[(n + attempt) % count]
            if attempt:
                self.retries += 1
                if attempt % count == 0:
                    await asyncio.sleep(0.2)  # every instance failed: give them a moment
            try:
                response = await http.post(
                    f"{base}/api/channels/{CHANNEL}/publish", json={"n": n}, headers=headers
                )
            except httpx.TransportError:
                continue
            if response.is_success:
                return True
        return False


def moved_off(members: Sequence[Member], url: str, welcomes_before: dict[str, int]) -> bool:
    """Every member that was on ``url`` has been welcomed by another server since."""
    return all(
        len(m.servers) > welcomes_before[m.name] and m.servers[-1] != url
        for m in members
        if welcomes_before[m.name] and m.servers[welcomes_before[m.name] - 1] == url
    )


def gaps(numbers: Sequence[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"``: missing messages, readable in a failure."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and runs[-1][-1] == n - 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


@pytest.mark.timeout(90)
async def test_rolling_restart_loses_and_repeats_nothing(redis_url: str) -> None:
    """Two of three instances are restarted in turn (SIGTERM, start again on the same port)
    under a continuous publisher: every client receives every acknowledged message exactly
    once, in order, whichever instances it went through."""
    instances = [ServerProcess(redis_url, extra_args=SERVER_ARGS) for _ in range(3)]
    progress = Progress()
    members: list[Member] = []
    followers: list[asyncio.Task[None]] = []
    publisher_task: asyncio.Task[None] | None = None
    try:
        await asyncio.gather(*(asyncio.to_thread(s.start) for s in instances))
        ws_urls = [f"ws://127.0.0.1:{s.port}" for s in instances]
        orders = list(permutations(range(3)))
        for number in range(9):
            order = orders[number % len(orders)]
            feed = FeedClient([ws_urls[i] for i in order], CHANNEL, user=f"m{number}")
            members.append(Member(f"m{number}", feed))
        await asyncio.gather(*(m.feed.connect() for m in members))
        followers = [asyncio.create_task(follow(m, progress)) for m in members]

        def followers_alive() -> None:
            for task in followers:
                if task.done():
                    task.result()  # raises what ended it
                    raise AssertionError("a client's iteration ended")

        progress.checks.append(followers_alive)
        await progress.until(
            lambda: all(m.servers for m in members), "every client is welcomed", MOVE_TIMEOUT_S
        )
        for member in members:
            await member.feed.ping()  # the pong says the channel is joined
        await progress.until(
            lambda: all(m.pongs for m in members), "every client has joined", MOVE_TIMEOUT_S
        )

        publisher = Publisher([s.http_url for s in instances], progress)
        publisher_task = asyncio.create_task(publisher.run())

        def publisher_alive() -> None:
            if publisher_task is not None and publisher_task.done():
                publisher_task.result()
                if not publisher.stopping.is_set():
                    raise AssertionError("the publisher stopped by itself")

        progress.checks.append(publisher_alive)

        async def published_more(count: int, what: str) -> None:
            target = len(publisher.acked) + count
            await progress.until(lambda: len(publisher.acked) >= target, what, MOVE_TIMEOUT_S)

        await published_more(SETTLE_PUBLISHES, "the publisher is under way")
        restarted: list[str] = []
        for index in (0, 1):
            old = instances[index]
            url = ws_urls[index]
            welcomes_before = {m.name: len(m.servers) for m in members}
            code = await asyncio.to_thread(old.stop)
            assert code == 0, f"instance {index + 1} exited with {code}:\n{old.log_tail()}"
            old.close()
            await progress.until(
                functools.partial(moved_off, members, url, welcomes_before),
                f"the clients of instance {index + 1} moved to another instance",
                MOVE_TIMEOUT_S,
            )
            new = ServerProcess(redis_url, port=old.port, extra_args=SERVER_ARGS)
            instances[index] = new
            await asyncio.to_thread(new.start)
            restarted.append(url)
            await published_more(SETTLE_PUBLISHES, f"instance {index + 1} is back and in use")

        publisher.stopping.set()
        await publisher_task
        acked, failed = publisher.acked, publisher.failed
        assert len(acked) > 3 * SETTLE_PUBLISHES
        last = acked[-1]
        await progress.until(
            lambda: all(m.received and m.received[-1] >= last for m in members),
            "every client has the last acknowledged message",
            MOVE_TIMEOUT_S,
        )

        problems: list[str] = []
        for member in members:
            got = member.received
            twice = sorted(n for n, c in Counter(got).items() if c > 1)
            missing = sorted(set(acked) - set(got))
            unknown = sorted(set(got) - set(acked) - set(failed))
            disordered = [b for a, b in pairwise(got) if b <= a]
            if twice or missing or unknown or disordered:
                problems.append(
                    f"{member.name} via {member.servers}: missing [{gaps(missing)}], "
                    f"twice {twice}, out of order {disordered[:10]}, never published {unknown}"
                )
        assert not problems, (
            f"{len(acked)} acknowledged, failed {failed}, {publisher.retries} retries:\n"
            + "\n".join(problems)
        )
        # The restart really moved clients around: the clients of both stopped instances
        # reached another one, and some went to an instance that had just been restarted.
        assert any(restarted[0] in m.servers[1:] for m in members)
        assert all(m.feed.reconnects == len(m.servers) - 1 for m in members)
    finally:
        if publisher_task is not None:
            publisher_task.cancel()
        for member in members:
            with contextlib.suppress(Exception):
                await member.feed.close()
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        if publisher_task is not None:
            await asyncio.gather(publisher_task, return_exceptions=True)
        await asyncio.gather(*(asyncio.to_thread(s.close) for s in instances))
