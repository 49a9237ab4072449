"""Hostile input against a live server while well-behaved clients keep chatting.

Hypothesis generates frames: random bytes, random text, JSON of every shape with wrong types,
deeply nested or huge documents, unicode edge cases, invalid UTF-8, and floods. For every frame
the hostile client gets only documented answers (an ``error`` with a documented code, a normal
reply, or a close with a documented code), and the server never stops delivering to the others.
The number of inputs tried is reported in docs/security.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sanic_feeds.protocol import CLIENT_TYPES, CloseCode, ErrorCode
from support.local_server import LocalServer, local_server

EXAMPLES = int(os.environ.get("SANIC_FEEDS_HOSTILE_EXAMPLES", "40"))
FRAMES_PER_EXAMPLE = 40
MAX_MESSAGE_SIZE = 16 * 1024

DOCUMENTED_TYPES = {
    "system",
    "error",
    "pong",
    "subscribed",
    "unsubscribed",
    "chat",
    "data",
    "presence",
    "recovered",
    "user_joined",
    "user_left",
    "gap",
}
DOCUMENTED_ERRORS = {code.value for code in ErrorCode}
DOCUMENTED_CLOSES = {c.value for c in CloseCode}

chatter_ids: set[str] = set()
"""Client ids of the well-behaved members (their chats are checked; all others are noise)."""

tried = 0
"""Inputs sent over all examples of this session (printed at the end of the run)."""

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=50)
)
json_values = st.recursive(
    json_leaves,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=15,
)
message_like = st.fixed_dictionaries(
    {"type": st.sampled_from([*CLIENT_TYPES, "Chat", "", "system", "error"]) | json_values},
    optional={
        "channel": st.text(max_size=140) | json_values,
        "message": json_values,
        "since": json_values,
        "epoch": json_values,
    },
)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


frames: st.SearchStrategy[tuple[str, Any]] = st.one_of(
    st.tuples(st.just("json"), message_like),
    st.tuples(st.just("text"), st.text(max_size=200)),
    st.tuples(st.just("bytes"), st.binary(max_size=200)),
    st.tuples(st.just("bad-utf8"), st.binary(min_size=1, max_size=40).map(lambda b: b"\xff" + b)),
    st.tuples(st.just("deep"), st.integers(min_value=100, max_value=3000).map(nested)),
    st.tuples(
        st.just("huge"), st.integers(min_value=MAX_MESSAGE_SIZE, max_value=4 * MAX_MESSAGE_SIZE)
    ),
    st.tuples(st.just("flood"), st.integers(min_value=20, max_value=120)),
    st.tuples(
        st.just("unicode"),
        st.text(
            alphabet=st.characters(codec="utf-8", categories=["Cc", "Cf", "Zl", "Zp", "So", "Mn"]),
            max_size=40,
        ),
    ),
)


class Chatter:
    """A well-behaved member that sends numbered chats and records what it receives."""

    def __init__(self, ws: ClientConnection, name: str) -> None:
        self.ws = ws
        self.name = name
        """The server-assigned client id: unforgeable, unlike anything in a message."""
        self.sent = 0
        self.received: dict[str, list[int]] = {}

    async def talk(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.ws.send(orjson.dumps({"type": "chat", "message": self.sent}).decode())
            self.sent += 1
            await asyncio.sleep(0.02)  # 50/s: well under the 200/s limit

    async def listen(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                msg = orjson.loads(raw)
                if msg["type"] == "chat" and msg["client"] in chatter_ids:
                    self.received.setdefault(msg["client"], []).append(msg["message"])


async def answers_until_synced(ws: ClientConnection) -> list[dict[str, Any]]:
    """Send a chat with a fresh marker and collect everything the server says until it comes
    back. (A ping would not do: a hostile input can be a ping too, and pongs all look alike.)

    The marker counts against the rate limit too: when refused, wait as told and send it again.
    """
    marker = {"sync": secrets.token_hex(8)}
    frame = orjson.dumps({"type": "chat", "message": marker}).decode()
    await ws.send(frame)
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(20):
        while True:
            raw = await ws.recv()
            assert isinstance(raw, str), "the server only sends text frames"
            msg = orjson.loads(raw)
            if msg.get("type") == "chat" and msg.get("message") == marker:
                return seen
            seen.append(msg)
            if msg.get("code") == "rate_limited":
                await asyncio.sleep(msg["retry_after"])
                await ws.send(frame)


async def send_hostile(ws: ClientConnection, kind: str, value: Any) -> None:
    if kind == "json":
        # The stdlib encoder: it writes integers of any size, which the server must refuse.
        await ws.send(json.dumps(value, ensure_ascii=False))
    elif kind in ("text", "unicode", "deep") or kind == "bytes":
        await ws.send(value)
    elif kind == "bad-utf8":
        await ws.send(value, text=True)
    elif kind == "huge":
        await ws.send(orjson.dumps({"type": "chat", "message": "x" * value}).decode())
    else:  # flood
        for n in range(value):
            await ws.send(orjson.dumps({"type": "chat", "message": n}).decode())


async def hostile_session(server: LocalServer, inputs: list[tuple[str, Any]]) -> None:
    global tried
    ws = await connect(server.ws_url("arena"), max_queue=None, max_size=None)
    await ws.recv()
    try:
        for kind, value in inputs:
            tried += 1
            try:
                await send_hostile(ws, kind, value)
                answers = await answers_until_synced(ws)
            except ConnectionClosed:
                code = ws.close_code
                assert code in DOCUMENTED_CLOSES, f"undocumented close {code} after {kind}"
                # The rate limit may close the connection first (4429), else the frame's own code.
                if kind == "huge":
                    assert code in (CloseCode.MESSAGE_TOO_BIG, CloseCode.RATE_LIMITED)
                if kind == "bad-utf8":
                    assert code in (CloseCode.INVALID_PAYLOAD, CloseCode.RATE_LIMITED)
                ws = await connect(server.ws_url("arena"), max_queue=None, max_size=None)
                await ws.recv()
                continue
            for msg in answers:
                assert msg.get("type") in DOCUMENTED_TYPES, msg
                if msg["type"] == "error":
                    assert msg["code"] in DOCUMENTED_ERRORS, msg
                    assert isinstance(msg["message"], str) and msg["message"]
    finally:
        await ws.close()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(inputs=st.lists(frames, min_size=FRAMES_PER_EXAMPLE, max_size=FRAMES_PER_EXAMPLE))
async def test_hostile_frames_never_hurt_the_others(inputs: list[tuple[str, Any]]) -> None:
    """Every hostile frame gets a documented answer; the chatters lose nothing meanwhile."""
    async with local_server(
        join_leave=False, max_message_size=MAX_MESSAGE_SIZE, rate_limit="200/1"
    ) as server:
        chatters = []
        for _ in range(2):
            ws = await connect(server.ws_url("arena"), max_queue=None)
            welcome = orjson.loads(await ws.recv())
            chatters.append(Chatter(ws, welcome["client"]))
            chatter_ids.add(welcome["client"])
        stop = asyncio.Event()
        listeners = [asyncio.create_task(c.listen()) for c in chatters]
        talkers = [asyncio.create_task(c.talk(stop)) for c in chatters]
        try:
            await hostile_session(server, inputs)
        finally:
            stop.set()
            await asyncio.gather(*talkers)
        # Everything each chatter sent reached both chatters, in order.
        async with asyncio.timeout(10):
            while any(
                c.received.get(o.name, [])[-1:] != [o.sent - 1] for c in chatters for o in chatters
            ):
                await asyncio.sleep(0.01)
        for c in chatters:
            for o in chatters:
                assert c.received[o.name] == list(range(o.sent))
        healthy, _ = await server.node.health()
        assert healthy
        for c in chatters:
            await c.ws.close()
        await asyncio.gather(*listeners)


def test_report_inputs_tried() -> None:
    """Not a check: prints how many hostile inputs the suite sent (for docs/security.md)."""
    print(f"\nhostile inputs tried: {tried} ({EXAMPLES} examples x {FRAMES_PER_EXAMPLE} frames)")
