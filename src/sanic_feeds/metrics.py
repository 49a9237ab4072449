"""Prometheus metrics at ``/metrics``.

Counters are plain integers kept by the node, hub, flusher and broker, and read only when
Prometheus scrapes: the fan-out path pays nothing for them. The two histograms are observed once
per message per node (publish-to-deliver latency) and once per connection (buffer high-water
mark), never once per delivery. Each ``Feeds`` has its own registry, so several apps in one
process (or tests) never share or clash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .node import Node

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BUFFER_BUCKETS = tuple(float(1 << n) for n in range(10, 25, 2))  # 1 KiB .. 16 MiB


BROKER_COUNTERS = {
    "commands": "Commands written to the broker.",
    "batches": "Writes to the broker (commands / batches: commands batched per write).",
    "refused": "Broker commands refused: the in-flight budget stayed full, or no connection.",
    "lost_replies": "Stored publishes whose reply was lost (looked up in the stream).",
    "unknown_outcomes": "Stored publishes reported failed because their outcome stayed unknown.",
}


class _NodeCollector(Collector):
    def __init__(self, node: Callable[[], Node | None]) -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        node = self._node()
        if node is None:
            return
        hub, stats, flusher = node.hub, node.stats, node.flusher
        gauges = {
            "connections": ("Open WebSocket connections on this instance.", len(node.sessions)),
            "channels": ("Channels with members on this instance.", len(hub.rooms())),
        }
        for name, (text, value) in gauges.items():
            yield GaugeMetricFamily(f"sanic_feeds_{name}", text, value=value)
        counters = {
            "connections_opened": ("WebSocket connections accepted.", stats.connections_opened),
            "client_messages": ("Frames received from clients.", stats.client_messages),
            "broker_messages": (
                "Messages received from the broker for channels with local members.",
                hub.messages_in,
            ),
            "deliveries": (
                "Frames queued to clients (one per member per message).",
                hub.deliveries,
            ),
            "bytes_sent": ("Bytes written to client sockets.", flusher.bytes_sent),
            "socket_writes": (
                "Writes to client sockets (deliveries / writes: frames gathered per write).",
                flusher.writes,
            ),
            "slow_consumer_disconnects": (
                "Connections cut off because their outbound buffer overflowed (close 4001).",
                stats.slow_disconnects,
            ),
            "rate_limited_messages": (
                "Client messages refused by rate limits.",
                stats.rate_limited,
            ),
            "broker_reconnects": (
                "Times the broker subscriber connection was re-established.",
                node.broker.reconnects,
            ),
            "gaps": ("Channel subscriptions re-established after a loss (gap notices).", hub.gaps),
            "recovered_messages": (
                "Messages re-read from the history after a gap and fanned out to local members.",
                hub.recovered,
            ),
        }
        counters["publishes_refused"] = (
            "Chats and publishes refused because the broker could not take them.",
            stats.publishes_refused,
        )
        broker = node.broker.statistics()
        for key, text in BROKER_COUNTERS.items():
            if key in broker:
                counters[f"broker_{key}"] = (text, broker[key])
        for name, (text, value) in counters.items():
            yield CounterMetricFamily(f"sanic_feeds_{name}", text, value=value)
        if "in_flight" in broker:
            yield GaugeMetricFamily(
                "sanic_feeds_broker_in_flight",
                "Broker commands queued or awaiting their reply (bounded by the budget).",
                value=broker["in_flight"],
            )


class Metrics:
    """The registry of one ``Feeds``; attach it to each node as it starts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._node: Node | None = None
        self.registry.register(_NodeCollector(lambda: self._node))
        self.latency = Histogram(
            "sanic_feeds_publish_to_deliver_seconds",
            "Time from publish to this instance's fan-out, per message.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.high_water = Histogram(
            "sanic_feeds_connection_buffer_high_water_bytes",
            "Most bytes ever buffered for a connection, observed when it closes.",
            buckets=BUFFER_BUCKETS,
            registry=self.registry,
        )

    def attach(self, node: Node) -> None:
        self._node = node
        node.hub.observe_latency = self.latency.observe
        node.stats.observe_high_water = self.high_water.observe

    def detach(self) -> None:
        self._node = None

    def render(self) -> bytes:
        return generate_latest(self.registry)
