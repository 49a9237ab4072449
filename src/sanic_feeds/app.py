"""The standalone server: a Sanic app with feeds installed, and how to run it."""

from __future__ import annotations

import faulthandler
import logging
import signal
import sys
from functools import partial
from typing import Any

from sanic import Sanic
from sanic.worker.loader import AppLoader

from .config import FeedsConfig
from .extension import Feeds
from .websocket_protocol import FeedsWebSocketProtocol

log = logging.getLogger(__name__)


def configure_logging(level: str) -> None:
    """Send ``sanic_feeds.*`` log lines to stderr at ``level``.

    Only our own loggers: Sanic configures its loggers itself, and a root handler would print
    each of its lines twice.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("sanic_feeds")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def create_app(
    config: FeedsConfig | None = None,
    *,
    name: str = "sanic_feeds",
    with_logging: bool = False,
) -> Sanic[Any, Any]:
    """Build the standalone server app. ``app.ctx.feeds`` is its :class:`Feeds`.

    ``with_logging`` configures our loggers; worker processes start fresh and need it.
    """
    config = config or FeedsConfig()
    if with_logging:
        configure_logging(config.log_level)
    app: Sanic[Any, Any] = Sanic(name)
    app.config.MOTD = False
    # Bodies are small JSON messages: refuse huge ones before reading them (Sanic answers 413).
    app.config.REQUEST_MAX_SIZE = max(config.max_publish_size * 2, 1024 * 1024)
    feeds = Feeds(config)
    feeds.install(app)
    app.ctx.feeds = feeds
    return app


def serve(config: FeedsConfig) -> None:
    """Run the server in the foreground until SIGINT/SIGTERM.

    ``kill -USR1 <pid>`` prints every thread's stack to stderr: for a process that seems stuck.
    """
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    loader = AppLoader(factory=partial(create_app, config, with_logging=True))
    app = loader.load()
    log.info(
        "sanic-feeds listening on http://%s:%d (broker %s, %d worker%s)",
        config.host,
        config.port,
        config.broker_address.redacted,
        config.workers,
        "" if config.workers == 1 else "s",
    )
    single = config.workers == 1
    app.prepare(
        host=config.host,
        port=config.port,
        workers=config.workers,
        single_process=single,
        access_log=False,
        motd=False,
        protocol=FeedsWebSocketProtocol,
    )
    if single:
        Sanic.serve_single(app)
    else:
        Sanic.serve(primary=app, app_loader=loader)
