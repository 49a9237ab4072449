"""``python -m sanic_feeds`` is the ``sanic-feeds`` command."""

from .cli import main

raise SystemExit(main())
