"""Several server processes on one private Redis: what a user running N instances relies on."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from sanic_feeds.protocol import CloseCode
from support.redis_server import RedisServer
from support.server_process import ServerProcess
from support.ws import eventually, recv_json, recv_until

PUBLISH = [sys.executable, "-m", "sanic_feeds", "publish"]


@pytest.fixture
def two_servers(redis_url: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with (
        ServerProcess(redis_url, extra_args=["--node-ttl", "3"]) as one,
        ServerProcess(redis_url, extra_args=["--node-ttl", "3"]) as two,
    ):
        yield one, two


async def test_chat_crosses_instances_and_rooms_count_both(
    two_servers: tuple[ServerProcess, ServerProcess],
) -> None:
    """A chat sent on one instance reaches a member on the other; /api/rooms counts both."""
    one, two = two_servers
    async with connect(one.ws_url("lobby", user="ann")) as ann:
        await recv_json(ann)
        async with connect(two.ws_url("lobby", user="bob")) as bob:
            bob_id = (await recv_json(bob))["client"]
            joined = await recv_json(ann)
            assert (joined["type"], joined["client"]) == ("user_joined", bob_id)

            await ann.send(orjson.dumps({"type": "chat", "message": "hello from one"}).decode())
            for ws in (ann, bob):
                # bob may also see ann's own join notice, which can still be crossing Redis
                # when he arrives; what matters here is the chat.
                got = await recv_until(ws, lambda m: m["type"] == "chat")
                assert (got["type"], got["user"], got["message"]) == (
                    "chat",
                    "ann",
                    "hello from one",
                )

            async with connect(two.ws_url("other")) as third:
                await recv_json(third)
                for server in (one, two):

                    async def counted(server: ServerProcess = server) -> bool:
                        async with httpx.AsyncClient() as http:
                            body: object = (await http.get(f"{server.http_url}/api/rooms")).json()
                        return body == {
                            "rooms": ["lobby", "other"],
                            "total_clients": 3,
                            "counts": {"lobby": 2, "other": 1},
                        }

                    await eventually(counted, timeout=10)


async def test_cli_publish_reaches_members_on_every_instance(
    two_servers: tuple[ServerProcess, ServerProcess], redis_url: str
) -> None:
    """``sanic-feeds publish`` delivers a data message to members on all instances."""
    one, two = two_servers
    async with connect(one.ws_url("alerts")) as a, connect(two.ws_url("alerts")) as b:
        await recv_json(a)
        await recv_json(b)
        done = await asyncio.to_thread(
            subprocess.run,
            [*PUBLISH, "--broker", redis_url, "alerts", '{"level": "high"}'],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        for ws in (a, b):
            msg = await recv_until(ws, lambda m: m["type"] == "data")
            assert msg.pop("id") == 1
            assert msg.pop("epoch")
            assert msg == {"type": "data", "channel": "alerts", "data": {"level": "high"}}


async def test_crashed_instance_disappears_from_rooms(
    two_servers: tuple[ServerProcess, ServerProcess],
) -> None:
    """A SIGKILLed instance's counts and members vanish from rooms and presence within its
    node ttl: no ghosts."""
    one, two = two_servers
    async with connect(two.ws_url("doomed")) as ws:
        await recv_json(ws)

        async def rooms_of_one() -> object:
            async with httpx.AsyncClient() as http:
                return (await http.get(f"{one.http_url}/api/rooms")).json()["counts"]

        async def presence_of_one() -> int:
            async with httpx.AsyncClient() as http:
                url = f"{one.http_url}/api/channels/doomed/presence"
                return int((await http.get(url)).json()["total"])

        async def sees_doomed() -> bool:
            return await rooms_of_one() == {"doomed": 1} and await presence_of_one() == 1

        await eventually(sees_doomed, timeout=10)
        two.kill()
        killed_at = time.monotonic()

        async def forgotten() -> bool:
            return await rooms_of_one() == {} and await presence_of_one() == 0

        await eventually(forgotten, timeout=10)
        # The documented bound: node_ttl (3 s here) after the last report.
        assert time.monotonic() - killed_at < 3 + 1.5


async def test_health_follows_redis(redis_server: RedisServer, redis_url: str) -> None:
    """/health answers 503 while Redis is down and 200 again once it is back."""
    with ServerProcess(redis_url) as server:

        async def status() -> int:
            async with httpx.AsyncClient(timeout=5) as http:
                return (await http.get(f"{server.http_url}/health")).status_code

        assert await status() == 200
        redis_server.kill()
        try:

            async def down() -> bool:
                return await status() == 503

            await eventually(down, timeout=15)
        finally:
            redis_server.start()

        async def up() -> bool:
            return await status() == 200

        await eventually(up, timeout=20)


async def test_sigterm_closes_clients_with_1001_and_exits_0(redis_url: str) -> None:
    """A graceful stop closes every socket with 1001 and the process exits 0, no traceback."""
    with ServerProcess(redis_url) as server:
        async with connect(server.ws_url("lobby")) as ws:
            await recv_json(ws)
            assert server.pid is not None
            server_pid = server.pid
            os.kill(server_pid, signal.SIGTERM)
            await asyncio.wait_for(ws.wait_closed(), 10)
            assert ws.close_code == CloseCode.GOING_AWAY

        def exited() -> bool:
            return server.returncode is not None

        await eventually(exited, timeout=10)
        assert server.returncode == 0
        log = server.log_text()
        assert "Traceback" not in log
        assert "code=1001" in log  # the handler finished its cleanup and logged the close


WORKERS = 2
MAX_CLIENTS_TO_REACH_EVERY_WORKER = 20
"""The kernel hands each new connection to either worker; 20 in a row to one is a broken spread."""


def _has_message(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda message: message.get("message") == text


async def worker_connections(server: ServerProcess, timeout: float = 10.0) -> dict[str, int]:
    """Each worker's node id and its number of WebSocket connections, from ``GET /health``.

    Every request goes over a fresh HTTP connection, so each is accepted by whichever worker the
    kernel picks; it asks until every worker has answered (or fails after ``timeout``).
    """
    seen: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < WORKERS:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {sorted(seen)} answered /health in {timeout} s")
        async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
            body = (await http.get(f"{server.http_url}/health")).json()
        seen[str(body["node"])] = int(body["connections"])
    return seen


async def test_two_workers_share_channels_through_redis(redis_url: str) -> None:
    """--workers 2 on Redis: clients reach both worker processes (two distinct nodes), and a chat
    sent on either worker reaches the clients on the other."""
    with ServerProcess(redis_url, extra_args=["--workers", str(WORKERS)]) as server:
        # Sanic's main process misses a SIGTERM that arrives within its first second or so,
        # which would turn the graceful stop at the end into a kill.
        await asyncio.sleep(1.0)
        counts = await worker_connections(server)
        assert len(counts) == WORKERS and set(counts.values()) == {0}, counts
        # Open clients one at a time; the worker whose count grew by one is the one it reached.
        on_node: dict[str, list[ClientConnection]] = {node: [] for node in counts}
        clients: list[ClientConnection] = []
        try:
            while not all(on_node.values()):
                if len(clients) == MAX_CLIENTS_TO_REACH_EVERY_WORKER:
                    raise AssertionError(f"all {len(clients)} clients reached one worker: {counts}")
                ws = await connect(server.ws_url("shared"))
                clients.append(ws)
                await recv_json(ws)  # the welcome: the session is counted by then
                now = await worker_connections(server)
                assert set(now) == set(counts), (counts, now)
                grown = [node for node in now if now[node] == counts[node] + 1]
                assert len(grown) == 1 and sum(now.values()) == len(clients), (counts, now)
                on_node[grown[0]].append(ws)
                counts = now

            for node, members in on_node.items():
                sender = members[0]
                text = f"from {node}"
                await sender.send(orjson.dumps({"type": "chat", "message": text}).decode())
                for ws in clients:
                    msg = await recv_until(ws, _has_message(text))
                    assert msg["type"] == "chat"
        finally:
            for ws in clients:
                await ws.close()
        assert await asyncio.to_thread(server.stop) == 0


async def test_rooms_answers_503_while_redis_is_down(
    redis_server: RedisServer, redis_url: str
) -> None:
    """/api/rooms cannot be computed without Redis: a clear 503, not a traceback."""
    with ServerProcess(redis_url) as server:
        redis_server.kill()
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                reply = await http.get(f"{server.http_url}/api/rooms")
            assert reply.status_code == 503
            assert reply.json()["error"] == "broker_unavailable"
        finally:
            redis_server.start()
        assert "Traceback" not in server.log_text()
