"""sanic-feeds: real-time WebSocket feeds on Sanic, scaled out across processes through Redis.

Public API::

    from sanic_feeds import Feeds, FeedsConfig, FeedsWebSocketProtocol, create_app

See docs/ for the protocol, configuration, deployment and architecture.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import FeedsConfig, load_config
from .errors import BrokerError, BrokerUnavailable, ConfigError, FeedsError, ProtocolError

__all__ = [
    "BrokerError",
    "BrokerUnavailable",
    "ConfigError",
    "Feeds",
    "FeedsConfig",
    "FeedsError",
    "FeedsWebSocketProtocol",
    "ProtocolError",
    "__version__",
    "create_app",
    "load_config",
]


def __getattr__(name: str) -> object:
    # Feeds and create_app import Sanic; keep `import sanic_feeds` (and the CLI's publish) light.
    if name == "Feeds":
        from .extension import Feeds

        return Feeds
    if name == "FeedsWebSocketProtocol":
        from .websocket_protocol import FeedsWebSocketProtocol

        return FeedsWebSocketProtocol
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)
