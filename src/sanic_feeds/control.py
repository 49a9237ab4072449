"""Commands one node sends every node about a user's connections: the control channel's format.

The server API acts on a user's connections wherever they are (subscribe them to a channel,
unsubscribe them, disconnect them, refresh their credential's expiry). The node that takes the
request cannot reach the other nodes' sockets, so it publishes a small command on the broker's
control channel, which every node subscribes to when it starts; each node applies it to its own
sessions of that user (``control_dispatch.py``). Delivery is the broker's: at most once, like
every live message.

The channel's name starts with ``#``, which no client channel can (channel names start with a
letter or a digit), so no client can join it, publish to it or read it.

A command is one JSON object, ``{"v": 1, "op": <name>, "user": ..., ...}``. ``v`` is the format's
version: a node ignores versions it does not know (and logs it), so nodes of a newer release can
add fields or operations during a rolling upgrade without older nodes misreading them.

Pure code: encoding and decoding only, no I/O.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields

import orjson

CONTROL_CHANNEL = "#control"
"""The broker channel of control commands; no client channel name can start with ``#``."""

VERSION = 1
"""The format written by this release; see the module docstring."""


@dataclass(frozen=True, slots=True)
class SubscribeUser:
    """Join ``channel`` on behalf of the user's connections (or only ``client``)."""

    user: str
    channel: str
    client: str = ""
    since: int | None = None
    """Recover from this offset (with ``epoch``) before going live, as a client's ``since``."""
    epoch: str | None = None
    info: object = None
    """Centrifugo's protocol: the subscription's channel info (``chan_info``)."""
    data: object = None
    """Centrifugo's protocol: sent with the ``subscribe`` push."""


@dataclass(frozen=True, slots=True)
class UnsubscribeUser:
    """Leave ``channel`` on behalf of the user's connections (or only ``client``)."""

    user: str
    channel: str
    client: str = ""


@dataclass(frozen=True, slots=True)
class DisconnectUser:
    """Close the user's connections (or only ``client``) with ``code`` and ``reason``, except
    the client ids in ``keep``."""

    user: str
    code: int
    reason: str
    client: str = ""
    keep: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class RefreshUser:
    """Change when the user's connections (or only ``client``) expire.

    ``expired``: close them now, as an expired credential does. Else ``expire_at`` (Unix
    seconds) is the new expiry, or None for none at all.
    """

    user: str
    client: str = ""
    expired: bool = False
    expire_at: float | None = None


@dataclass(frozen=True, slots=True)
class MessageUser:
    """Send ``data`` to the user's connections (or only ``client``): an asynchronous message
    that belongs to no channel (Centrifugo's ``message`` push)."""

    user: str
    data: object
    client: str = ""


ControlCommand = SubscribeUser | UnsubscribeUser | DisconnectUser | RefreshUser | MessageUser

_OPS: dict[str, type[ControlCommand]] = {
    "subscribe": SubscribeUser,
    "unsubscribe": UnsubscribeUser,
    "disconnect": DisconnectUser,
    "refresh": RefreshUser,
    "message": MessageUser,
}
_NAMES = {kind: name for name, kind in _OPS.items()}


class UnknownCommand(ValueError):
    """A payload that is not a command of a version this node speaks."""


def encode(command: ControlCommand) -> bytes:
    """The command as the control channel carries it (optional fields at their defaults are
    left out)."""
    body: dict[str, object] = {"v": VERSION, "op": _NAMES[type(command)]}
    for spec in fields(command):
        value = getattr(command, spec.name)
        if spec.default is MISSING or value != spec.default:
            body[spec.name] = list(value) if isinstance(value, tuple) else value
    return orjson.dumps(body)


def decode(payload: bytes) -> ControlCommand:
    """A command from the control channel; :class:`UnknownCommand` for anything else."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise UnknownCommand("not JSON") from None
    if not isinstance(body, dict) or body.get("v") != VERSION:
        raise UnknownCommand(f"not a version {VERSION} command")
    op = body.pop("op", None)
    kind = _OPS.get(op) if isinstance(op, str) else None
    if kind is None:
        raise UnknownCommand("unknown operation")
    body.pop("v")
    # Fields this release does not know are left out, not refused: a newer node may add an
    # optional field (as 'info' and 'data' were added to subscribe) and older nodes still act
    # on the rest of the command during a rolling upgrade.
    known = {spec.name for spec in fields(kind)}
    body = {name: value for name, value in body.items() if name in known}
    if isinstance(body.get("keep"), list):
        body["keep"] = tuple(body["keep"])
    try:
        command = kind(**body)
    except TypeError as exc:
        raise UnknownCommand(f"bad fields: {exc}") from None
    if not all(isinstance(getattr(command, name), _TYPES[name]) for name in command.__slots__):
        raise UnknownCommand("a field has the wrong type")
    return command


_TYPES: dict[str, type | tuple[type, ...]] = {
    "user": str,
    "channel": str,
    "client": str,
    "since": (int, type(None)),
    "epoch": (str, type(None)),
    "code": int,
    "reason": str,
    "keep": tuple,
    "expired": bool,
    "expire_at": (int, float, type(None)),
    "data": object,
    "info": object,
}
