"""Centrifugo's Protobuf encoding, as a translation to and from its JSON encoding.

Clients that open ``/connection/websocket`` with the ``centrifuge-protobuf`` subprotocol send
binary frames of varint-delimited ``Command`` messages and read varint-delimited ``Reply``
messages (``centrifugo_pb/centrifugo_client.proto``, the published definitions). The JSON
encoding follows the same definitions field for field, so the state machine, the replies and
the pushes stay JSON inside, and this module translates at the edge: commands on the way in
(:func:`commands_as_json`), each reply or push on the way out (:func:`reply_of`, once per
message per wire for pushes).

``bytes`` fields (``data``, ``conn_info``, ...) carry a JSON value's text in the JSON encoding
and raw bytes in Protobuf: bytes that are not JSON reach the JSON world as a string of their
UTF-8 text (undecodable bytes replaced), which is where the two encodings cannot meet.

Pure code: no I/O.
"""

from __future__ import annotations

import logging

import orjson
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from .centrifugo_pb.centrifugo_client_pb2 import Command, Reply

log = logging.getLogger(__name__)

_MESSAGE = FieldDescriptor.TYPE_MESSAGE
_BYTES = FieldDescriptor.TYPE_BYTES


class NotCommands(ValueError):
    """Bytes that are not varint-delimited ``Command`` messages."""


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise NotCommands("a truncated length")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def delimited(data: bytes) -> list[bytes]:
    """The messages of a varint-delimited stream."""
    messages, pos = [], 0
    while pos < len(data):
        size, pos = _read_varint(data, pos)
        if pos + size > len(data):
            raise NotCommands("a truncated message")
        messages.append(data[pos : pos + size])
        pos += size
    return messages


def commands_as_json(frame: str | bytes) -> str | bytes:
    """A binary frame of commands as the JSON encoding's frame (one command per line).

    A frame that is not commands comes back unchanged: the state machine then closes the
    connection with 3501 (bad request), as for any frame it cannot read.
    """
    if isinstance(frame, str):
        return frame
    try:
        lines = []
        for raw in delimited(frame):
            command = Command()
            command.ParseFromString(raw)
            lines.append(orjson.dumps(_as_json(command)))
    except (NotCommands, DecodeError):
        return frame
    return b"\n".join(lines).decode()


def reply_of(body: bytes) -> bytes:
    """A JSON reply or push as a varint-delimited ``Reply`` (b"" if it cannot be one)."""
    try:
        value = orjson.loads(body)
        reply = Reply()
        if not isinstance(value, dict):
            raise TypeError("not an object")
        _fill(reply, value)
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        log.warning("a reply has no Protobuf form (%s): %.100r", exc, body)
        return b""
    raw = reply.SerializeToString()
    return varint(len(raw)) + raw


def reply_as_json(data: bytes) -> bytes:
    """The JSON form of a varint-delimited ``Reply`` (``reply_of`` undone; b"" if none)."""
    try:
        (raw,) = delimited(data)
        reply = Reply()
        reply.ParseFromString(raw)
    except (NotCommands, DecodeError, ValueError):
        return b""
    return orjson.dumps(_as_json(reply))


# -- the field walk ------------------------------------------------------------------------------


def _as_json(message: Message) -> dict[str, object]:
    out: dict[str, object] = {}
    for field, value in message.ListFields():
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            item = entry.fields_by_name["value"]
            out[field.name] = {key: _scalar_as_json(item, v) for key, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [_scalar_as_json(field, v) for v in value]
        else:
            out[field.name] = _scalar_as_json(field, value)
    return out


def _scalar_as_json(field: FieldDescriptor, value: object) -> object:
    if field.type == _MESSAGE:
        assert isinstance(value, Message)  # the descriptor says so
        return _as_json(value)
    if field.type == _BYTES:
        assert isinstance(value, bytes)
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value.decode("utf-8", "replace")
    return value


def _fill(message: Message, value: dict[str, object]) -> None:
    fields = message.DESCRIPTOR.fields_by_name
    for key, item in value.items():
        field = fields.get(key)
        if field is None or item is None:
            continue  # nothing of the JSON form is left out but what the definitions lack
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            if not isinstance(item, dict):
                raise TypeError(f"{key} is not an object")
            target = getattr(message, key)
            for name, each in item.items():
                if entry.fields_by_name["value"].type == _MESSAGE:
                    _fill(target[name], _object(each, key))
                else:
                    target[name] = each
        elif field.is_repeated:
            if not isinstance(item, list):
                raise TypeError(f"{key} is not a list")
            target = getattr(message, key)
            for each in item:
                if field.type == _MESSAGE:
                    _fill(target.add(), _object(each, key))
                else:
                    target.append(orjson.dumps(each) if field.type == _BYTES else each)
        elif field.type == _MESSAGE:
            child = getattr(message, key)
            child.SetInParent()  # an empty result is still a result (``{"publish": {}}``)
            _fill(child, _object(item, key))
        elif field.type == _BYTES:
            setattr(message, key, orjson.dumps(item))
        else:
            setattr(message, key, item)


def _object(value: object, key: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise TypeError(f"{key} is not an object")
    return value
