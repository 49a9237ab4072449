"""The NATS broker's liveness probe: proof that this node still receives, end to end.

A frozen server (SIGSTOP, a stuck host) raises nothing on an open connection. Every ``interval``
the probe publishes ``probe <n>`` to the node's own subject and waits up to ``timeout`` for it
to come back through the node's subscription; :attr:`NatsProbe.error` says why it did not
(``/health`` is then 503) until one comes back. nats-py's own pings, at the same interval, drop
the silent connection and reconnect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from ..tasks import cancel_and_wait

log = logging.getLogger(__name__)


class NatsProbe:
    """Start with :meth:`start`; subscribe :meth:`echo` to the node's subject."""

    def __init__(
        self, connection: Callable[[], Client | None], subject: str, interval: float, timeout: float
    ) -> None:
        self._connection = connection
        self._subject = subject
        self._interval = interval
        self._timeout = timeout
        self._seen = 0
        self._echo = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.error: str | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="sanic-feeds:nats-probe")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def echo(self, msg: Msg) -> None:
        _, _, number = msg.data.partition(b" ")
        if number.isdigit():
            self._seen = max(self._seen, int(number))
            self._echo.set()

    async def _loop(self) -> None:
        sent = 0
        while True:
            await asyncio.sleep(self._interval)
            nc = self._connection()
            if nc is None:
                return
            sent += 1
            try:
                async with asyncio.timeout(self._timeout):
                    await nc.publish(self._subject, b"probe %d" % sent)
                    while self._seen < sent:
                        self._echo.clear()
                        await self._echo.wait()
            except (TimeoutError, NatsError, OSError) as exc:
                problem = "no answer in time" if isinstance(exc, TimeoutError) else repr(exc)
                if self.error is None:
                    log.warning("NATS liveness probe failed (%s)", problem)
                self.error = f"liveness probe failed: {problem}"
                continue
            if self.error is not None and nc.is_connected:
                log.info("NATS liveness probe answered again")
                self.error = None
