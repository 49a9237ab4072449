"""Centrifugo's proxy requests and responses, as JSON: built from hook requests, read into hook
answers.

The shapes are Centrifugo's (docs/server/proxy.md in centrifugal.dev), so a backend written for
Centrifugo's HTTP proxies works here unchanged: every request carries ``client``,
``transport``, ``protocol`` (``"json"``) and ``encoding`` (``"json"``), plus ``user``,
``channel``, ``data``, ``method`` as the event has them; every response is one of
``{"result": {...}}``, ``{"error": {"code", "message"}}`` or ``{"disconnect": {"code",
"reason"}}``. An answer of any other shape is :class:`~sanic_feeds.hooks.Unavailable`
("malformed backend answer"): a temporary error, never a way in.

Pure code: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from .hooks import (
    KEEP,
    ConnectRequest,
    ConnectResult,
    Denial,
    Disconnect,
    PublishRequest,
    PublishResult,
    RefreshRequest,
    RefreshResult,
    Refuse,
    SubRefreshRequest,
    SubscribeRequest,
    SubscribeResult,
    Unavailable,
)

MALFORMED = "malformed backend answer"

Payload = dict[str, object]


def _base(client: str, transport: str) -> Payload:
    return {"client": client, "transport": transport, "protocol": "json", "encoding": "json"}


def forwarded(headers: Mapping[str, str], allowed: tuple[str, ...]) -> dict[str, str]:
    """The connection request's headers on the allow-list (names compared case-insensitively)."""
    found: dict[str, str] = {}
    for name in allowed:
        value = headers.get(name.lower())
        if value is not None:
            found[name] = value
    return found


# -- requests ----------------------------------------------------------------------------------


def connect_request(request: ConnectRequest) -> Payload:
    payload = _base(request.client, request.transport)
    if request.data is not None:
        payload["data"] = request.data
    if request.protocol == "centrifugo" and request.channels:
        payload["channels"] = list(request.channels)
    if request.name:
        payload["name"] = request.name
    return payload


def refresh_request(request: RefreshRequest) -> Payload:
    return {**_base(request.client, request.transport), "user": request.user}


def sub_refresh_request(request: SubRefreshRequest) -> Payload:
    payload = {**_base(request.client, request.transport), "user": request.user}
    payload["channel"] = request.channel
    return payload


def subscribe_request(request: SubscribeRequest) -> Payload:
    payload = {**_base(request.client, request.transport), "user": request.user}
    payload["channel"] = request.channel
    if request.data is not None:
        payload["data"] = request.data
    return payload


def publish_request(request: PublishRequest) -> Payload:
    payload = {**_base(request.client, request.transport), "user": request.user}
    payload.update(channel=request.channel, data=request.data)
    return payload


def rpc_request(
    client: str, user: str, method: str, data: object, transport: str = "websocket"
) -> Payload:
    payload = {**_base(client, transport), "user": user, "method": method}
    payload["data"] = data
    return payload


# -- responses ---------------------------------------------------------------------------------


def _result(answer: object) -> Payload | Denial:
    """The ``result`` object of a response, or the denial it says (or that it is malformed)."""
    if not isinstance(answer, dict):
        return Unavailable(MALFORMED)
    disconnect = answer.get("disconnect")
    if disconnect is not None:
        code, text = _code(disconnect, "reason")
        if code is None or not 3000 <= code <= 4999:
            return Unavailable(MALFORMED)
        return Disconnect(code, text)
    error = answer.get("error")
    if error is not None:
        code, text = _code(error, "message")
        if code is None:
            return Unavailable(MALFORMED)
        return Refuse(code, text)
    result = answer.get("result", {})
    if not isinstance(result, dict):
        return Unavailable(MALFORMED)
    return result


def _code(value: object, text_field: str) -> tuple[int | None, str]:
    if not isinstance(value, dict):
        return None, ""
    code, text = value.get("code"), value.get(text_field, "")
    if not isinstance(code, int) or isinstance(code, bool) or not isinstance(text, str):
        return None, ""
    return code, text


def _expire_at(result: Payload) -> float | Denial | None:
    value = result.get("expire_at", 0)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return Unavailable(MALFORMED)
    return float(value) if value else None


def connect_answer(answer: object) -> ConnectResult | Denial:
    result = _result(answer)
    if isinstance(result, Denial):
        return result
    user, expire_at = result.get("user"), _expire_at(result)
    channels = result.get("channels", [])
    subs = result.get("subs", {})
    if not isinstance(user, str) or isinstance(expire_at, Denial):
        return Unavailable(MALFORMED)
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        return Unavailable(MALFORMED)
    if not isinstance(subs, dict) or not all(isinstance(o, dict | None) for o in subs.values()):
        return Unavailable(MALFORMED)
    every = tuple(dict.fromkeys([*channels, *subs]))
    return ConnectResult(
        user=user,
        expire_at=expire_at,
        info=result.get("info"),
        channels=every,
        data=result.get("data"),
        subs={channel: options for channel, options in subs.items() if options},
    )


def refresh_answer(answer: object) -> RefreshResult | Denial:
    result = _result(answer)
    if isinstance(result, Denial):
        return result
    expire_at = _expire_at(result)
    if isinstance(expire_at, Denial):
        return expire_at
    return RefreshResult(expired=result.get("expired") is True, expire_at=expire_at)


def subscribe_answer(answer: object) -> SubscribeResult | Denial:
    result = _result(answer)
    if isinstance(result, Denial):
        return result
    expire_at = _expire_at(result)
    if isinstance(expire_at, Denial):
        return expire_at
    return SubscribeResult(info=result.get("info"), data=result.get("data"), expire_at=expire_at)


def publish_answer(answer: object) -> PublishResult | Denial:
    result = _result(answer)
    if isinstance(result, Denial):
        return result
    return PublishResult(data=result.get("data", KEEP))


def rpc_answer(answer: object) -> object:
    """The RPC's ``data``; raises the denial (RPC handlers raise theirs)."""
    result = _result(answer)
    if isinstance(result, Denial):
        raise result
    return result.get("data")
