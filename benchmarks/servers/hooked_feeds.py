"""sanic-feeds with (``on``) or without (``off``) a subscribe hook that allows everything, for
benchmarks/hook_overhead.py: the standalone app, memory broker, one process."""

from __future__ import annotations

import sys

from sanic import Sanic

from sanic_feeds import FeedsConfig
from sanic_feeds.app import create_app
from sanic_feeds.hooks import SubscribeRequest
from sanic_feeds.websocket_protocol import FeedsWebSocketProtocol

port, hooked = int(sys.argv[1]), sys.argv[2] == "on"
app = create_app(FeedsConfig(port=port, max_connections=0, ping_interval=60, ping_timeout=60))
if hooked:

    @app.ctx.feeds.on_subscribe
    async def allow(request: SubscribeRequest) -> None:
        return None


if __name__ == "__main__":
    app.prepare(
        host="127.0.0.1",
        port=port,
        single_process=True,
        access_log=False,
        motd=False,
        protocol=FeedsWebSocketProtocol,
    )
    Sanic.serve_single(app)
