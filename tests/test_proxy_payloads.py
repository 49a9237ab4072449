"""Centrifugo's proxy responses read into hook answers, without any I/O: every malformed shape
is "unavailable" (a temporary error), never a way in."""

from __future__ import annotations

import pytest

from sanic_feeds import proxy_payloads as p
from sanic_feeds.hooks import (
    KEEP,
    ConnectRequest,
    ConnectResult,
    Disconnect,
    PublishResult,
    RefreshResult,
    Refuse,
    SubRefreshRequest,
    SubscribeResult,
    Unavailable,
)


def test_results() -> None:
    assert p.connect_answer({"result": {"user": "56", "expire_at": 0}}) == ConnectResult("56")
    answer = p.connect_answer({"result": {"user": "", "channels": ["a"], "subs": {"b": {}}}})
    assert answer == ConnectResult("", channels=("a", "b"))
    given = {"user": "", "subs": {"c": None, "d": {"info": {"x": 1}}}}  # null: no options
    assert p.connect_answer({"result": given}) == ConnectResult(
        "", channels=("c", "d"), subs={"d": {"info": {"x": 1}}}
    )
    assert p.subscribe_answer({"result": {}}) == SubscribeResult()
    assert p.subscribe_answer({}) == SubscribeResult()
    assert p.publish_answer({"result": {}}) == PublishResult(KEEP)
    assert p.publish_answer({"result": {"data": None}}) == PublishResult(None)
    assert p.refresh_answer({"result": {"expire_at": 99}}) == RefreshResult(False, 99.0)
    assert p.rpc_answer({"result": {"data": [1]}}) == [1]


def test_refusals() -> None:
    refused = p.subscribe_answer({"error": {"code": 403, "message": "no"}})
    assert isinstance(refused, Refuse) and (refused.code, refused.message) == (403, "no")
    gone = p.connect_answer({"disconnect": {"code": 4501, "reason": "bye"}})
    assert isinstance(gone, Disconnect) and (gone.code, gone.reason) == (4501, "bye")
    with pytest.raises(Refuse):
        p.rpc_answer({"error": {"code": 1000, "message": "x"}})


@pytest.mark.parametrize(
    "answer",
    [
        None,
        [],
        "ok",
        {"result": 5},
        {"result": {"user": 56}},
        {"result": {}},
        {"result": {"user": "a", "channels": "a"}},
        {"result": {"user": "a", "expire_at": "soon"}},
        {"error": {"code": "403"}},
        {"error": 403},
        {"disconnect": {"code": 1000, "reason": "out of range"}},
        {"disconnect": {"code": 4500, "reason": 7}},
    ],
)
def test_malformed_connect_answers_are_unavailable(answer: object) -> None:
    assert isinstance(p.connect_answer(answer), Unavailable)


def test_requests() -> None:
    request = ConnectRequest("c1", "websocket", "feed", {}, name="ann")
    assert p.connect_request(request) == {
        "client": "c1",
        "transport": "websocket",
        "protocol": "json",
        "encoding": "json",
        "name": "ann",
    }
    sub = SubRefreshRequest("c1", "websocket", "centrifugo", "56", "news")
    assert p.sub_refresh_request(sub)["channel"] == "news"
    assert p.sub_refresh_request(sub)["user"] == "56"
    assert p.forwarded({"cookie": "a=1", "x-other": "2"}, ("Cookie", "X-Absent")) == {
        "Cookie": "a=1"
    }
