"""A backend that lets sanic-feeds ask it who a connection is, by the session cookie it set.

    .venv/bin/python examples/cookie_backend.py                      # the backend, port 3000
    .venv/bin/sanic-feeds serve --config examples/cookie_backend.json # the feeds, port 8000

``POST /login`` with ``{"user": "alice"}`` sets a ``session`` cookie. sanic-feeds forwards the
connection's ``Cookie`` header to the proxy endpoints below (``http_headers`` in the
configuration), which answer in Centrifugo's proxy format, so a browser on the same site
connects to ``ws://.../feed/room`` with nothing but its cookie:

- ``/centrifugo/connect``: the session's user, or disconnect 4501 ("unauthorized");
- ``/centrifugo/subscribe``: ``room`` for everyone, ``inbox-<user>`` only for that user;
- ``/centrifugo/publish``: refuses empty messages, and stamps the others with their author;
- ``/events``: the event webhooks, their signature checked.

Sessions live in memory: this is an example, not a session store.
"""

from __future__ import annotations

import hmac
import os
import secrets
from typing import Any

from sanic import Request, Sanic
from sanic.response import HTTPResponse, empty, json

from sanic_feeds.webhooks import SIGNATURE_HEADER, signature

WEBHOOK_SECRET = os.environ.get("WEBHOOK_SECRET", "change-me")


def create_backend(name: str = "cookie_backend") -> Sanic[Any, Any]:
    app: Sanic[Any, Any] = Sanic(name)
    app.config.MOTD = False
    sessions: dict[str, str] = {}
    app.ctx.sessions = sessions
    app.ctx.events = []

    def user_of(request: Request) -> str | None:
        return sessions.get(str(request.cookies.get("session") or ""))

    @app.post("/login")
    async def login(request: Request) -> HTTPResponse:
        user = str((request.json or {}).get("user", ""))
        if not user:
            return json({"error": "user required"}, status=400)
        sid = secrets.token_urlsafe(16)
        sessions[sid] = user
        response = json({"user": user})
        response.add_cookie("session", sid, httponly=True, samesite="Lax", secure=False)
        return response

    @app.post("/centrifugo/connect")
    async def connect(request: Request) -> HTTPResponse:
        user = user_of(request)
        if user is None:
            return json({"disconnect": {"code": 4501, "reason": "unauthorized"}})
        return json({"result": {"user": user, "info": {"name": user.title()}}})

    @app.post("/centrifugo/subscribe")
    async def subscribe(request: Request) -> HTTPResponse:
        body = request.json
        channel, user = body["channel"], body["user"]
        if channel == "room" or channel == f"inbox-{user}":
            return json({"result": {}})
        return json({"error": {"code": 403, "message": "permission denied"}})

    @app.post("/centrifugo/publish")
    async def publish(request: Request) -> HTTPResponse:
        body = request.json
        text = str(body.get("data") or "").strip()
        if not text:
            return json({"error": {"code": 1400, "message": "empty message"}})
        return json({"result": {"data": {"text": text, "author": body["user"]}}})

    @app.post("/events")
    async def events(request: Request) -> HTTPResponse:
        given = request.headers.get(SIGNATURE_HEADER, "")
        if not hmac.compare_digest(signature(WEBHOOK_SECRET, request.body), given):
            return empty(status=401)
        app.ctx.events.append(request.json)
        return empty()

    return app


if __name__ == "__main__":
    create_backend().run(host="127.0.0.1", port=3000, single_process=True, access_log=False)
