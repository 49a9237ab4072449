"""WebSocket text frames (sanic_feeds.frames) and broker envelopes (sanic_feeds.envelope)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from sanic_feeds.envelope import Envelope, open_envelope, seal
from sanic_feeds.frames import text_frame
from sanic_feeds.protocol import data


def parse_one_frame(raw: bytes) -> tuple[Frame, bytes]:
    """Parse ``raw`` as a server-to-client frame with websockets' own parser.

    Returns the frame and whatever bytes the parser did not consume.
    """
    reader = StreamReader()
    reader.feed_data(raw)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False, max_size=None, extensions=[])
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
    else:  # the parser wanted more data although all of it (and EOF) was fed
        raise AssertionError("parser did not finish on a complete frame")
    return frame, bytes(reader.buffer)


# -- frames -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "header_size"),
    [(0, 2), (1, 2), (125, 2), (126, 4), (127, 4), (65535, 4), (65536, 10), (70000, 10)],
)
def test_text_frame_parses_back(size: int, header_size: int) -> None:
    """A text frame of each length class parses as one final unmasked TEXT frame, nothing left."""
    payload = bytes(i % 251 for i in range(size))
    raw = text_frame(payload)
    assert len(raw) == header_size + size
    frame, rest = parse_one_frame(raw)
    assert frame.opcode is Opcode.TEXT
    assert frame.fin is True
    assert (frame.rsv1, frame.rsv2, frame.rsv3) == (False, False, False)
    assert bytes(frame.data) == payload
    assert rest == b""


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_text_frame_equals_websockets_serialization(size: int) -> None:
    """text_frame produces byte-for-byte what websockets serializes for the same unmasked frame."""
    payload = b"x" * size
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False)


def test_truncated_frame_does_not_parse() -> None:
    """Dropping the last byte of a frame leaves websockets' parser short of data (sanity check)."""
    raw = text_frame(b"hello")[:-1]
    with pytest.raises(EOFError):
        parse_one_frame(raw)


def test_frames_concatenate_into_a_stream() -> None:
    """Frames written back to back (as the flusher does) parse as separate frames in order."""
    payloads = [b"", b"a" * 126, data("c", 1), b"z" * 70_000]
    reader = StreamReader()
    reader.feed_data(b"".join(text_frame(p) for p in payloads))
    reader.feed_eof()
    for payload in payloads:
        parser = Frame.parse(reader.read_exact, mask=False, max_size=None, extensions=[])
        with pytest.raises(StopIteration) as done:
            next(parser)
        assert bytes(done.value.value.data) == payload
    assert not reader.buffer


def stretch(chunk: bytes, size: int) -> bytes:
    """``chunk`` repeated to exactly ``size`` bytes: large random-looking payloads, cheaply."""
    return (chunk * (size // len(chunk) + 1))[:size]


@settings(max_examples=100, deadline=None)
@given(
    st.binary(max_size=300)
    | st.builds(
        stretch,
        st.binary(min_size=1, max_size=64),
        st.sampled_from([125, 126, 127, 65_535, 65_536]) | st.integers(0, 70_000),
    )
)
def test_random_payloads_roundtrip(payload: bytes) -> None:
    """Any payload bytes come back unchanged from websockets' parser, with nothing left over."""
    frame, rest = parse_one_frame(text_frame(payload))
    assert frame.opcode is Opcode.TEXT
    assert frame.fin is True
    assert bytes(frame.data) == payload
    assert rest == b""


# -- envelope -----------------------------------------------------------------------------------


def test_seal_without_exclude_layout() -> None:
    """Without exclude the header is a space and the publish time, then a newline and the body."""
    body = data("room", {"a": 1})
    assert seal(body, sent_at_us=1700000000123456) == b" 1700000000123456\n" + body


def test_seal_with_exclude_layout() -> None:
    """With exclude the header is the client id, a space and the publish time."""
    assert seal(b"{}", "0a1b2c", sent_at_us=42) == b"0a1b2c 42\n{}"


def test_seal_stamps_the_current_time() -> None:
    """Without an explicit time, the publish time is now."""
    sent_at = open_envelope(seal(b"{}")).sent_at
    assert sent_at is not None
    assert abs(sent_at - time.time()) < 5


def test_roundtrip_without_exclude() -> None:
    """open_envelope(seal(body)) gives the body back, an empty exclude and the time."""
    body = data("room", ["x", None])
    assert open_envelope(seal(body, sent_at_us=5_000_000)) == Envelope(body, "", 5.0)


def test_roundtrip_with_exclude() -> None:
    """open_envelope(seal(body, id)) gives the body and that client id back."""
    body = data("room", 1)
    envelope = open_envelope(seal(body, "deadbeef01"))
    assert envelope.body == body
    assert envelope.exclude == "deadbeef01"


def test_header_without_time_is_accepted() -> None:
    """A bare newline (no header) or an id alone are envelopes without a publish time."""
    assert open_envelope(b"\n{}") == Envelope(b"{}", "", None)
    assert open_envelope(b"ab12\n{}") == Envelope(b"{}", "ab12", None)


@pytest.mark.parametrize("exclude", ["", "c0ffee"])
def test_body_with_newlines_survives(exclude: str) -> None:
    """Newlines inside the body (after the header) are kept: only the first newline splits."""
    body = b'{"a":\n1}\n\n{"b":2}\n'
    assert open_envelope(seal(body, exclude, 7)) == Envelope(body, exclude, 7e-6)


def test_empty_body_roundtrips() -> None:
    """An empty body survives sealing and opening."""
    assert open_envelope(seal(b"", sent_at_us=1)).body == b""
    assert open_envelope(seal(b"", "ab", 1)) == Envelope(b"", "ab", 1e-6)


@pytest.mark.parametrize("payload", [b"", b"{}", b'{"type":"data"}', b"abc"])
def test_payload_without_newline_is_rejected(payload: bytes) -> None:
    """A broker payload with no newline is not an envelope: ValueError."""
    with pytest.raises(ValueError, match="no envelope header"):
        open_envelope(payload)


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=200), exclude=st.text(alphabet="0123456789abcdef", max_size=24))
def test_random_envelopes_roundtrip(body: bytes, exclude: str) -> None:
    """Any body bytes with any hex client id (or none) roundtrip exactly."""
    assert open_envelope(seal(body, exclude, 123)) == Envelope(body, exclude, 123e-6)
