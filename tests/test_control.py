"""The control channel's commands: what one node sends every node about a user's connections."""

from __future__ import annotations

import contextlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sanic_feeds.channels import is_valid_channel
from sanic_feeds.control import (
    CONTROL_CHANNEL,
    ControlCommand,
    DisconnectUser,
    RefreshUser,
    SubscribeUser,
    UnknownCommand,
    UnsubscribeUser,
    decode,
    encode,
)

COMMANDS = [
    SubscribeUser("ann", "news"),
    SubscribeUser("ann", "chat:1", client="c1", since=5, epoch="abc"),
    UnsubscribeUser("ann", "news", client="c2"),
    DisconnectUser("bob", 4410, "bye"),
    DisconnectUser("bob", 3000, "", keep=("c1", "c2")),
    RefreshUser("eve", expired=True),
    RefreshUser("eve", client="c3", expire_at=1_900_000_000),
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_survives_encoding(command: ControlCommand) -> None:
    """What a node encodes, every node decodes to the same command."""
    assert decode(encode(command)) == command


def test_the_format_is_versioned_json_without_defaults() -> None:
    """One small JSON object with its version; fields at their defaults are left out."""
    assert orjson.loads(encode(SubscribeUser("ann", "news"))) == {
        "v": 1,
        "op": "subscribe",
        "user": "ann",
        "channel": "news",
    }


def test_the_control_channel_is_no_client_channel() -> None:
    """No client can join, publish to or read the control channel: its name is invalid."""
    assert not is_valid_channel(CONTROL_CHANNEL)


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b'{"v": 2, "op": "subscribe", "user": "a", "channel": "b"}',
        b'{"v": 1, "op": "explode", "user": "a"}',
        b'{"v": 1, "op": ["subscribe"], "user": "a"}',
        b'{"v": 1, "op": "subscribe", "user": "a"}',
        b'{"v": 1, "op": "subscribe", "user": 1, "channel": "b"}',
        b'{"v": 1, "op": "disconnect", "user": "a", "code": "x", "reason": ""}',
    ],
)
def test_anything_else_is_an_unknown_command(payload: bytes) -> None:
    """Other versions, operations, missing or mistyped fields: refused, never half-read."""
    with pytest.raises(UnknownCommand):
        decode(payload)


def test_fields_of_a_newer_release_are_left_out() -> None:
    """A field this release does not know is ignored, so a newer node's command (a subscribe
    with info and data, during a rolling upgrade) still acts here on what this node knows."""
    assert decode(b'{"v": 1, "op": "refresh", "user": "a", "extra": 1}') == RefreshUser("a")
    newer = b'{"v": 1, "op": "subscribe", "user": "a", "channel": "b", "colour": "red"}'
    assert decode(newer) == SubscribeUser("a", "b")


@given(st.binary(max_size=200))
def test_decoding_never_fails_otherwise(payload: bytes) -> None:
    """Whatever arrives on the channel, decoding gives a command or UnknownCommand."""
    with contextlib.suppress(UnknownCommand):
        decode(payload)
