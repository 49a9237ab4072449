"""The server API's commands to a Centrifugo-protocol connection, as inputs of its machine.

The same commands reach every protocol through the control channel (``control.py``); here is
what each means on this one: ``subscribe`` joins the channel and announces it with a
``subscribe`` push (the SDKs then show a server-side subscription), ``unsubscribe`` leaves it
with an ``unsubscribe`` push (code 2000, "server unsubscribe": the SDKs do not resubscribe),
``disconnect`` closes with the given code (by default 3503, "force disconnect": the SDKs do
not reconnect), ``refresh`` ends the credential now or moves its expiry, ``message`` is a
``message`` push (the SDKs' message event). Pure code.
"""

from __future__ import annotations

import orjson

from . import centrifugo_protocol as cp
from .centrifugo_actions import Action, Leave, Send
from .centrifugo_protocol import Disconnect
from .centrifugo_state import CentrifugoState
from .control import (
    ControlCommand,
    DisconnectUser,
    MessageUser,
    RefreshUser,
    SubscribeUser,
    UnsubscribeUser,
)
from .permissions import Refusal, options_of
from .protocol import CloseCode

SERVER_UNSUBSCRIBE = {"code": 2000, "reason": "server unsubscribe"}

FORCE_DISCONNECT = 3503
"""Centrifugo's "force disconnect": the server API's default, and the SDKs do not reconnect."""


def server_command(state: CentrifugoState, command: ControlCommand, now: float) -> list[Action]:
    """What ``command`` does to this connection (nothing once it is closed, or before it has
    connected: the server API acts on connections, and this one is none yet)."""
    if state.closed is not None or not state.connected:
        return []
    channels = state.channels
    match command:
        case SubscribeUser(channel=channel, info=info, data=data):
            known = not isinstance(options_of(channels.permissions.namespaces, channel), Refusal)
            if channel in channels.channels or not known:
                return []
            return [channels.add_server_side(channel, info, data)]
        case UnsubscribeUser(channel=channel):
            if channels.channels.pop(channel, None) is None:
                return []
            channels.server_results.pop(channel, None)
            return [Leave(channel), Send(cp.push(channel, "unsubscribe", SERVER_UNSUBSCRIBE))]
        case DisconnectUser(code=code, reason=reason):
            if code == CloseCode.DISCONNECTED:  # no code of the caller's: Centrifugo's default
                code = FORCE_DISCONNECT
            return state.close_with(code, reason or "force disconnect")
        case RefreshUser(expired=True):
            return state.close_with(Disconnect.EXPIRED, "connection expired")
        case RefreshUser(expire_at=expire_at):
            state.expires_at = expire_at or None
            return []
        case MessageUser(data=data):
            return [Send(orjson.dumps({"push": {"message": {"data": data}}}))]
    return []
