"""Wiring the event webhooks to a running node (Sanic-free glue, used by ``Feeds``).

The node's hub tells :class:`~sanic_feeds.occupancy.Occupancy` when its members of a channel
change (next to the room reporter, which it already tells), the connect and disconnect
notifications of the hooks (``hooks.py``) give the user events, and
:class:`~sanic_feeds.webhooks.WebhookSender` delivers them.
"""

from __future__ import annotations

from .hooks import ConnectedEvent, DisconnectEvent, Hooks
from .node import Node
from .occupancy import Occupancy
from .webhooks import WebhookMetrics, WebhookSender


class EventWebhooks:
    """The webhooks of one node, from start to stop."""

    def __init__(self, node: Node, hooks: Hooks, endpoint: str, secret: str) -> None:
        self.sender = WebhookSender(endpoint, secret, node.id)
        self.metrics = WebhookMetrics(self.sender)
        """Its counters, for the ``/metrics`` registry."""
        self._node = node
        self._hooks = hooks
        hub = node.hub
        self._occupancy = Occupancy(
            node.presence, node.id, lambda channel: len(hub.records(channel)), self._channel
        )
        before = hub.on_change

        def changed(channel: str) -> None:
            if before is not None:
                before(channel)
            self._occupancy.changed(channel)

        hub.on_change = changed
        node.reaper.takers.append(self._occupancy.take)
        node.reaper.recount.holders.append(self._occupancy)
        hooks.connected.append(self._connected)
        hooks.disconnect.append(self._disconnected)
        self.sender.open()

    def _channel(self, kind: str, channel: str) -> None:
        self.sender.channel_event(kind, channel)

    async def _connected(self, event: ConnectedEvent) -> None:
        self.sender.user_event(
            "user.connected", event.user, event.client, event.protocol, event.transport
        )

    async def _disconnected(self, event: DisconnectEvent) -> None:
        self.sender.user_event(
            "user.disconnected", event.user, event.client, event.protocol, event.transport
        )

    async def aclose(self, drain_time: float) -> None:
        """After the node's sessions are gone: count the last leaves, send what waits."""
        self._hooks.connected.remove(self._connected)
        self._hooks.disconnect.remove(self._disconnected)
        self._node.reaper.takers.remove(self._occupancy.take)
        self._node.reaper.recount.holders.remove(self._occupancy)
        await self._occupancy.aclose()
        await self.sender.aclose(drain_time)
