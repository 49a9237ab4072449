"""Control commands on this node: its sessions by user, and each command applied to them.

The server API's user actions (subscribe, unsubscribe, disconnect, refresh) must reach the
user's connections on every node. The node that takes the request publishes the command on the
broker's control channel (``control.py`` is the format); every node, the sender included,
hears it through the hub's tap for that channel and hands it to the matching sessions here.
Each session feeds it to its own state machine, so every protocol and transport gets the same
behaviour.

What it must never do: await in :meth:`ControlDispatch.receive` (it runs inside the broker's
delivery callback), or apply a command to a session of another user.
"""

from __future__ import annotations

import logging

from .brokers import Broker
from .control import CONTROL_CHANNEL, ControlCommand, DisconnectUser, UnknownCommand, decode, encode
from .host import Attached
from .log_every import LogEvery

log = logging.getLogger(__name__)

BAD_COMMAND_LOG_EVERY = 10.0
"""Seconds between two log lines about control payloads this node cannot read."""


class ControlDispatch:
    """This node's sessions indexed by user, and the control channel's sender and receiver."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._by_user: dict[str, dict[str, Attached]] = {}
        self.applied = 0
        """Commands applied to a session of this node (one per session)."""
        self._complaints = LogEvery(BAD_COMMAND_LOG_EVERY)

    async def open(self) -> None:
        """Subscribe to the control channel (the hub's tap hears it; see ``Hub.taps``)."""
        await self._broker.subscribe(CONTROL_CHANNEL)

    async def send(self, command: ControlCommand) -> None:
        """Publish ``command`` to every node; ``BrokerUnavailable`` when the broker refuses."""
        await self._broker.publish(CONTROL_CHANNEL, encode(command))

    # -- sessions --------------------------------------------------------------------------------

    def attach(self, session: Attached) -> None:
        self._by_user.setdefault(session.user_key, {})[session.id] = session

    def rekey(self, session: Attached, previous: str) -> None:
        """``session`` was indexed under ``previous`` (its user was not known yet)."""
        sessions = self._by_user.get(previous)
        if sessions is not None and sessions.pop(session.id, None) is not None and not sessions:
            del self._by_user[previous]
        self.attach(session)

    def detach(self, session: Attached) -> None:
        sessions = self._by_user.get(session.user_key)
        if sessions is not None and sessions.pop(session.id, None) is not None and not sessions:
            del self._by_user[session.user_key]

    @property
    def users(self) -> int:
        """Distinct users with a connection on this node."""
        return len(self._by_user)

    # -- commands from the broker ----------------------------------------------------------------

    def receive(self, payload: bytes) -> None:
        """One control payload, from the broker's delivery callback: apply it, never await."""
        try:
            command = decode(payload)
        except UnknownCommand as exc:
            if self._complaints.due():
                log.warning("ignored a control command this node cannot read: %s", exc)
            return
        sessions = self._by_user.get(command.user)
        if not sessions:
            return
        keep = command.keep if isinstance(command, DisconnectUser) else ()
        for session in list(sessions.values()):  # a command may end a session (it leaves here)
            if (command.client and session.id != command.client) or session.id in keep:
                continue
            self.applied += 1
            session.control(command)
