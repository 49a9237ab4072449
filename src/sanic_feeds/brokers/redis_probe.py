"""The Redis broker's liveness probe: proof that this node can still receive, end to end.

Socket errors are not enough to notice a dead subscriber: a frozen Redis (SIGSTOP, a stuck
failover) raises nothing, and a killed subscriber connection may be replaced silently. Only a
message that makes the round trip proves the node can still receive. Every ``interval`` the
probe publishes ``probe <n>`` to the node's own channel and waits up to ``timeout`` for it to
come back through the subscriber. If the publish got no reply, the silent command connections
are dropped; if it was answered but never came back, the subscriber connection is rebuilt.
Either way :attr:`LivenessProbe.error` says so (``/health`` is 503) until a probe comes back.
"""

from __future__ import annotations

import asyncio
import logging

from ..errors import BrokerUnavailable
from ..tasks import cancel_and_wait
from .redis_commands import CommandPool
from .redis_subscriber import Subscriber
from .resp import ReplyError, encode

log = logging.getLogger(__name__)


class LivenessProbe:
    """Start with :meth:`start`, feed it the node channel's messages with :meth:`seen`."""

    def __init__(
        self,
        commands: CommandPool,
        subscriber: Subscriber,
        key: bytes,
        *,
        interval: float,
        timeout: float,
        publish: bytes = b"PUBLISH",
    ) -> None:
        self._commands = commands
        self._publish = publish  # SPUBLISH on a cluster shard
        self._subscriber = subscriber
        self._key = key
        self._interval = interval
        self._timeout = timeout
        self._seen = 0
        self._echo = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.error: str | None = None
        """Why the last probe failed, or None once one came back."""

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name="sanic-feeds:broker-probe")

    async def stop(self) -> None:
        self._stopping = True
        await cancel_and_wait(self._task)
        self._task = None

    def seen(self, data: bytes) -> None:
        """A message on the node's own channel."""
        _, _, number = data.partition(b" ")
        if number.isdigit():
            self._seen = max(self._seen, int(number))
            self._echo.set()

    async def _loop(self) -> None:
        sent = 0
        while not self._stopping:
            await asyncio.sleep(self._interval)
            sent += 1
            published = False
            try:
                async with asyncio.timeout(self._timeout):
                    await self._commands.call(encode(self._publish, self._key, b"probe %d" % sent))
                    published = True
                    while self._seen < sent:
                        self._echo.clear()
                        await self._echo.wait()
            except (TimeoutError, BrokerUnavailable, ReplyError) as exc:
                # An error reply (BUSY, NOPERM) is an answer: the connection works, the probe
                # did not; it counts as failed and the loop goes on.
                problem = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
                if isinstance(exc, ReplyError):
                    published = False
                if self.error is None:
                    log.warning("broker liveness probe failed (%s); reconnecting", problem)
                self.error = problem
                if isinstance(exc, ReplyError):
                    pass
                elif not published:
                    # The command connection did not answer: drop the silent ones now instead
                    # of after the command timeout. The subscriber is judged by the next probe
                    # (a frozen Redis that resumes loses nothing on it).
                    self._commands.drop_silent(self._timeout)
                else:
                    self._subscriber.rebuild("liveness probe failed")
                continue
            if self.error is not None:
                log.info("broker liveness probe answered again")
                self.error = None
