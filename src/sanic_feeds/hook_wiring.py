"""The hooks of one ``Feeds``, with what is built on them: the HTTP proxies and the event
webhooks, opened when the server starts and closed when it stops (Sanic-free glue)."""

from __future__ import annotations

from .config import FeedsConfig
from .event_webhooks import EventWebhooks
from .hook_runner import HookRunner
from .hooks import Hooks
from .http_proxy import HttpProxy
from .metrics import Metrics
from .node import Node
from .rpc import ClientHandlers


class HookWiring:
    """Hooks, the proxies that implement some of them, and the webhooks that listen."""

    def __init__(self, config: FeedsConfig, handlers: ClientHandlers) -> None:
        self._config = config
        self.hooks = Hooks()
        self.runner = HookRunner(self.hooks, config.hook_timeout)
        self._proxy: HttpProxy | None = None
        if config.proxy_endpoints:  # the standalone server's hooks: Centrifugo's HTTP proxies
            self._proxy = HttpProxy(config.proxy_endpoints, config.channel_namespaces)
            self._proxy.install(self.hooks, handlers)
        self._webhooks: EventWebhooks | None = None

    def start(self, node: Node, metrics: Metrics) -> None:
        """The node is up: open the proxies' client, start the webhooks."""
        if self._proxy is not None:
            self._proxy.open()
        config = self._config
        if config.webhook_endpoint:
            self._webhooks = EventWebhooks(
                node, self.hooks, config.webhook_endpoint, config.webhook_secret
            )
            metrics.registry.register(self._webhooks.metrics)

    async def before_node_stop(self, metrics: Metrics) -> None:
        """The sessions are gone: send the webhooks that wait (up to ``drain_time``)."""
        webhooks, self._webhooks = self._webhooks, None
        if webhooks is not None:
            metrics.registry.unregister(webhooks.metrics)
            await webhooks.aclose(self._config.drain_time)

    async def after_node_stop(self) -> None:
        if self._proxy is not None:
            await self._proxy.aclose()
