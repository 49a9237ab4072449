"""NATS outages end to end: a real ``nats-server -js`` and a real feeds server with members.

Each test owns its NATS server (``support.nats_server``), so killing or freezing it cannot
disturb the rest of the suite. Short probe settings keep every test within a few seconds: the
liveness probe runs every ``PROBE_INTERVAL`` and fails after ``PROBE_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from sanic_feeds.brokers import Broker, create_broker
from sanic_feeds.errors import BrokerUnavailable
from support.fixtures import running
from support.local_server import LocalServer, local_server
from support.nats_server import NatsServer
from support.ws import eventually, recv_json, recv_until

PROBE_INTERVAL = 0.2
PROBE_TIMEOUT = 0.5
DETECTED_WITHIN = PROBE_INTERVAL + PROBE_TIMEOUT + 3
"""How long after NATS stopped answering /health may still say "ok" or not have answered: the
probe's bound, then a /health already waiting for its PONG (2 s at most), with slack for CI."""


@pytest.fixture
def nats() -> Iterator[NatsServer]:
    """A server of its own: these tests kill and pause it."""
    yield from running(NatsServer())


@pytest.fixture
async def feeds_server(nats: NatsServer) -> AsyncIterator[LocalServer]:
    async with local_server(
        broker=nats.url,
        join_leave=False,
        broker_probe_interval=PROBE_INTERVAL,
        broker_probe_timeout=PROBE_TIMEOUT,
    ) as server:
        yield server


@pytest.fixture
async def http(feeds_server: LocalServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=feeds_server.http_url, timeout=3) as client:
        yield client


async def health(http: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    response = await http.get("/health")
    body: dict[str, Any] = response.json()
    return response.status_code, body


async def wait_for_health(http: httpx.AsyncClient, ok: bool, timeout: float) -> dict[str, Any]:
    """Poll /health until it says ``ok`` (200, "ok") or not (503, "unavailable")."""
    last: dict[str, Any] = {}

    async def reached() -> bool:
        nonlocal last
        status, last = await health(http)
        return (status, last["status"]) == ((200, "ok") if ok else (503, "unavailable"))

    await eventually(reached, timeout=timeout, interval=0.05)
    return last


async def joined(ws: ClientConnection) -> dict[str, Any]:
    """The welcome, then a ping/pong round trip: the join has completed."""
    welcome = await recv_json(ws)
    await ws.send(orjson.dumps({"type": "ping"}).decode())
    assert await recv_json(ws) == {"type": "pong"}
    return welcome


def data_body(channel: str, value: object) -> bytes:
    return orjson.dumps({"type": "data", "channel": channel, "data": value})


async def open_publisher(url: str) -> Broker:
    """A second instance (a bare broker on the same NATS), retried while NATS comes up."""
    broker: Broker | None = None

    async def opened() -> bool:
        nonlocal broker
        candidate = create_broker(url)
        try:
            await candidate.open(None)
        except BrokerUnavailable:
            return False
        broker = candidate
        return True

    await eventually(opened, timeout=10, interval=0.1)
    assert broker is not None
    return broker


async def test_killed_nats_is_noticed_and_delivery_resumes_after_restart(
    nats: NatsServer, feeds_server: LocalServer, http: httpx.AsyncClient
) -> None:
    """SIGKILL of nats-server, then a restart on the same port with the same JetStream store.

    - /health turns 503 within the probe bound, and 200 again once the node has reconnected.
    - While NATS is down nothing can be published: the publisher gets BrokerUnavailable (no
      message is accepted and then lost), so there is nothing to recover from that time.
    - What other instances publish after the restart reaches the member exactly once, in order,
      with offsets following the ones before the outage (the history stream survived on disk):
      a message stored before the node had subscribed again is refilled from the history by the
      node itself (the reconnect is reported as a gap of every subscribed channel), one stored
      after arrives live. Either way the member sees no gap notice and no duplicate.
    """
    server = feeds_server
    async with connect(server.ws_url("feed"), max_queue=None) as ws:
        await joined(ws)
        await server.feeds.publish("feed", "before")
        before = await recv_json(ws)
        assert before["data"] == "before"
        assert (await wait_for_health(http, ok=True, timeout=5))["broker"]["backend"] == "nats"

        nats.kill()
        down = await wait_for_health(http, ok=False, timeout=DETECTED_WITHIN)
        assert down["broker"]["ok"] is False
        with pytest.raises(BrokerUnavailable):
            await server.feeds.publish("feed", "while down")

        nats.start()
        publisher = await open_publisher(nats.url)
        try:
            for i in range(5):
                await publisher.publish_stored("feed", data_body("feed", i))
            got = [await recv_json(ws, timeout=10) for _ in range(5)]
            assert [m["data"] for m in got] == [0, 1, 2, 3, 4]
            assert [m["id"] for m in got] == list(range(before["id"] + 1, before["id"] + 6))
            assert {m["epoch"] for m in got} == {before["epoch"]}

            await wait_for_health(http, ok=True, timeout=10)
            await server.feeds.publish("feed", "after")
            after = await recv_json(ws, timeout=5)
            assert (after["data"], after["id"]) == ("after", before["id"] + 6)
            assert server.node.broker.reconnects >= 1
            assert server.node.hub.gaps >= 1
        finally:
            await publisher.aclose()
        await ws.send(orjson.dumps({"type": "ping"}).decode())
        assert await recv_json(ws) == {"type": "pong"}  # nothing else was queued: no gap notice


async def test_frozen_nats_is_noticed_and_delivery_resumes(
    nats: NatsServer, feeds_server: LocalServer, http: httpx.AsyncClient
) -> None:
    """SIGSTOP of nats-server: the connection stays open and nothing raises, yet /health turns
    503 within the probe bound (the probe's round trip to the node itself does not come back).
    After SIGCONT /health is 200 again and members receive what is published from then on."""
    server = feeds_server
    async with connect(server.ws_url("feed"), max_queue=None) as ws:
        await joined(ws)
        await server.feeds.publish("feed", "before")
        before = await recv_json(ws)
        await wait_for_health(http, ok=True, timeout=5)

        nats.pause()
        try:
            down = await wait_for_health(http, ok=False, timeout=DETECTED_WITHIN)
            assert down["broker"]["ok"] is False and down["broker"]["error"]
            async with asyncio.timeout(1):  # once detected, /health answers at once
                status, again = await health(http)
            assert (status, again["status"]) == (503, "unavailable")
        finally:
            nats.resume()

        await wait_for_health(http, ok=True, timeout=15)

        async def published() -> bool:
            try:
                await server.feeds.publish("feed", "after")
            except BrokerUnavailable:
                return False
            return True

        await eventually(published, timeout=10, interval=0.1)
        after = await recv_until(ws, lambda m: m.get("data") == "after", timeout=10)
        assert after["id"] > before["id"]
        assert after["epoch"] == before["epoch"]


async def test_chat_while_nats_is_down_gets_broker_unavailable(
    nats: NatsServer, feeds_server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A chat the broker cannot take is answered with a ``broker_unavailable`` error frame (see
    docs/protocol.md), never silently dropped, and the connection stays open: once NATS is back
    the same socket chats again. A ``presence`` request meanwhile is refused at once (not after
    the key-value timeout), and answered again once NATS is back. The reconnect attempts (every
    0.2 s on both connections) are logged at debug level: one warning per outage, not one per
    attempt, and no traceback from nats-py's default error handler."""
    server = feeds_server
    caplog.set_level(logging.DEBUG, logger="sanic_feeds")
    async with connect(server.ws_url("lobby", user="ann")) as ws:
        await joined(ws)
        nats.kill()
        await ws.send(orjson.dumps({"type": "chat", "message": "lost?"}).decode())
        reply = await recv_json(ws, timeout=15)
        assert reply["type"] == "error"
        assert reply["code"] == "broker_unavailable"
        assert reply["channel"] == "lobby"

        await ws.send(orjson.dumps({"type": "presence"}).decode())
        refused = await recv_until(ws, lambda m: m["type"] != "gap", timeout=2)
        assert (refused["type"], refused["code"]) == ("error", "broker_unavailable")

        def failed_attempts(logger: str) -> int:
            return sum(
                r.name == logger and "reconnect" in r.getMessage() and r.levelno == logging.DEBUG
                for r in caplog.records
            )

        await eventually(
            lambda: (
                failed_attempts("sanic_feeds.brokers.nats") >= 3
                and failed_attempts("sanic_feeds.presence.nats") >= 3
            ),
            timeout=5,
        )
        loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert not [r for r in loud if "Connect call failed" in r.getMessage()], loud
        assert not [r for r in caplog.records if r.name == "nats.aio.client"], loud

        nats.start()

        async def chat_echoed() -> bool:
            await ws.send(orjson.dumps({"type": "chat", "message": "back"}).decode())
            message = await recv_until(ws, lambda m: m["type"] != "gap", timeout=10)
            if message["type"] == "error":
                assert message["code"] == "broker_unavailable"
                return False
            assert message["type"] == "chat", message
            return bool(message["message"] == "back")

        await eventually(chat_echoed, timeout=15, interval=0.2)

        async def presence_answered() -> bool:
            await ws.send(orjson.dumps({"type": "presence"}).decode())
            message = await recv_until(ws, lambda m: m["type"] != "gap", timeout=5)
            if message["type"] == "error":
                assert message["code"] == "broker_unavailable"
                return False
            assert message["type"] == "presence", message
            return [c["user"] for c in message["clients"]] == ["ann"]

        await eventually(presence_answered, timeout=5, interval=0.1)


async def test_server_stops_cleanly_while_nats_is_down(nats: NatsServer) -> None:
    """A node stopped while NATS is gone closes its connections without raising (the presence
    connection's close would fail on its flush) and closes its members with 1001."""
    async with local_server(
        broker=nats.url,
        join_leave=False,
        broker_probe_interval=PROBE_INTERVAL,
        broker_probe_timeout=PROBE_TIMEOUT,
    ) as server:
        ws = await connect(server.ws_url("lobby", user="ann"))
        await joined(ws)
        nats.kill()

        async def broker_down() -> bool:
            ok, _ = await server.node.health()
            return not ok

        await eventually(broker_down, timeout=DETECTED_WITHIN)
    async with asyncio.timeout(5):
        await ws.wait_closed()
    assert ws.close_code == 1001
