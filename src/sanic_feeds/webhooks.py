"""Event webhooks: channel occupied / vacated and user connected / disconnected, POSTed to
your endpoint, signed, at least once, in order per channel.

Each event is one JSON object (docs/hooks.md)::

    {"id": "5f0c...", "type": "channel.occupied", "channel": "orders:42", "time": 1767225600.5,
     "node": "a1b2c3"}
    {"id": "...", "type": "user.connected", "user": "56", "client": "9f1e...",
     "protocol": "feed", "transport": "websocket", "time": ..., "node": ...}

sent as the body of a ``POST`` with ``X-Feeds-Signature: sha256=<hex HMAC-SHA256 of the body
with webhook_secret>`` (compare it in constant time, see :func:`signature`), and
``X-Feeds-Event`` (the type). A 2xx answer delivers it; anything else (or no answer within
``TIMEOUT``) is retried with exponential backoff (``BACKOFF_FIRST`` doubling to
``BACKOFF_MOST``) until it is delivered: the events of one channel (or one user) wait behind
the one being retried, so they arrive in order. The same ``id`` may arrive twice (a reply lost
after delivery): receivers drop repeats by ``id``. At most ``QUEUE_LIMIT`` events wait per
node; past it new events are dropped (counted). Events still waiting at shutdown get
``drain_time`` to go out, then are dropped (counted).

Counted in ``/metrics``: ``sanic_feeds_webhooks_sent``, ``_failed`` (attempts that did not
deliver), ``_retried`` and ``_dropped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections import deque
from collections.abc import Iterator

import httpx
import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Feeds-Signature"
EVENT_HEADER = "X-Feeds-Event"
TIMEOUT = 5.0
BACKOFF_FIRST = 0.2
BACKOFF_MOST = 30.0
QUEUE_LIMIT = 10_000


def signature(secret: str, body: bytes) -> str:
    """The ``X-Feeds-Signature`` of ``body``: ``sha256=`` and the hex HMAC-SHA256. A receiver
    checks it with ``hmac.compare_digest(signature(secret, body), header)``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class WebhookSender:
    """The events of one node, in one queue per channel (or user), each sent by its own task."""

    def __init__(self, endpoint: str, secret: str, node_id: str) -> None:
        self.endpoint = endpoint
        self._secret = secret
        self._node_id = node_id
        self._client: httpx.AsyncClient | None = None
        self._queues: dict[str, deque[bytes]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._waiting = 0
        self.sent = 0
        self.failed = 0
        self.retried = 0
        self.dropped = 0

    def open(self) -> None:
        self._client = httpx.AsyncClient(timeout=TIMEOUT, trust_env=False)

    async def aclose(self, drain_time: float) -> None:
        """Let waiting events go out for up to ``drain_time`` seconds, then drop the rest."""
        tasks = set(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=max(drain_time, 0.1))
        for task in list(self._tasks.values()):
            task.cancel()
        for task in tasks:
            if not task.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.dropped += self._waiting
        self._waiting = 0
        self._queues.clear()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- events ----------------------------------------------------------------------------------

    def channel_event(self, kind: str, channel: str) -> None:
        self._emit(f"c:{channel}", {"type": kind, "channel": channel})

    def user_event(self, kind: str, user: str, client: str, protocol: str, transport: str) -> None:
        event: dict[str, object] = {"type": kind, "user": user, "client": client}
        event.update(protocol=protocol, transport=transport)
        self._emit(f"u:{user or client}", event)

    def _emit(self, key: str, event: dict[str, object]) -> None:
        if self._client is None or self._waiting >= QUEUE_LIMIT:
            self.dropped += 1
            return
        event.update(id=secrets.token_hex(8), time=round(time.time(), 3), node=self._node_id)
        self._waiting += 1
        self._queues.setdefault(key, deque()).append(orjson.dumps(event))
        if key not in self._tasks:
            self._tasks[key] = asyncio.ensure_future(self._send_all(key))

    async def _send_all(self, key: str) -> None:
        queue = self._queues[key]
        try:
            while queue and await self._deliver(queue[0]):
                queue.popleft()
                self._waiting -= 1
        finally:
            self._tasks.pop(key, None)
            if not queue:
                self._queues.pop(key, None)

    @property
    def waiting(self) -> int:
        return self._waiting

    async def _deliver(self, body: bytes) -> bool:
        """Until delivered (a 2xx answer): True; False if the sender closed meanwhile."""
        delay = BACKOFF_FIRST
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: signature(self._secret, body),
            EVENT_HEADER: orjson.loads(body)["type"],
        }
        first = True
        while True:
            client = self._client
            if client is None:
                return False
            if not first:
                self.retried += 1
            first = False
            try:
                response = await client.post(self.endpoint, content=body, headers=headers)
                if 200 <= response.status_code < 300:
                    self.sent += 1
                    return True
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            self.failed += 1
            if self.failed % 100 == 1:  # a receiver that is down: not a line per attempt
                log.warning("webhook not delivered (%s); retrying with backoff", problem)
            await asyncio.sleep(delay + delay * 0.1 * secrets.randbelow(10) / 10)
            delay = min(delay * 2, BACKOFF_MOST)


class WebhookMetrics(Collector):
    """The sender's counters, for ``/metrics``."""

    def __init__(self, sender: WebhookSender) -> None:
        self._sender = sender

    def collect(self) -> Iterator[Metric]:
        s = self._sender
        counters = {
            "sent": ("Event webhooks delivered (a 2xx answer).", s.sent),
            "failed": ("Event webhook attempts that did not deliver.", s.failed),
            "retried": ("Event webhook attempts that were retries.", s.retried),
            "dropped": ("Event webhooks dropped (queue full, or left at shutdown).", s.dropped),
        }
        for name, (text, value) in counters.items():
            yield CounterMetricFamily(f"sanic_feeds_webhooks_{name}", text, value=value)
        yield GaugeMetricFamily(
            "sanic_feeds_webhooks_waiting", "Event webhooks waiting to be delivered.", s.waiting
        )
