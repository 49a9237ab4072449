"""The standalone server: a Sanic app with feeds installed, and how to run it."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from sanic import Sanic
from sanic.worker.loader import AppLoader

from .config import FeedsConfig
from .extension import Feeds

log = logging.getLogger("sanic_feeds")


def create_app(config: FeedsConfig | None = None, *, name: str = "sanic_feeds") -> Sanic[Any, Any]:
    """Build the standalone server app. ``app.ctx.feeds`` is its :class:`Feeds`."""
    config = config or FeedsConfig()
    app: Sanic[Any, Any] = Sanic(name)
    app.config.MOTD = False
    feeds = Feeds(config)
    feeds.install(app)
    app.ctx.feeds = feeds
    return app


def serve(config: FeedsConfig) -> None:
    """Run the server in the foreground until SIGINT/SIGTERM."""
    loader = AppLoader(factory=partial(create_app, config))
    app = loader.load()
    log.info(
        "sanic-feeds listening on http://%s:%d (broker %s, %d worker%s)",
        config.host,
        config.port,
        config.broker.split("@")[-1],
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
    )
    if single:
        Sanic.serve_single(app)
    else:
        Sanic.serve(primary=app, app_loader=loader)
