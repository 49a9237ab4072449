"""Carrying out what a session's state machine decided, against the node and the client.

The state machine (``session_state.py``) returns actions; an :class:`ActionRunner` performs
them in order, awaiting the node where an action needs it (a join, a publish, a presence
read), and hands the node's answers back to the machine, whose reply actions it performs in
turn. It never decides anything itself.
"""

from __future__ import annotations

import logging
from typing import Protocol

from .errors import BrokerUnavailable
from .host import Host, Participant
from .protocol import CloseCode
from .session_state import (
    Action,
    Close,
    Join,
    JoinOutcome,
    Leave,
    Publish,
    ReadPresence,
    Resync,
    Send,
    SessionState,
    Tally,
)

log = logging.getLogger(__name__)


class Closable(Participant, Protocol):
    def close(self, code: int, reason: str) -> None: ...


class ActionRunner:
    """One per session: its host, its state machine, and the session itself."""

    __slots__ = ("_host", "_session", "_state")

    def __init__(self, host: Host, state: SessionState, session: Closable) -> None:
        self._host = host
        self._state = state
        self._session = session

    async def run(self, actions: list[Action]) -> None:
        session, host, state = self._session, self._host, self._state
        for action in actions:
            match action:
                case Send(body=body):
                    session.send(body)
                case Publish(channel=channel, body=body, user_key=user_key):
                    await self._publish(channel, body, user_key)
                case Join(channel=channel, since=since, epoch=epoch, greeting=greeting):
                    outcome = await host.join(session, channel, since, epoch, greeting)
                    if outcome is not JoinOutcome.JOINED:
                        await self.run(state.join_failed(channel, greeting is not None, outcome))
                case Resync(channel=channel, since=since, epoch=epoch):
                    await host.resync(session, channel, since, epoch)
                case Leave(channel=channel):
                    await host.leave(session, channel)
                case ReadPresence(channel=channel):
                    await self.run(state.presence_read(channel, await self._members(channel)))
                case Close(code=code, reason=reason):
                    if code == CloseCode.RATE_LIMITED:
                        log.info(
                            "client=%s closed after repeated rate-limit violations", session.id
                        )
                    session.close(code, reason)
                case Tally(counter=counter):
                    host.tally(counter)

    def tick(self, now: float) -> None:
        """Time passed (the credential's expiry timer): the only actions then are closes."""
        for action in self._state.tick(now):
            if isinstance(action, Close):
                log.info("client=%s: credential expired", self._session.id)
                self._session.close(action.code, action.reason)

    async def _members(self, channel: str) -> list[dict[str, object]] | None:
        try:
            return await self._host.read_presence(channel)
        except BrokerUnavailable:
            return None

    async def _publish(self, channel: str, body: bytes, user_key: str) -> None:
        wait = await self._host.user_wait(user_key)
        if wait > 0:
            await self.run(self._state.user_limited(channel, wait))
            return
        try:
            await self._host.publish_message(channel, body)
        except BrokerUnavailable:
            await self.run(self._state.publish_refused(channel))
