"""The per-connection protocol state machine, without sockets, tasks or an event loop.

Every test is a plain function: inputs in (open, client messages, answers from the node, time),
actions out. If one of these needed an event loop, the machine would not be pure.
"""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from sanic_feeds import protocol
from sanic_feeds.auth import Identity
from sanic_feeds.channels import ChannelPatterns
from sanic_feeds.codec import FeedJson
from sanic_feeds.protocol import CloseCode
from sanic_feeds.ratelimit import Rate
from sanic_feeds.session_state import (
    Action,
    Close,
    Expire,
    Join,
    Leave,
    Limits,
    Publish,
    ReadPresence,
    Resync,
    Send,
    SessionState,
    Tally,
)


def opened(identity: Identity | None = None, limits: Limits | None = None) -> SessionState:
    state = SessionState("c1", "ann", identity or Identity(user="ann"), limits=limits or Limits())
    actions = state.open("lobby", None, None, now=0.0)
    assert actions == [Join("lobby", greeting=(protocol.welcome("lobby", "c1", "ann"),))]
    return state


def sent(actions: list[Action]) -> list[dict[str, object]]:
    """The messages the client would get, decoded."""
    return [orjson.loads(a.body) for a in actions if isinstance(a, Send)]


def test_open_joins_the_channel_and_greets_once_it_holds() -> None:
    """Opening asks for a join whose acknowledgement is the welcome; nothing is sent before."""
    opened()


def test_open_refuses_with_the_documented_codes() -> None:
    """Draining, a bad channel name and a forbidden channel each close with their own code."""
    ann = Identity(user="ann")
    elsewhere = Identity(user="ann", channels=ChannelPatterns(["other"]))
    cases = [
        ("lobby", True, ann, CloseCode.GOING_AWAY),
        ("bad name!", False, ann, CloseCode.INVALID_CHANNEL),
        ("lobby", False, elsewhere, CloseCode.POLICY_VIOLATION),
    ]
    for channel, draining, identity, code in cases:
        state = SessionState("c1", "ann", identity)
        (action,) = state.open(channel, None, None, now=0.0, draining=draining)
        assert isinstance(action, Close) and action.code == code
        assert state.closed == code


def test_a_bad_since_is_an_error_after_the_welcome_not_a_close() -> None:
    state = SessionState("c1", "ann", Identity(user="ann"))
    (join,) = state.open("lobby", "abc", None, now=0.0)
    assert isinstance(join, Join) and join.since is None and join.greeting is not None
    assert [orjson.loads(g)["type"] for g in join.greeting] == ["system", "error"]


def test_chat_is_published_with_the_sender_and_the_user_key() -> None:
    state = opened(Identity(user="ann", subject="u-1"))
    (publish,) = state.receive('{"type":"chat","message":"hi"}', now=1.0)
    assert isinstance(publish, Publish)
    assert (publish.channel, publish.user_key) == ("lobby", "u-1")
    assert orjson.loads(publish.body) == protocol_chat("lobby", "hi")


def protocol_chat(channel: str, message: object) -> dict[str, object]:
    return {"type": "chat", "channel": channel, "client": "c1", "user": "ann", "message": message}


def test_chat_to_a_channel_not_joined_or_not_allowed_is_an_error() -> None:
    state = opened(Identity(user="ann", publish=ChannelPatterns(["lobby"])))
    assert sent(state.receive('{"type":"chat","channel":"x","message":1}', 1.0))[0]["code"] == (
        "not_subscribed"
    )
    state.command(protocol.Subscribe("news"))
    got = sent(state.receive('{"type":"chat","channel":"news","message":1}', 1.0))
    assert got[0]["code"] == "forbidden"


def test_subscribe_join_resync_and_unsubscribe() -> None:
    """A new channel is a join; the same channel again is subscribed (or a resync with since);
    unsubscribe leaves and then confirms."""
    state = opened()
    assert state.command(protocol.Subscribe("news", 3, "e")) == [Join("news", 3, "e")]
    assert sent(state.command(protocol.Subscribe("news"))) == [
        {"type": "subscribed", "channel": "news"}
    ]
    assert state.command(protocol.Subscribe("news", 5, "e")) == [Resync("news", 5, "e")]
    assert state.command(protocol.Unsubscribe("news")) == [
        Leave("news"),
        Send(protocol.unsubscribed("news")),
    ]
    assert list(state.channels) == ["lobby"]
    assert sent(state.command(protocol.Unsubscribe("news")))[0]["code"] == "not_subscribed"


def test_channel_cap_and_forbidden_subscribe() -> None:
    state = opened(
        Identity(user="ann", channels=ChannelPatterns(["lobby", "a"])), Limits(max_channels=2)
    )
    assert state.command(protocol.Subscribe("a")) == [Join("a")]
    assert sent(state.command(protocol.Subscribe("b")))[0]["code"] == "forbidden"
    wide = opened(limits=Limits(max_channels=1))
    assert sent(wide.command(protocol.Subscribe("b")))[0]["code"] == "too_many_channels"


def test_a_failed_join_of_the_url_channel_closes_4503_and_of_another_is_an_error() -> None:
    state = opened()
    state.command(protocol.Subscribe("news"))
    assert sent(state.join_failed("news"))[0]["code"] == "broker_unavailable"
    assert "news" not in state.channels
    # Joined again after an unsubscribe, the URL channel is like any other: an error.
    assert sent(state.join_failed("lobby"))[0]["code"] == "broker_unavailable"
    assert state.closed is None
    assert state.join_failed("lobby", opening=True) == [
        Close(CloseCode.BROKER_UNAVAILABLE, "broker unavailable, try again")
    ]


def test_rate_limit_refuses_then_closes_after_repeated_violations() -> None:
    limits = Limits(message_rate=Rate(2, 1.0), rate_limit_text="2/1", rate_limit_violations=3)
    state = opened(limits=limits)
    ping = '{"type":"ping"}'
    assert sent(state.receive(ping, 0.0)) == [{"type": "pong"}]
    assert sent(state.receive(ping, 0.0)) == [{"type": "pong"}]
    refused = state.receive(ping, 0.0)
    assert refused[0] == Tally("rate_limited")
    assert sent(refused)[0]["code"] == "rate_limited"
    state.receive(ping, 0.0)
    assert state.receive(ping, 0.0)[-1] == Close(
        CloseCode.RATE_LIMITED, "rate limit exceeded repeatedly"
    )
    assert sent(opened(limits=limits).receive(ping, 10.0)) == [{"type": "pong"}]


def test_the_credential_expires_on_the_clock_it_is_given() -> None:
    state = SessionState("c1", "ann", Identity(user="ann"))
    state.open("lobby", None, None, now=100.0, expires_in=5.0)
    assert state.tick(104.9) == []
    assert state.tick(105.0) == [Close(CloseCode.TOKEN_EXPIRED, "token expired")]
    assert state.tick(200.0) == []  # asked for once


def test_presence_is_read_then_answered() -> None:
    state = opened()
    assert state.receive('{"type":"presence"}', 1.0) == [ReadPresence("lobby")]
    members: list[dict[str, object]] = [{"client": "c1", "user": "ann"}]
    assert sent(state.presence_read("lobby", members)) == [
        {"type": "presence", "channel": "lobby", "clients": members}
    ]
    assert sent(state.presence_read("lobby", None))[0]["code"] == "broker_unavailable"
    assert sent(state.receive('{"type":"presence","channel":"x"}', 1.0))[0]["code"] == (
        "not_subscribed"
    )


def test_refusals_from_the_node_become_errors() -> None:
    state = opened()
    assert sent(state.publish_refused("lobby"))[0]["code"] == "broker_unavailable"
    limited = state.user_limited("lobby", 1.234)
    assert limited[0] == Tally("rate_limited")
    assert sent(limited)[0]["retry_after"] == 1.23


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_any_input_gets_only_documented_answers(raw: str | bytes) -> None:
    """Whatever a client sends, the machine answers with documented messages or asks the node
    for something; it never raises and never closes for bad input."""
    state = opened()
    for action in state.receive(raw, 1.0):
        assert not isinstance(action, Close)
        if isinstance(action, Send):
            message = orjson.loads(action.body)
            assert message["type"] in {"error", "pong", "subscribed", "unsubscribed"}


class Shouting(FeedJson):
    """Another protocol for the test: the same commands, other replies."""

    name = "shouting"

    def pong(self) -> bytes:
        return b'{"type":"PONG"}'

    def error(self, code: str, message: str, channel: str | None = None, **extra: object) -> bytes:
        return orjson.dumps({"type": "ERROR", "code": code.upper()})


def test_replies_come_from_the_connections_codec() -> None:
    """The machine encodes no reply itself: another codec changes what the client reads and
    nothing else (the same actions, the same published body)."""
    state = SessionState("c1", "ann", Identity(user="ann"), codec=Shouting())
    state.open("lobby", None, None, now=0.0)
    assert sent(state.receive('{"type":"ping"}', 1.0)) == [{"type": "PONG"}]
    assert sent(state.receive("not json", 1.0)) == [{"type": "ERROR", "code": "INVALID_JSON"}]
    (publish,) = state.receive('{"type":"chat","message":"hi"}', 1.0)
    assert isinstance(publish, Publish)
    assert orjson.loads(publish.body) == protocol_chat("lobby", "hi")


def test_the_server_subscribes_without_permissions_and_says_so() -> None:
    """A server subscribe joins even where the client may not, acknowledged as the server's;
    a second one, or one of a connection that closed, does nothing."""
    state = opened(Identity(user="ann", channels=ChannelPatterns(["lobby"])))
    (join,) = state.server_subscribe("private", 3, "ep")
    assert join == Join("private", 3, "ep", ack=protocol.subscribed("private", by_server=True))
    assert orjson.loads(join.ack or b"") == {
        "type": "subscribed",
        "channel": "private",
        "server": True,
    }
    assert state.server_subscribe("private") == []
    assert state.server_subscribe("nope:x") == []  # an unknown namespace here: left alone
    assert sent(state.server_unsubscribe("private")) == [
        {"type": "unsubscribed", "channel": "private", "server": True}
    ]
    assert state.server_unsubscribe("private") == []
    assert state.server_disconnect(4410, "bye") == [Close(4410, "bye")]
    assert state.server_subscribe("later") == []
    assert state.server_disconnect(4000, "again") == []


def test_the_server_subscribe_keeps_the_channel_cap() -> None:
    state = opened(limits=Limits(max_channels=1))
    assert sent(state.server_subscribe("more"))[0]["code"] == "too_many_channels"


def test_the_server_refreshes_or_ends_the_credential() -> None:
    """A refresh moves the expiry (or removes it); ``expired`` closes with 4401 at once."""
    state = opened()
    assert state.server_refresh(10.0, False, 5.0) == [Expire(15.0)]
    assert state.tick(14.0) == []
    assert state.tick(15.0) == [Close(CloseCode.TOKEN_EXPIRED, "token expired")]
    state = opened()
    assert state.server_refresh(10.0, False, None) == [Expire(None)]
    assert state.tick(1e9) == []
    assert state.server_refresh(10.0, True, None) == [
        Close(CloseCode.TOKEN_EXPIRED, "token expired")
    ]
