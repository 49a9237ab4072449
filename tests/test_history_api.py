"""GET /api/channels/<channel>/history: its query parameters (the replay itself is covered by
tests/test_recovery.py)."""

from __future__ import annotations

import httpx
import pytest

from support.local_server import local_server


@pytest.mark.parametrize("limit", ["abc", "-1", "0", "1.5", "99999999999"])
async def test_a_bad_limit_is_refused_naming_limit(limit: str) -> None:
    """The 400 names the parameter that is wrong: ``limit``, not ``since``."""
    async with local_server(join_leave=False) as server, httpx.AsyncClient() as http:
        reply = await http.get(
            f"{server.http_url}/api/channels/log/history", params={"limit": limit}
        )
    assert reply.status_code == 400
    body = reply.json()
    assert body["error"] == "invalid_request"
    assert "'limit'" in body["message"] and "since" not in body["message"]


async def test_limit_picks_the_latest_messages() -> None:
    async with local_server(join_leave=False, history_size=10) as server:
        for n in range(5):
            await server.feeds.publish("log", n)
        async with httpx.AsyncClient() as http:
            url = f"{server.http_url}/api/channels/log/history"
            latest = (await http.get(url, params={"limit": "2"})).json()
            everything = (await http.get(url)).json()
    assert [m["data"] for m in latest["messages"]] == [3, 4]
    assert [m["data"] for m in everything["messages"]] == [0, 1, 2, 3, 4]
