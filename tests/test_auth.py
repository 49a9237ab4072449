"""Authentication at the handshake, identities, channel permissions and allowed origins."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close
from websockets.typing import Origin, Subprotocol

from sanic_feeds.protocol import CloseCode
from support.local_server import LocalServer, local_server
from support.ws import expect_marker, is_data, new_marker, recv_json

SECRET = "test-secret-please-change-0123456789"


def hs256(**claims: object) -> str:
    return jwt.encode(claims, SECRET, algorithm="HS256")


async def refused(url: str) -> Close:
    """Connect and expect the server to close before any message; return its close frame."""
    async with connect(url) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await recv_json(ws)
    received = closed.value.rcvd
    assert received is not None, "the connection dropped without a close frame"
    return received


async def send(ws: ClientConnection, message: object) -> None:
    await ws.send(orjson.dumps(message).decode())


async def test_static_tokens_from_header_query_and_subprotocol(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A token works from each place; the user comes from the token, not from ?user=."""
    caplog.set_level(logging.DEBUG)
    async with local_server(auth="token", tokens=("tok-ann-1=ann", "tok-bob-2=bob")) as server:
        async with connect(
            server.ws_url("lobby", user="mallory"),
            additional_headers={"Authorization": "Bearer tok-ann-1"},
        ) as ws:
            assert (await recv_json(ws))["user"] == "ann"
        async with connect(server.ws_url("lobby", token="tok-bob-2")) as ws:
            assert (await recv_json(ws))["user"] == "bob"
        async with connect(
            server.ws_url("lobby"),
            subprotocols=[Subprotocol("sanic-feeds"), Subprotocol("bearer.tok-ann-1")],
        ) as ws:
            assert (await recv_json(ws))["user"] == "ann"
            assert ws.subprotocol == "sanic-feeds"
        missing = await refused(server.ws_url("lobby"))
        assert (missing.code, missing.reason) == (1008, "authentication required")
        wrong = await refused(server.ws_url("lobby", token="nope"))
        assert (wrong.code, wrong.reason) == (1008, "invalid token")
        assert not server.node.hub.rooms()  # refused before joining anything
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("sanic"))
    assert "tok-ann-1" not in logged
    assert "tok-bob-2" not in logged


async def test_jwt_identity_and_expiry() -> None:
    """sub/name make the user; an expired token is refused; one expiring later closes 4401."""
    async with local_server(auth="jwt", jwt_secret=SECRET) as server:
        async with connect(server.ws_url("lobby", token=hs256(sub="u1", name="Ann"))) as ws:
            welcome = await recv_json(ws)
            assert welcome["user"] == "Ann"
        async with connect(server.ws_url("lobby", token=hs256(sub="u2"))) as ws:
            assert (await recv_json(ws))["user"] == "u2"
        expired = await refused(server.ws_url("x", token=hs256(sub="u", exp=int(time.time()) - 5)))
        assert (expired.code, expired.reason) == (1008, "token expired")
        forged = jwt.encode({"sub": "u"}, "another-secret-0123456789-abcdef", algorithm="HS256")
        bad = await refused(server.ws_url("x", token=forged))
        assert bad.code == 1008
        assert bad.reason.startswith("invalid token")
        no_sub = await refused(server.ws_url("x", token=hs256(name="nobody")))
        assert no_sub.code == 1008

        short = hs256(sub="u3", exp=int(time.time()) + 2)
        async with connect(server.ws_url("lobby", token=short)) as ws:
            await recv_json(ws)
            await ws.wait_closed()
            assert ws.close_code == CloseCode.TOKEN_EXPIRED
            assert ws.close_reason == "token expired"


@pytest.mark.parametrize("kind", ["rsa", "ec"])
async def test_jwt_with_a_public_key(tmp_path: Path, kind: str) -> None:
    """RS256 and ES256 tokens verify against a public key given as a file."""
    if kind == "rsa":
        private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = rsa.generate_private_key(
            public_exponent=65537, key_size=2048
        )
        algorithm = "RS256"
    else:
        private = ec.generate_private_key(ec.SECP256R1())
        algorithm = "ES256"
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(pem)
    token = jwt.encode({"sub": "k1"}, private, algorithm=algorithm)
    async with local_server(auth="jwt", jwt_public_key=str(key_file)) as server:
        async with connect(server.ws_url("lobby", token=token)) as ws:
            assert (await recv_json(ws))["user"] == "k1"
        hs = await refused(server.ws_url("lobby", token=hs256(sub="k1")))
        assert hs.code == 1008


async def test_channel_permissions_from_claims() -> None:
    """channels limits joins (1008 for the URL's, forbidden for subscribe); publish limits chat."""
    reader = hs256(sub="r", channels=["news.*", "lobby"], publish=["lobby"])
    async with local_server(auth="jwt", jwt_secret=SECRET, join_leave=False) as server:
        denied = await refused(server.ws_url("secret", token=reader))
        assert (denied.code, denied.reason) == (1008, "forbidden: this channel")
        async with (
            connect(server.ws_url("news.tech", token=reader)) as ws,
            connect(server.ws_url("news.tech", token=hs256(sub="w"))) as other,
        ):
            await recv_json(ws)
            await recv_json(other)
            await send(ws, {"type": "subscribe", "channel": "secret"})
            err = await recv_json(ws)
            assert (err["code"], err["channel"]) == ("forbidden", "secret")
            await send(ws, {"type": "chat", "message": "hi"})
            err = await recv_json(ws)
            assert (err["code"], err["channel"]) == ("forbidden", "news.tech")
            marker = new_marker()  # published after the refused chat would have been
            await server.feeds.publish("news.tech", marker)
            await expect_marker(other, is_data(marker))  # nothing was delivered before it
            await expect_marker(ws, is_data(marker))
            await send(ws, {"type": "subscribe", "channel": "lobby"})
            assert (await recv_json(ws))["type"] == "subscribed"
            await send(ws, {"type": "chat", "channel": "lobby", "message": "allowed"})
            assert (await recv_json(ws))["message"] == "allowed"


async def test_allowed_origins() -> None:
    """A refused Origin gets HTTP 403 and never reaches the handler; listed or absent pass."""
    async with local_server(allowed_origins=("https://app.example",)) as server:
        with pytest.raises(InvalidStatus) as status:
            await connect(server.ws_url("lobby"), origin=Origin("https://evil.example"))
        assert status.value.response.status_code == 403
        assert not server.node.sessions
        async with connect(server.ws_url("lobby"), origin=Origin("https://app.example")) as ws:
            await recv_json(ws)
        async with connect(server.ws_url("lobby")) as ws:  # non-browser clients send no Origin
            await recv_json(ws)


async def server_with_user(server: LocalServer, user: str) -> ClientConnection:
    ws = await connect(server.ws_url("lobby", token=hs256(sub=user)))
    await recv_json(ws)
    return ws


async def test_auth_off_keeps_query_user() -> None:
    """Without auth the ?user= name is used (development mode)."""
    async with local_server() as server, connect(server.ws_url("lobby", user="dev")) as ws:
        assert (await recv_json(ws))["user"] == "dev"
    await asyncio.sleep(0)
