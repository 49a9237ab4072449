"""The server API's requests and errors: reading a method's JSON fields, with Centrifugo's codes.

Every field is read through :class:`Fields`, whose readers raise :class:`ApiError` (code 107,
"bad request", naming the field) for a missing or mistyped value, so no method ever meets a
value of the wrong type and no request body can make one fail with anything but a documented
error. The codes and their messages are Centrifugo's (docs/server/codes.md there), so its API
clients (``cent`` and the others) read them as they would from Centrifugo.

Pure code: no I/O.
"""

from __future__ import annotations

from enum import IntEnum
from typing import cast

from .channels import CHANNEL_RULES, is_valid_channel
from .errors import FeedsError
from .namespaces import ChannelOptions, Namespaces, UnknownNamespace


class ApiCode(IntEnum):
    """``error.code`` of a server API reply (Centrifugo's numbers)."""

    INTERNAL = 100
    """The server failed (the broker is unreachable, or a bug): retry later."""
    UNAUTHORIZED = 101
    """No API key, or a wrong one (HTTP 401)."""
    UNKNOWN_CHANNEL = 102
    """The channel names a namespace that is not configured."""
    METHOD_NOT_FOUND = 104
    """No such method (HTTP 404), or a batch command naming none."""
    LIMIT_EXCEEDED = 106
    """Over a size limit: the data of a publish, the commands of a batch, the body."""
    BAD_REQUEST = 107
    """A field is missing, has the wrong type or an invalid value; the message names it."""
    NOT_AVAILABLE = 108
    """The channel's namespace has the feature off (presence, history)."""
    UNRECOVERABLE_POSITION = 112
    """``history`` with a ``since`` the stream cannot continue from (another epoch, or older
    than what is kept)."""


MESSAGES = {
    ApiCode.INTERNAL: "internal server error",
    ApiCode.UNAUTHORIZED: "unauthorized",
    ApiCode.UNKNOWN_CHANNEL: "unknown channel",
    ApiCode.METHOD_NOT_FOUND: "method not found",
    ApiCode.LIMIT_EXCEEDED: "limit exceeded",
    ApiCode.BAD_REQUEST: "bad request",
    ApiCode.NOT_AVAILABLE: "not available",
    ApiCode.UNRECOVERABLE_POSITION: "unrecoverable position",
}


class ApiError(FeedsError):
    """A server API error: Centrifugo's message for the code, then what exactly was wrong."""

    def __init__(self, code: ApiCode, detail: str = "") -> None:
        self.code = code
        self.message = MESSAGES[code] + (f": {detail}" if detail else "")
        super().__init__(self.message)

    def to_json(self) -> dict[str, object]:
        return {"code": int(self.code), "message": self.message}


MISSING = object()


class Fields:
    """One request's JSON object; each reader checks the type of the field it reads."""

    __slots__ = ("_body", "_where")

    def __init__(self, body: object, where: str = "") -> None:
        """``where``: the path of this object in the request, for messages (``since.``)."""
        if not isinstance(body, dict):
            raise ApiError(
                ApiCode.BAD_REQUEST, f"{where.rstrip('.') or 'the request'} must be an object"
            )
        self._body: dict[str, object] = body
        self._where = where

    def raw(self, name: str, default: object = MISSING) -> object:
        value = self._body.get(name, default)
        if value is MISSING:
            raise ApiError(ApiCode.BAD_REQUEST, f"field {self._where}{name} is required")
        return value

    def has(self, name: str) -> bool:
        return self._body.get(name) is not None

    def _typed(self, name: str, kind: type, what: str, default: object) -> object:
        """The field's value, checked to be a ``kind`` (``cast`` by the callers)."""
        value = self._body.get(name)
        if value is None:
            if default is MISSING:
                raise ApiError(ApiCode.BAD_REQUEST, f"field {self._where}{name} is required")
            return default
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ApiError(ApiCode.BAD_REQUEST, f"field {self._where}{name} must be {what}")
        return value

    def text(self, name: str, default: str | object = MISSING, *, most: int = 1024) -> str:
        value = cast(str, self._typed(name, str, "a string", default))
        if len(value) > most:
            raise ApiError(
                ApiCode.BAD_REQUEST, f"field {self._where}{name} is over {most} characters"
            )
        return value

    def integer(self, name: str, default: int | object = MISSING) -> int:
        value = cast(int, self._typed(name, int, "an integer", default))
        if not -(2**53) <= value <= 2**53:
            raise ApiError(ApiCode.BAD_REQUEST, f"field {self._where}{name} is out of range")
        return value

    def flag(self, name: str) -> bool:
        return bool(self._typed(name, bool, "true or false", False))

    def texts(self, name: str, *, most: int) -> list[str]:
        """A list of strings, at most ``most`` (an empty or absent list is an empty list)."""
        value = cast(list[object], self._typed(name, list, "a list of strings", []))
        if len(value) > most:
            raise ApiError(ApiCode.LIMIT_EXCEEDED, f"field {self._where}{name}: at most {most}")
        if not all(isinstance(item, str) for item in value):
            raise ApiError(
                ApiCode.BAD_REQUEST, f"field {self._where}{name} must be a list of strings"
            )
        return cast(list[str], value)

    def obj(self, name: str) -> Fields | None:
        """A nested object, or None when absent."""
        value = self._body.get(name)
        return None if value is None else Fields(value, f"{self._where}{name}.")

    def channel(self, name: str = "channel") -> str:
        value = self.text(name)
        if not is_valid_channel(value):
            raise ApiError(ApiCode.BAD_REQUEST, f"invalid channel name; names are {CHANNEL_RULES}")
        return value

    def user(self) -> str:
        value = self.text("user", most=256)
        if not value:
            raise ApiError(ApiCode.BAD_REQUEST, "field user must not be empty")
        return value


def channel_options(namespaces: Namespaces, channel: str) -> ChannelOptions:
    """The channel's options, or error 102 when its namespace is not configured."""
    try:
        return namespaces.options(channel)
    except UnknownNamespace as exc:
        raise ApiError(ApiCode.UNKNOWN_CHANNEL, f"no namespace {exc.namespace!r}") from None


def idempotency_key(fields: Fields) -> str | None:
    key = fields.text("idempotency_key", None, most=128) if fields.has("idempotency_key") else None
    if key is not None and not (key and key.isprintable()):
        raise ApiError(ApiCode.BAD_REQUEST, "idempotency_key: 1-128 printable characters")
    return key


CLOSE_REASON_BYTES = 123
"""The longest close reason a WebSocket close frame can carry (RFC 6455)."""


def disconnect_of(fields: Fields, default_code: int) -> tuple[int, str]:
    """``disconnect: {code, reason}``: a code of the application range 3000-4999 and a reason
    that fits a close frame; the default when absent."""
    given = fields.obj("disconnect")
    if given is None:
        return default_code, "disconnected"
    code = given.integer("code")
    if not 3000 <= code <= 4999:
        raise ApiError(ApiCode.BAD_REQUEST, "disconnect.code must be 3000-4999")
    reason = given.text("reason", "")
    if len(reason.encode()) > CLOSE_REASON_BYTES:
        raise ApiError(
            ApiCode.BAD_REQUEST, f"disconnect.reason: at most {CLOSE_REASON_BYTES} bytes"
        )
    return code, reason
