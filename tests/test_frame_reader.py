"""Decoding client frames (sanic_feeds.frames.FrameReader) and the opening handshake
(sanic_feeds.handshake), checked against the websockets library's own encoder."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from sanic_feeds.frames import (
    Control,
    FrameReader,
    close_frame,
    control_frame,
    unmask,
)
from sanic_feeds.frames import Opcode as Op
from sanic_feeds.handshake import HandshakeError, accept, accept_key, choose_subprotocol
from support.raw_ws import masked_frame as masked


def client(opcode: Opcode, payload: bytes, fin: bool = True) -> bytes:
    """One masked frame as a client library sends it."""
    frame = Frame(opcode, payload, fin)
    return frame.serialize(mask=True, extensions=[])


def feed_in_pieces(reader: FrameReader, data: bytes, cuts: list[int]) -> list[object]:
    out: list[object] = []
    start = 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        out += reader.feed(data[start:cut])
        start = cut
    return out


# -- messages -------------------------------------------------------------------------------------

messages = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300),
    st.text(min_size=126, max_size=70000).map(lambda s: s[:70000]),
)


@settings(max_examples=200)
@given(
    items=st.lists(messages, min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=8),
)
def test_any_split_of_any_messages_decodes_to_the_same_messages(
    items: list[str | bytes], cuts: list[int]
) -> None:
    """Whatever way TCP cuts the stream, the reader yields the messages sent, in order."""
    data = b"".join(
        client(Opcode.TEXT, m.encode()) if isinstance(m, str) else client(Opcode.BINARY, m)
        for m in items
    )
    reader = FrameReader(1 << 20)
    assert feed_in_pieces(reader, data, cuts) == items
    assert reader.failed is None


@settings(max_examples=100)
@given(
    text=st.text(min_size=1, max_size=500),
    parts=st.integers(min_value=2, max_value=6),
    ping_after=st.integers(min_value=0, max_value=5),
)
def test_fragments_are_joined_and_controls_may_come_between(
    text: str, parts: int, ping_after: int
) -> None:
    data = text.encode()
    size = -(-len(data) // parts)
    chunks = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    stream = b""
    for n, chunk in enumerate(chunks):
        opcode = Opcode.TEXT if n == 0 else Opcode.CONT
        stream += client(opcode, chunk, fin=n == len(chunks) - 1)
        if len(chunks) > 1 and n == ping_after % (len(chunks) - 1):
            stream += client(Opcode.PING, b"between")
    out = FrameReader(1 << 20).feed(stream)
    pings = [Control(Op.PING, b"between")] if len(chunks) > 1 else []
    assert out == [*pings, text]  # the ping completes before the message does


def test_ping_pong_and_close_frames() -> None:
    reader = FrameReader(1000)
    stream = (
        client(Opcode.PING, b"p")
        + client(Opcode.PONG, b"q")
        + client(Opcode.CLOSE, struct.pack("!H", 1000) + "bye ✓".encode())
    )
    assert reader.feed(stream) == [
        Control(Op.PING, b"p"),
        Control(Op.PONG, b"q"),
        Control(Op.CLOSE, struct.pack("!H", 1000) + "bye ✓".encode(), 1000, "bye ✓"),
    ]
    assert FrameReader(10).feed(client(Opcode.CLOSE, b"")) == [Control(Op.CLOSE, b"")]


# -- violations: each one a close code ---------------------------------------------------------

VIOLATIONS = [
    ("unmasked", masked(0x81, b"hi", mask=False), 1002),
    ("reserved bit", masked(0xC1, b"hi"), 1002),
    ("unknown opcode", masked(0x83, b""), 1002),
    ("fragmented ping", masked(0x09, b"x"), 1002),
    ("long ping", masked(0x89, b"x" * 126), 1002),
    ("lone continuation", client(Opcode.CONT, b"x"), 1002),
    (
        "message inside a message",
        client(Opcode.TEXT, b"a", fin=False) + client(Opcode.TEXT, b"b"),
        1002,
    ),
    ("too big", client(Opcode.TEXT, b"x" * 101), 1009),
    (
        "too big in fragments",
        client(Opcode.TEXT, b"x" * 60, fin=False) + client(Opcode.CONT, b"x" * 60),
        1009,
    ),
    ("invalid UTF-8", client(Opcode.TEXT, b"\xff\xfe"), 1007),
    (
        "invalid UTF-8 split over fragments",
        client(Opcode.TEXT, "é".encode()[:1], fin=False) + client(Opcode.CONT, b"\xff"),
        1007,
    ),
    ("1-byte close", masked(0x88, b"\x03"), 1002),
    ("reserved close code", masked(0x88, struct.pack("!H", 1005)), 1002),
    ("close code out of range", masked(0x88, struct.pack("!H", 5000)), 1002),
    ("close reason not UTF-8", masked(0x88, struct.pack("!H", 1000) + b"\xff"), 1007),
    ("64-bit length with top bit", bytes((0x81, 0xFF)) + b"\x80" + b"\0" * 7, 1002),
]


@pytest.mark.parametrize(("name", "frame", "code"), VIOLATIONS, ids=[v[0] for v in VIOLATIONS])
def test_violations_fail_with_their_close_code(name: str, frame: bytes, code: int) -> None:
    """Each violation sets ``failed`` with its code; the good frames before it still count."""
    reader = FrameReader(100)
    good = client(Opcode.TEXT, b"before")
    assert reader.feed(good + frame) == ["before"]
    assert reader.failed is not None and reader.failed.code == code
    assert reader.feed(client(Opcode.TEXT, b"after")) == []  # nothing after a failure


def test_oversized_frame_fails_before_its_payload_arrives() -> None:
    """The announced length is enough: a 1 GiB frame is refused from its header alone."""
    reader = FrameReader(1 << 16)
    assert reader.feed(bytes((0x81, 0xFF)) + (1 << 30).to_bytes(8, "big")) == []
    assert reader.failed is not None and reader.failed.code == 1009


@pytest.mark.parametrize(
    "first",
    [b"\xff", b"ok \xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90"],
    ids=["never-valid byte", "overlong", "surrogate", "above U+10FFFF"],
)
def test_invalid_utf8_in_a_first_fragment_fails_before_the_message_ends(first: bytes) -> None:
    """Text fragments are decoded as they come: a first fragment that cannot start valid UTF-8
    fails with 1007 at once, without waiting for (and buffering) the rest of the message."""
    reader = FrameReader(1 << 20)
    assert reader.feed(client(Opcode.TEXT, first, fin=False)) == []
    assert reader.failed is not None and reader.failed.code == 1007


def test_a_character_split_between_fragments_is_not_an_error() -> None:
    """The incremental check keeps an incomplete character for the next fragment."""
    data = "né ✓ 🙂".encode()
    reader = FrameReader(1 << 20)
    out: list[object] = []
    for n in range(len(data)):  # one byte per fragment: every character is split
        opcode = Opcode.TEXT if n == 0 else Opcode.CONT
        out += reader.feed(client(opcode, data[n : n + 1], fin=n == len(data) - 1))
        assert reader.failed is None
    assert out == ["né ✓ 🙂"]


def test_a_text_message_cut_inside_a_character_fails() -> None:
    reader = FrameReader(1 << 20)
    stream = client(Opcode.TEXT, b"ok", fin=False) + client(Opcode.CONT, "é".encode()[:1])
    assert reader.feed(stream) == []
    assert reader.failed is not None and reader.failed.code == 1007


@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(data: bytes) -> None:
    reader = FrameReader(1000)
    for item in reader.feed(data):
        assert isinstance(item, str | bytes | Control)


@given(st.binary(max_size=300), st.binary(min_size=4, max_size=4))
def test_unmask_is_its_own_inverse(data: bytes, mask: bytes) -> None:
    assert unmask(mask, unmask(mask, data)) == data


# -- server frames ---------------------------------------------------------------------------


def test_close_frame_layout_and_long_reasons_are_cut_on_a_character() -> None:
    assert close_frame(1000, "bye") == b"\x88\x05\x03\xe8bye"
    long = close_frame(4001, "é" * 100)
    assert len(long) == 2 + 2 + 122  # 61 two-byte characters fit in 123 bytes
    assert long[4:].decode() == "é" * 61
    assert control_frame(Op.PING) == b"\x89\x00"
    with pytest.raises(ValueError, match="125"):
        control_frame(Op.PING, b"x" * 126)


# -- handshake -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestHeaders:
    """Request headers as ``handshake.check`` reads them: by lower-case name.

    Not a plain dict, whose overloaded ``get`` does not match the ``handshake.Headers`` protocol.
    """

    fields: Mapping[str, str]

    def get(self, key: str, default: str | None = None, /) -> str | None:
        return self.fields.get(key, default)


GOOD = {
    "upgrade": "websocket",
    "connection": "keep-alive, Upgrade",
    "sec-websocket-version": "13",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
}


def test_accept_key_matches_the_rfc_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_accept_builds_the_101_response() -> None:
    response = accept(RequestHeaders(GOOD)).decode()
    assert response.startswith("HTTP/1.1 101 Switching Protocols\r\n")
    assert "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in response
    assert "Sec-WebSocket-Protocol" not in response
    assert response.endswith("\r\n\r\n")
    assert (
        "Sec-WebSocket-Protocol: sanic-feeds\r\n"
        in accept(RequestHeaders(GOOD), "sanic-feeds").decode()
    )


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"upgrade": "h2c"}, 400),
        ({"connection": "keep-alive"}, 400),
        ({"sec-websocket-version": "8"}, 426),
        ({"sec-websocket-key": "short"}, 400),
        ({"sec-websocket-key": "not base64 at all!!!!!!!"}, 400),
        ({"sec-websocket-key": ""}, 400),
    ],
)
def test_bad_upgrade_requests_are_refused(change: dict[str, str], status: int) -> None:
    with pytest.raises(HandshakeError) as refused:
        accept(RequestHeaders({**GOOD, **change}))
    assert refused.value.status == status


def test_subprotocol_choice() -> None:
    """Only the subprotocol we speak is ever chosen; a ``bearer.<token>`` entry never is."""
    assert choose_subprotocol([], "sanic-feeds") is None
    assert choose_subprotocol(["bearer.x", "sanic-feeds"], "sanic-feeds") == "sanic-feeds"
    assert choose_subprotocol(["chat", "bearer.x"], "sanic-feeds") is None
    assert choose_subprotocol(["bearer.x"], "sanic-feeds") is None


def test_a_426_names_the_version_spoken() -> None:
    with pytest.raises(HandshakeError) as refused:
        accept(RequestHeaders({**GOOD, "sec-websocket-version": "8"}))
    assert refused.value.headers == {"Sec-WebSocket-Version": "13"}
    with pytest.raises(HandshakeError) as refused:
        accept(RequestHeaders({**GOOD, "sec-websocket-key": "short"}))
    assert refused.value.headers == {}
