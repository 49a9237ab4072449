"""Centrifugo's JavaScript SDK (npm ``centrifuge`` 5.7, on Node with ``ws``) against two
instances on one private Redis: connect, a refused token, publish across instances, join,
presence, history, RPC, recovery after a disconnect and a token refresh, in one Node run
(tests/js/check_sdk.js). Skipped where Node or the installed packages (``npm ci`` in
tests/js, done by scripts/test.sh) are missing.
"""

from __future__ import annotations

import time

import jwt

from sanic_feeds import FeedsConfig
from sanic_feeds.rpc import ClientCall
from support.centrifuge_js import needs_node, run_check
from support.local_server import LocalServer, local_server

SECRET = "centrifugo-js-test-secret-of-32-bytes"

pytestmark = needs_node


def token(sub: str, ttl: float = 300) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + ttl)}, SECRET)


async def test_the_javascript_sdk(redis_url: str) -> None:
    """Everything the JavaScript SDK checks comes back as expected."""
    config = FeedsConfig(broker=redis_url, auth="jwt", jwt_secret=SECRET, ping_interval=1)
    async with local_server(config) as one, local_server(config) as two:
        for server in (one, two):

            @server.feeds.rpc("whoami")
            async def whoami(call: ClientCall) -> object:
                return {"user": call.user}

            @server.feeds.rpc("message_ann")
            async def message_ann(call: ClientCall, server: LocalServer = server) -> object:
                await server.feeds.send_message("ann", call.data)
                return {}

        given = {
            "one": f"ws://127.0.0.1:{one.port}/connection/websocket",
            "two": f"ws://127.0.0.1:{two.port}/connection/websocket",
            "ann": token("ann"),
            "bob": token("bob"),
            "bad": jwt.encode({"sub": "ann"}, "not-the-secret-but-long-enough-for-hs256"),
            "short": token("ann", ttl=1.5),
            "fresh": token("ann"),
        }
        results = await run_check("check_sdk.js", given)
    assert results["connected"] is True
    assert results["join_user"] == "bob"
    assert results["publication"] == [{"data": {"text": "hi"}, "user": "bob", "offset": 1}]
    assert results["presence_users"] == ["ann", "bob"]
    assert results["presence_stats"] == [2, 2]
    assert results["history"] == [{"text": "hi"}]
    assert results["rpc"] == {"user": "ann"}
    assert results["rpc_missing"] == 104
    assert results["message"] == {"hello": "ann"}
    assert results["recovery"] == {"wasRecovering": True, "recovered": True, "data": [0, 1, 2]}
    assert results["refused"] == 3500
    assert results["refused_state"] == "disconnected"
    assert results["refused_attempts"] == 1
    assert results["refresh"] == {"asked": 1, "same": True, "client": True}
