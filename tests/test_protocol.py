"""Client frame parsing and server message encoding (sanic_feeds.protocol), without any I/O."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sanic_feeds.channels import CHANNEL_RULES
from sanic_feeds.errors import ProtocolError
from sanic_feeds.protocol import (
    CLIENT_TYPES,
    PONG,
    Chat,
    ErrorCode,
    Ping,
    Presence,
    Subscribe,
    Unsubscribe,
    chat,
    data,
    error,
    parse_frame,
    subscribed,
    unsubscribed,
    user_joined,
    user_left,
    welcome,
)

COMMAND_TYPES = (Chat, Subscribe, Unsubscribe, Ping, Presence)


def parse_error(text: str | bytes) -> ProtocolError:
    """Parse ``text`` and return the ProtocolError it must raise."""
    with pytest.raises(ProtocolError) as info:
        parse_frame(text)
    return info.value


def frame(**fields: object) -> bytes:
    return orjson.dumps(fields)


# -- parse_frame: valid commands ------------------------------------------------------------------


def test_client_types_are_the_documented_five() -> None:
    """The server accepts exactly chat, subscribe, unsubscribe, ping and presence."""
    assert set(CLIENT_TYPES) == {"chat", "subscribe", "unsubscribe", "ping", "presence"}


def test_parse_chat_without_channel() -> None:
    """A chat frame without channel parses to Chat with channel None."""
    assert parse_frame('{"type": "chat", "message": "hi"}') == Chat("hi", None)


def test_parse_chat_with_channel() -> None:
    """A chat frame with a valid channel carries that channel."""
    assert parse_frame(frame(type="chat", message="hi", channel="room-1")) == Chat("hi", "room-1")


@pytest.mark.parametrize(
    "message",
    [
        None,
        True,
        0,
        -(2**63),
        2**64 - 1,
        1.5,
        "",
        "héllo wörld ✓ 😀 日本語",
        [],
        {},
        [1, [2, [3, {"a": None}]]],
        {"nested": {"list": [1, "two", 3.0, False, None], "empty": {}}, "ünï": "ç"},
    ],
)
def test_chat_carries_any_json_value(message: object) -> None:
    """Chat.message is the decoded JSON value exactly, whatever its type (null, nested, unicode)."""
    command = parse_frame(frame(type="chat", message=message))
    assert isinstance(command, Chat)
    assert command.message == message
    assert type(command.message) is type(message)
    assert command.channel is None


def test_chat_accepts_str_and_bytes_frames_alike() -> None:
    """A frame given as bytes parses like the same frame given as str."""
    text = '{"type":"chat","message":{"é":[1,null]},"channel":"a"}'
    assert parse_frame(text) == parse_frame(text.encode()) == Chat({"é": [1, None]}, "a")


def test_parse_subscribe() -> None:
    """A subscribe frame parses to Subscribe with its channel."""
    assert parse_frame(frame(type="subscribe", channel="ticker.AAPL")) == Subscribe("ticker.AAPL")


def test_parse_unsubscribe() -> None:
    """An unsubscribe frame parses to Unsubscribe with its channel."""
    assert parse_frame(frame(type="unsubscribe", channel="u@x:1")) == Unsubscribe("u@x:1")


def test_parse_ping() -> None:
    """A ping frame parses to Ping."""
    assert parse_frame('{"type":"ping"}') == Ping()


def test_unknown_extra_fields_are_ignored() -> None:
    """Fields the protocol does not define do not change the parsed command."""
    assert parse_frame(frame(type="ping", extra=[1, 2], channel="x")) == Ping()
    assert parse_frame(frame(type="subscribe", channel="a", message=1)) == Subscribe("a")


# -- parse_frame: error codes -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", " ", "{", "{'type': 'ping'}", '{"type": "ping",}', "nul", "NaN", "1e999", b"\xff\xfe"],
)
def test_invalid_json(text: str | bytes) -> None:
    """Text that is not JSON raises invalid_json."""
    exc = parse_error(text)
    assert exc.code == ErrorCode.INVALID_JSON
    assert exc.message == "Invalid JSON format"


@pytest.mark.parametrize("depth", [2000, 5000])
def test_deeply_nested_json_is_invalid_json(depth: int) -> None:
    """JSON nested past the decoder's depth limit raises invalid_json instead of crashing."""
    assert parse_error("[" * depth).code == ErrorCode.INVALID_JSON
    assert parse_error("[" * depth + "]" * depth).code == ErrorCode.INVALID_JSON
    nested_in_message = '{"type":"chat","message":' + "[" * depth + "]" * depth + "}"
    assert parse_error(nested_in_message).code == ErrorCode.INVALID_JSON


@pytest.mark.parametrize("text", ["[]", '[{"type": "ping"}]', '"ping"', "1", "null", "true"])
def test_non_object_is_invalid_message(text: str) -> None:
    """Valid JSON that is not an object raises invalid_message."""
    exc = parse_error(text)
    assert exc.code == ErrorCode.INVALID_MESSAGE
    assert exc.message == "A message must be a JSON object"


@pytest.mark.parametrize("kind", [None, 1, 1.0, True, ["ping"], {"ping": 1}])
def test_non_string_type_is_invalid_message(kind: object) -> None:
    """A 'type' that is not a string raises invalid_message naming the field."""
    exc = parse_error(frame(type=kind))
    assert exc.code == ErrorCode.INVALID_MESSAGE
    assert exc.message == "Field 'type' must be a string"


def test_missing_type() -> None:
    """An object without 'type' raises missing_field for type."""
    exc = parse_error('{"message": "hi"}')
    assert exc.code == ErrorCode.MISSING_FIELD
    assert exc.message == "Missing field: type"


def test_chat_missing_message() -> None:
    """A chat without 'message' raises missing_field for message."""
    exc = parse_error(frame(type="chat", channel="a"))
    assert exc.code == ErrorCode.MISSING_FIELD
    assert exc.message == "Missing field: message"


@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe"])
def test_missing_channel(kind: str) -> None:
    """Subscribe and unsubscribe without 'channel' raise missing_field for channel."""
    exc = parse_error(frame(type=kind))
    assert exc.code == ErrorCode.MISSING_FIELD
    assert exc.message == "Missing field: channel"


@pytest.mark.parametrize("kind", ["", "Ping", "PING", "chat ", "pong", "publish", "é"])
def test_unknown_type(kind: str) -> None:
    """A string 'type' the server does not accept raises unknown_type listing the valid ones."""
    exc = parse_error(frame(type=kind))
    assert exc.code == ErrorCode.UNKNOWN_TYPE
    assert repr(kind) in exc.message
    assert "chat, subscribe, unsubscribe, ping" in exc.message


def test_unknown_type_exactly_40_chars_is_shown_whole() -> None:
    """A 40-character unknown type is quoted whole, without an ellipsis."""
    kind = "x" * 40
    exc = parse_error(frame(type=kind))
    assert exc.code == ErrorCode.UNKNOWN_TYPE
    assert repr(kind) in exc.message
    assert "..." not in exc.message


def test_unknown_type_of_41_chars_is_truncated() -> None:
    """A 41-character unknown type is shown as its first 40 plus '...'."""
    kind = "x" * 40 + "Y"
    exc = parse_error(frame(type=kind))
    assert exc.code == ErrorCode.UNKNOWN_TYPE
    assert repr("x" * 40 + "...") in exc.message
    assert "Y" not in exc.message


def test_unknown_long_type_is_truncated() -> None:
    """An unknown type longer than 40 characters is shown as its first 40 plus '...'."""
    kind = "a" * 40 + "B" * 10_000
    exc = parse_error(frame(type=kind))
    assert exc.code == ErrorCode.UNKNOWN_TYPE
    assert repr("a" * 40 + "...") in exc.message
    assert "B" not in exc.message
    assert len(exc.message) < 200


@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe", "chat"])
@pytest.mark.parametrize("channel", [None, 1, True, ["a"], {"a": 1}])
def test_non_string_channel_is_invalid_channel(kind: str, channel: object) -> None:
    """A present 'channel' that is not a string raises invalid_channel, also on chat."""
    exc = parse_error(frame(type=kind, channel=channel, message="m"))
    assert exc.code == ErrorCode.INVALID_CHANNEL
    assert CHANNEL_RULES in exc.message


@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe", "chat"])
@pytest.mark.parametrize(
    "channel", ["", " a", "a b", "-a", ".a", "_a", "a/b", "a#b", "é", "a" * 129, "a\n"]
)
def test_bad_channel_name_is_invalid_channel(kind: str, channel: str) -> None:
    """A 'channel' string that breaks the name rules raises invalid_channel."""
    exc = parse_error(frame(type=kind, channel=channel, message="m"))
    assert exc.code == ErrorCode.INVALID_CHANNEL
    assert exc.message == f"Invalid channel name; channel names are {CHANNEL_RULES}"


def test_error_codes_are_their_documented_strings() -> None:
    """ErrorCode members compare equal to the wire strings clients see."""
    assert {code.value for code in ErrorCode} == {
        "invalid_json",
        "invalid_message",
        "unknown_type",
        "missing_field",
        "invalid_channel",
        "not_subscribed",
        "binary_not_supported",
        "broker_unavailable",
        "forbidden",
        "rate_limited",
        "too_many_channels",
        "internal_error",
        "unknown_namespace",
        "not_available",
        "message_too_large",
        "channel_full",
        "refused",
        "backend_unavailable",
    }


# -- parse_frame: never any other exception -----------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)

types = st.sampled_from([*CLIENT_TYPES, "", "Chat"]) | st.text(max_size=60) | json_values


def check_parse(text: str | bytes) -> None:
    """parse_frame returns a Command or raises a ProtocolError with a documented code."""
    failure: ProtocolError | None = None
    try:
        command = parse_frame(text)
    except ProtocolError as exc:
        failure = exc
    if failure is None:
        assert isinstance(command, COMMAND_TYPES)
    else:
        assert failure.code in set(ErrorCode)
        assert isinstance(failure.message, str)
        assert failure.message


@settings(max_examples=120, deadline=None)
@given(st.text())
def test_arbitrary_text_never_crashes(text: str) -> None:
    """Arbitrary text gives a Command or a documented ProtocolError, never another exception."""
    check_parse(text)


@settings(max_examples=100, deadline=None)
@given(st.binary())
def test_arbitrary_bytes_never_crash(raw: bytes) -> None:
    """Arbitrary bytes (often invalid UTF-8) give a documented ProtocolError or a Command."""
    check_parse(raw)


@settings(max_examples=120, deadline=None)
@given(json_values)
def test_arbitrary_json_never_crashes(value: object) -> None:
    """Any JSON value as a whole frame gives a Command or a documented ProtocolError."""
    check_parse(orjson.dumps(value))


@settings(max_examples=120, deadline=None)
@given(
    kind=types,
    fields=st.dictionaries(
        st.sampled_from(["message", "channel", "extra"]) | st.text(max_size=8), json_values
    ),
)
def test_arbitrary_object_with_type_never_crashes(kind: object, fields: dict[str, object]) -> None:
    """An object with a random 'type' and random fields gives a Command or a documented error."""
    body = {**fields, "type": kind}
    check_parse(orjson.dumps(body))
    check_parse(orjson.dumps(body).decode())


@settings(max_examples=100, deadline=None)
@given(
    message=json_values,
    channel=st.none() | st.from_regex(r"[a-z0-9][a-z0-9_.:@-]{0,20}", fullmatch=True),
)
def test_chat_roundtrips_any_message(message: object, channel: str | None) -> None:
    """A chat frame with any JSON message parses to a Chat with that exact message and channel."""
    body: dict[str, object] = {"type": "chat", "message": message}
    if channel is not None:
        body["channel"] = channel
    assert parse_frame(orjson.dumps(body)) == Chat(message, channel)


# -- encoders ------------------------------------------------------------------------------------


def test_welcome_bytes() -> None:
    """welcome() is the documented system message, keys in order, compact JSON."""
    assert welcome("lobby", "c1", "ann") == (
        b'{"type":"system","channel":"lobby","client":"c1","user":"ann",'
        b'"message":"Welcome to lobby, ann"}'
    )


def test_user_joined_bytes() -> None:
    """user_joined() is the documented notice."""
    assert user_joined("lobby", "c1", "bob") == (
        b'{"type":"user_joined","channel":"lobby","client":"c1","user":"bob"}'
    )


def test_user_left_bytes() -> None:
    """user_left() is the documented notice."""
    assert user_left("lobby", "c1", "bob") == (
        b'{"type":"user_left","channel":"lobby","client":"c1","user":"bob"}'
    )


def test_chat_bytes() -> None:
    """chat() embeds the message value as JSON, unicode as raw UTF-8."""
    assert (
        chat("room", "c2", "zoë", {"text": "hi ✓", "n": [1, None]})
        == (
            '{"type":"chat","channel":"room","client":"c2","user":"zoë",'
            '"message":{"text":"hi ✓","n":[1,null]}}'
        ).encode()
    )


def test_data_bytes() -> None:
    """data() is the documented backend message with the payload under 'data'."""
    assert data("ticker.X", [1.5, "a", None]) == (
        b'{"type":"data","channel":"ticker.X","data":[1.5,"a",null]}'
    )
    assert data("c", None) == b'{"type":"data","channel":"c","data":null}'


def test_subscribed_and_unsubscribed_bytes() -> None:
    """subscribed() and unsubscribed() are the documented confirmations."""
    assert subscribed("a") == b'{"type":"subscribed","channel":"a"}'
    assert unsubscribed("a") == b'{"type":"unsubscribed","channel":"a"}'


def test_error_without_channel_bytes() -> None:
    """error() without a channel has type, code and message only; the code is its string."""
    assert error(ErrorCode.INVALID_JSON, "Invalid JSON format") == (
        b'{"type":"error","code":"invalid_json","message":"Invalid JSON format"}'
    )


def test_error_with_channel_bytes() -> None:
    """error() with a channel appends the channel field."""
    assert error(ErrorCode.NOT_SUBSCRIBED, "nope", channel="room") == (
        b'{"type":"error","code":"not_subscribed","message":"nope","channel":"room"}'
    )


def test_pong_bytes() -> None:
    """PONG is the documented pong message."""
    assert PONG == b'{"type":"pong"}'
    assert orjson.loads(PONG) == {"type": "pong"}


@settings(max_examples=100, deadline=None)
@given(payload=json_values, channel=st.text(max_size=20))
def test_data_roundtrips_payload(payload: object, channel: str) -> None:
    """data() output decodes back to the same channel and payload."""
    assert orjson.loads(data(channel, payload)) == {
        "type": "data",
        "channel": channel,
        "data": payload,
    }


def test_presence_and_subscribe_with_since_parse() -> None:
    """presence takes an optional channel; subscribe takes optional since and epoch."""
    assert parse_frame('{"type":"presence"}') == Presence(None)
    assert parse_frame('{"type":"presence","channel":"a"}') == Presence("a")
    assert parse_frame('{"type":"subscribe","channel":"a","since":5,"epoch":"ab12"}') == (
        Subscribe("a", 5, "ab12")
    )
    for bad in ('"5x"', "-1", "true", "1.5", '"' + "9" * 30 + '"'):
        err = parse_error('{"type":"subscribe","channel":"a","since":' + bad + "}")
        assert err.code == ErrorCode.INVALID_MESSAGE
    err = parse_error('{"type":"subscribe","channel":"a","epoch":"has space"}')
    assert err.code == ErrorCode.INVALID_MESSAGE
