"""POST /api/channels/<channel>/publish: backends publish over HTTP."""

from __future__ import annotations

import httpx
from websockets.asyncio.client import connect

from support.local_server import local_server
from support.redis_server import RedisServer
from support.ws import recv_json


async def test_http_publish_reaches_members(broker_url: str) -> None:
    """The JSON body arrives at every member as a data message with an id."""
    async with local_server(broker=broker_url, join_leave=False) as server:
        async with connect(server.ws_url("alerts")) as ws, httpx.AsyncClient() as http:
            await recv_json(ws)
            reply = await http.post(
                f"{server.http_url}/api/channels/alerts/publish", json={"level": "high"}
            )
            assert reply.status_code == 200
            assert reply.json() == {"ok": True, "channel": "alerts"}
            got = await recv_json(ws)
            assert (got["type"], got["data"], got["id"]) == ("data", {"level": "high"}, 1)


async def test_http_publish_errors() -> None:
    """Missing key 401, wrong key 403, too large 413, bad JSON or channel 400."""
    async with local_server(api_key="k3y", max_publish_size=1024) as server:
        url = f"{server.http_url}/api/channels/alerts/publish"
        good = {"Authorization": "Bearer k3y"}
        async with httpx.AsyncClient() as http:
            assert (await http.post(url, json=1)).status_code == 401
            wrong = await http.post(url, json=1, headers={"Authorization": "Bearer nope"})
            assert (wrong.status_code, wrong.json()["error"]) == (403, "forbidden")
            big = await http.post(url, content=b'"' + b"x" * 2000 + b'"', headers=good)
            assert (big.status_code, big.json()["error"]) == (413, "too_large")
            bad = await http.post(url, content=b"{nope", headers=good)
            assert (bad.status_code, bad.json()["error"]) == (400, "invalid_json")
            channel = await http.post(
                f"{server.http_url}/api/channels/no%20way/publish", json=1, headers=good
            )
            assert (channel.status_code, channel.json()["error"]) == (400, "invalid_channel")
            assert (await http.post(url, json={"ok": 1}, headers=good)).status_code == 200


async def test_http_publish_while_redis_is_down(redis_server: RedisServer, redis_url: str) -> None:
    """With the broker down the API answers 503; nothing is half-published. A quick probe
    makes the outage known, and publishes refused, within a second."""
    async with local_server(
        broker=redis_url, broker_probe_interval=0.2, broker_probe_timeout=0.5
    ) as server:
        redis_server.kill()
        try:
            async with httpx.AsyncClient(timeout=20) as http:
                reply = await http.post(f"{server.http_url}/api/channels/x/publish", json=1)
            assert (reply.status_code, reply.json()["error"]) == (503, "broker_unavailable")
        finally:
            redis_server.start()


async def test_http_publish_idempotency_key() -> None:
    """The same Idempotency-Key twice delivers once."""
    async with local_server(join_leave=False) as server:
        async with connect(server.ws_url("k"), max_queue=None) as ws, httpx.AsyncClient() as http:
            await recv_json(ws)
            url = f"{server.http_url}/api/channels/k/publish"
            for _ in range(2):
                reply = await http.post(url, json="once", headers={"Idempotency-Key": "abc"})
                assert reply.status_code == 200
            await http.post(url, json="twice", headers={"Idempotency-Key": "def"})
            assert (await recv_json(ws))["data"] == "once"
            assert (await recv_json(ws))["data"] == "twice"
