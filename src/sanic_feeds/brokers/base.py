"""The broker interface: per-channel publish/subscribe between the nodes of a cluster.

A *node* is one server process. Each node owns exactly one broker object, which holds one
subscription connection for every channel the node has local members in, and exactly one reader
that hands every arriving message to the node's ``deliver`` callback.

What a broker must guarantee (pinned by tests/test_broker_contract.py, run against every backend):

- ``subscribe(channel)`` returns only once messages published to ``channel`` after it returned
  will reach ``deliver``;
- messages of one channel reach ``deliver`` in the order one publisher published them;
- a message reaches ``deliver`` once per subscribed node, and only for subscribed channels;
- ``deliver`` is called from the event loop and must not block; the broker never awaits clients.

What a broker must never do: decode payloads, know about WebSockets, or call ``deliver`` for
channels it was not asked to subscribe.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from ..history import HistoryPage, HistoryPolicy, Stored

DeliverFn = Callable[[str, bytes], None]
"""Called as ``deliver(channel, payload)`` for every message on a subscribed channel."""

GapFn = Callable[[str], None]
"""Called as ``on_gap(channel)`` when the node may have missed messages of a channel it is
subscribed to (its subscription was re-established after a connection loss)."""

__all__ = ["Broker", "DeliverFn", "GapFn", "HistoryPage", "HistoryPolicy", "Stored"]


class Broker(ABC):
    """Publish/subscribe transport between nodes. See the module docstring for the contract."""

    @property
    def reconnects(self) -> int:
        """Times the subscriber connection was re-established after a loss (for metrics)."""
        return 0

    def statistics(self) -> dict[str, int]:
        """Counters of the broker's own I/O for ``/metrics`` (none for brokers without any)."""
        return {}

    @abstractmethod
    async def open(self, deliver: DeliverFn | None = None, on_gap: GapFn | None = None) -> None:
        """Connect. Without ``deliver`` the broker is publish-only (no subscriber, no reader).

        ``on_gap`` hears of channels whose subscription had to be re-established.
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Stop the reader and release every connection. Idempotent."""

    @abstractmethod
    async def publish(self, channel: str, payload: bytes) -> None:
        """Send ``payload`` to every node subscribed to ``channel``.

        Raises :class:`~sanic_feeds.errors.BrokerUnavailable` when the message could not be handed
        to the broker; it is then not delivered anywhere.
        """

    @abstractmethod
    async def publish_stored(
        self, channel: str, body: bytes, idempotency_key: str | None = None
    ) -> Stored:
        """Append a message to the channel's history and publish it, in one atomic step.

        Publishing again with the same ``idempotency_key`` (within two minutes) stores and
        delivers nothing and returns the first result: retries after an unclear failure are safe.

        ``body`` is a JSON object; the stored and published text gets ``"id": <offset>,
        "epoch": <epoch>`` as its first fields. Offsets grow by one per message within an epoch
        and are the same on every node; a new epoch starts when the history was lost (expired,
        or a Redis without persistence restarted), so clients can tell "no gap" from "reset".
        """

    @abstractmethod
    async def history(
        self, channel: str, since: int | None, epoch: str | None, limit: int
    ) -> HistoryPage:
        """Read stored messages after offset ``since`` (or the latest ``limit`` when None).

        ``complete`` says whether they are *all* the messages after ``since``: false when the
        history no longer reaches back that far, when ``epoch`` is not the channel's, or when
        there were more than ``limit`` (then the newest ``limit`` are returned).
        """

    @abstractmethod
    async def remove_history(self, channel: str) -> None:
        """Forget every stored message of ``channel`` on every node: a read then finds none,
        and the next stored publish starts a new epoch at offset 1 (a client recovering from an
        older position learns that its messages are gone: ``recovered: false``).

        Raises :class:`~sanic_feeds.errors.BrokerUnavailable` when the broker cannot be reached.
        """

    @abstractmethod
    async def subscribe(self, channel: str) -> None:
        """Start receiving ``channel``; returns when the subscription is active."""

    @abstractmethod
    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel``."""

    @abstractmethod
    async def check(self) -> dict[str, object]:
        """Prove the broker works end to end; return details for ``/health``.

        Raises :class:`~sanic_feeds.errors.BrokerUnavailable` when it does not.
        """

    @property
    @abstractmethod
    def subscriptions(self) -> frozenset[str]:
        """Channels this broker is subscribed to now (for tests, health and metrics)."""

    @property
    @abstractmethod
    def url(self) -> str:
        """The broker URL without credentials, safe to log and show."""
