"""The Centrifugo protocol's state machine and codec, without sockets: frames in, actions out.

Replies carry their command's id through the actions; bad input gets a documented error or
disconnect code, and generated frames never make the machine raise.
"""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from sanic_feeds import centrifugo_protocol as cp
from sanic_feeds.auth import Identity, TokenExpired
from sanic_feeds.centrifugo_actions import (
    Action,
    Authenticate,
    CallRpc,
    Close,
    FinishConnect,
    JoinChannel,
    Leave,
    PublishTo,
    ReadHistory,
    Send,
)
from sanic_feeds.centrifugo_state import CentrifugoState
from sanic_feeds.centrifugo_wire import CENTRIFUGO, CENTRIFUGO_JOIN_LEAVE
from sanic_feeds.history import JoinPosition, stamp
from sanic_feeds.protocol import chat, data, gap, user_joined

NOW = 1_000_000.0


def frame(*commands: dict[str, object]) -> str:
    return "\n".join(orjson.dumps(c).decode() for c in commands)


def sent(actions: list[Action]) -> list[dict[str, object]]:
    return [orjson.loads(a.body) for a in actions if isinstance(a, Send)]


def connected(identity: Identity | None = None) -> CentrifugoState:
    state = CentrifugoState("c1")
    [auth] = state.receive(frame({"id": 1, "connect": {"token": "t"}}), NOW)
    assert isinstance(auth, Authenticate)
    [finish] = state.authenticated(auth, identity or Identity(user="ann", subject="ann"), NOW)
    assert isinstance(finish, FinishConnect)
    reply = orjson.loads(state.connect_reply(finish, NOW))
    assert reply["id"] == 1 and reply["connect"]["client"] == "c1"
    return state


def test_connect_replies_with_the_client_id_and_the_ping() -> None:
    """connect -> Authenticate(id) -> FinishConnect(id) -> the reply, with ping/pong."""
    state = CentrifugoState("c1")
    [auth] = state.receive(frame({"id": 7, "connect": {}}), NOW)
    assert auth == Authenticate(7, "")
    identity = Identity(user="ann", subject="ann", expires_at=NOW + 60)
    [finish] = state.authenticated(auth, identity, NOW)
    reply = orjson.loads(state.connect_reply(finish, NOW))  # type: ignore[arg-type]
    assert reply == {
        "id": 7,
        "connect": {
            "client": "c1",
            "version": "sanic-feeds",
            "expires": True,
            "ttl": 60,
            "ping": 25,
            "pong": True,
        },
    }


def test_commands_before_connect_and_bad_frames_disconnect_with_3501() -> None:
    for raw in (frame({"id": 1, "subscribe": {"channel": "a"}}), "nope", "[1]", '{"id":-1}'):
        [close] = CentrifugoState("c1").receive(raw, NOW)
        assert isinstance(close, Close) and close.code == cp.Disconnect.BAD_REQUEST
    [close] = CentrifugoState("c1").receive(b"\x00binary", NOW)
    assert isinstance(close, Close) and close.code == 3501


def test_commands_behind_connect_wait_for_it() -> None:
    """SDKs pipeline subscribe behind connect; it is handled once the connection is up."""
    state = CentrifugoState("c1")
    [auth] = state.receive(
        frame({"id": 1, "connect": {}}, {"id": 2, "subscribe": {"channel": "news"}}), NOW
    )
    assert isinstance(auth, Authenticate)
    [finish] = state.authenticated(auth, Identity(user="ann", subject="ann"), NOW)
    state.connect_reply(finish, NOW)  # type: ignore[arg-type]
    [join] = state.after_connect(NOW)
    assert join == JoinChannel(2, "news")


def test_token_refusals() -> None:
    """Expired: error 109 (SDKs refresh); no token where one is needed: 101; invalid: 3500."""
    from sanic_feeds.auth import AuthError

    for error, expected in ((TokenExpired(), 109), (AuthError("unauthorized"), 101)):
        state = CentrifugoState("c1")
        [auth] = state.receive(frame({"id": 3, "connect": {"token": "x"}}), NOW)
        assert isinstance(auth, Authenticate)
        assert sent(state.auth_failed(auth, error)) == [
            {"id": 3, "error": {"code": expected, "message": cp.ERROR_MESSAGES[expected]}}  # type: ignore[index]
        ]
    state = CentrifugoState("c1")
    [auth] = state.receive(frame({"id": 3, "connect": {"token": "x"}}), NOW)
    [close] = state.auth_failed(auth, AuthError("invalid token: bad"))  # type: ignore[arg-type]
    assert close == Close(3500, "invalid token")


def test_subscribe_reply_carries_position_and_recovery() -> None:
    state = connected()
    [join] = state.receive(
        frame({"id": 4, "subscribe": {"channel": "news", "recover": True, "offset": 2}}), NOW
    )
    assert join == JoinChannel(4, "news", 2, None, False)
    replayed = [stamp(data("news", 3), 3, "e1")]
    position = JoinPosition(True, "e1", 3, True, True, replayed)
    reply = state.channels.subscribed(join, position, NOW)
    assert reply is not None
    assert orjson.loads(reply) == {
        "id": 4,
        "subscribe": {
            "recoverable": True,
            "positioned": True,
            "epoch": "e1",
            "offset": 3,
            "was_recovering": True,
            "recovered": True,
            "publications": [{"data": 3, "offset": 3, "epoch": "e1"}],
        },
    }
    [already] = state.receive(frame({"id": 5, "subscribe": {"channel": "news"}}), NOW)
    assert sent([already])[0]["error"] == {"code": 105, "message": "already subscribed"}
    assert state.receive(frame({"id": 6, "unsubscribe": {"channel": "news"}}), NOW)[0] == Leave(
        "news"
    )


def test_refusals_map_to_centrifugo_codes() -> None:
    state = connected()
    unknown = state.receive(frame({"id": 8, "subscribe": {"channel": "nope:1"}}), NOW)
    assert sent(unknown)[0]["error"] == {"code": 102, "message": "unknown channel"}
    bad = state.receive(frame({"id": 9, "subscribe": {"channel": 5}}), NOW)
    assert sent(bad)[0]["error"] == {"code": 107, "message": "bad request"}
    missing = state.receive(frame({"id": 10, "frobnicate": {}}), NOW)
    assert sent(missing)[0] == {"id": 10, "error": {"code": 104, "message": "method not found"}}


def test_publish_rpc_history_carry_their_ids() -> None:
    state = connected(Identity(user="ann", subject="ann", claims={"info": {"r": 1}}))
    refused = state.receive(frame({"id": 10, "publish": {"channel": "a", "data": 0}}), NOW)
    assert sent(refused)[0]["error"] == {"code": 103, "message": "permission denied"}
    state.receive(frame({"id": 1, "subscribe": {"channel": "a"}}), NOW)
    [publish] = state.receive(frame({"id": 11, "publish": {"channel": "a", "data": [1]}}), NOW)
    assert isinstance(publish, PublishTo) and publish.id == 11
    assert orjson.loads(publish.body) == {
        "type": "chat",
        "channel": "a",
        "client": "c1",
        "user": "ann",
        "message": [1],
        "info": {"r": 1},
    }
    [rpc] = state.receive(frame({"id": 12, "rpc": {"method": "m", "data": 2}}), NOW)
    assert rpc == CallRpc(12, "m", 2)
    assert orjson.loads(state.rpc_done(rpc, {"ok": 1})) == {"id": 12, "rpc": {"data": {"ok": 1}}}
    [history] = state.receive(frame({"id": 13, "history": {"channel": "a", "limit": 5}}), NOW)
    assert isinstance(history, ReadHistory) and (history.id, history.request_limit) == (13, 5)
    assert sent(state.receive(frame({"id": 14, "ping": {}}), NOW)) == [{"id": 14, "ping": {}}]


def test_expiry_closes_with_3005_unless_refreshed() -> None:
    state = connected(Identity(user="ann", subject="ann", expires_at=NOW + 10))
    deadline = state.deadline()
    assert deadline is not None and state.tick(deadline - 1) == []
    [refresh] = state.receive(frame({"id": 20, "refresh": {"token": "new"}}), NOW + 5)
    assert isinstance(refresh, Authenticate) and refresh.refresh
    fresh = Identity(user="ann", subject="ann", expires_at=NOW + 100)
    assert sent(state.authenticated(refresh, fresh, NOW + 5))[0]["refresh"]["ttl"] == 95  # type: ignore[index]
    assert state.tick(deadline) == []
    [close] = state.tick(NOW + 100 + state.settings.expired_close_delay)
    assert close == Close(3005, "connection expired")


def test_feed_messages_become_pushes() -> None:
    """chat -> pub with info; data -> pub; joins only on the join/leave wire; gap -> 2500."""
    body = stamp(chat("a", "c9", "zoe", "hi"), 4, "e1")
    pushed = orjson.loads(CENTRIFUGO.frame(body)[2:])
    assert pushed == {
        "push": {
            "channel": "a",
            "pub": {
                "data": "hi",
                "info": {"client": "c9", "user": "zoe"},
                "offset": 4,
                "epoch": "e1",
            },
        }
    }
    assert CENTRIFUGO.body_of(CENTRIFUGO.frame(body)) == b'{"id":4,"epoch":"e1"}'
    assert CENTRIFUGO.frame(user_joined("a", "c9", "zoe")) == b""
    joined = orjson.loads(CENTRIFUGO_JOIN_LEAVE.frame(user_joined("a", "c9", "zoe"))[2:])
    assert joined["push"]["join"] == {"info": {"client": "c9", "user": "zoe"}}
    assert orjson.loads(CENTRIFUGO.frame(gap("a"))[2:])["push"]["unsubscribe"]["code"] == 2500
    assert orjson.loads(CENTRIFUGO.frame(data("a", {"x": 1}))[2:])["push"]["pub"] == {
        "data": {"x": 1}
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
commands = st.fixed_dictionaries(
    {"id": st.integers(min_value=-2, max_value=2**33) | json_values},
    optional={
        method: json_values | st.dictionaries(st.text(max_size=8), json_values)
        for method in cp.METHODS
    },
)


@settings(max_examples=150, deadline=None)
@given(st.lists(commands | json_values, min_size=1, max_size=4), st.booleans())
def test_generated_frames_never_raise(items: list[object], connect_first: bool) -> None:
    """Whatever arrives, the machine answers with documented codes and never raises."""
    state = connected() if connect_first else CentrifugoState("c1")
    text = "\n".join(orjson.dumps(item).decode() for item in items)
    for action in [*state.receive(text, NOW), *state.receive(text[:7], NOW)]:
        if isinstance(action, Close):
            assert 3000 <= action.code < 4000
        if isinstance(action, Send):
            reply = orjson.loads(action.body)
            if "error" in reply:
                assert reply["error"]["code"] in {100, 101, 102, 103, 104, 105, 106, 107, 108}


def test_a_namespace_rate_limit_refuses_publishes_with_111() -> None:
    """A namespace's per-connection rate_limit holds on this protocol too: over it, error 111
    (too many requests, temporary) and nothing published."""
    from sanic_feeds.namespaces import OPEN_CHANNELS, ChannelOptions, Namespace, Namespaces
    from sanic_feeds.permissions import Permissions
    from sanic_feeds.ratelimit import Rate
    from sanic_feeds.session_state import Limits

    fast = ChannelOptions(allow_publish_for_client=True, rate_limit=Rate(2, 60))
    limits = Limits(permissions=Permissions(Namespaces(OPEN_CHANNELS, [Namespace("fast", fast)])))
    state = CentrifugoState("c1", limits)
    [auth] = state.receive(frame({"id": 1, "connect": {"token": "t"}}), NOW)
    assert isinstance(auth, Authenticate)
    [finish] = state.authenticated(auth, Identity(user="ann", subject="ann"), NOW)
    assert isinstance(finish, FinishConnect)
    state.connect_reply(finish, NOW)
    publish = {"publish": {"channel": "fast:x", "data": 1}}
    for ident in (2, 3):
        [allowed] = state.receive(frame({"id": ident, **publish}), NOW)
        assert isinstance(allowed, PublishTo)
    over = state.receive(frame({"id": 4, **publish}), NOW)
    assert sent(over) == [
        {"id": 4, "error": {"code": 111, "message": "too many requests", "temporary": True}}
    ]
    [later] = state.receive(frame({"id": 5, **publish}), NOW + 30)
    assert isinstance(later, PublishTo)
