"""A Centrifugo connection's channel commands: subscribe, publish, presence, history.

Part of the protocol's pure state machine (``centrifugo_state.py`` holds the connection side):
requests in, actions out, and the replies built from what the node answered. Who may do what
is decided by ``permissions.py``, the same checks as every other transport, and its refusals
become Centrifugo's error codes (``centrifugo_protocol.REFUSALS``).

What it must never do: await, touch a socket, read a clock, or know about the node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import orjson

from . import centrifugo_protocol as cp
from .auth import AuthError, Identity, TokenExpired
from .centrifugo_actions import (
    Action,
    Close,
    JoinChannel,
    Leave,
    PublishTo,
    ReadHistory,
    ReadPresence,
    Send,
    Tally,
)
from .centrifugo_auth import SubscriptionGrant
from .centrifugo_protocol import Disconnect, ErrorReply
from .channels import namespace_of
from .history import HistoryPage, JoinPosition
from .permissions import Permissions, Refusal, options_of
from .ratelimit import NamespaceBuckets
from .session_state import JoinOutcome


class SubscriptionTokens(Protocol):
    def subscription(self, token: str, channel: str, subject: str) -> SubscriptionGrant: ...


@dataclass(slots=True)
class Subscription:
    """One channel this connection follows."""

    recoverable: bool = False
    positioned: bool = False
    server_side: bool = False
    expires_at: float | None = None
    """When its subscription token runs out (refreshed with ``sub_refresh``)."""
    info: object = None
    """Channel info (a subscription token's ``info`` claim, a subscribe hook's ``info``): the
    ``chan_info`` of this client in presence, join/leave pushes and its publications here."""


def _ttl(expires_at: float | None, now: float) -> dict[str, object]:
    if expires_at is None:
        return {}
    return {"expires": True, "ttl": max(int(expires_at - now), 1)}


def refused(ident: int, refusal: Refusal) -> Send:
    return Send(cp.error(ident, cp.REFUSALS.get(refusal.code, ErrorReply.BAD_REQUEST)))


def bad_request(ident: int) -> Send:
    return Send(cp.error(ident, ErrorReply.BAD_REQUEST))


@dataclass(slots=True)
class ChannelCommands:
    """The subscriptions of one connection and the commands about channels."""

    client: str
    permissions: Permissions
    tokens: SubscriptionTokens | None
    max_channels: int
    identity: Identity = field(default_factory=lambda: Identity(user=""))
    info: object = None
    """The connection's info (``info`` claim), sent with its publications."""
    channels: dict[str, Subscription] = field(default_factory=dict)
    server_results: dict[str, dict[str, object]] = field(default_factory=dict)
    """Server-side subscriptions joined at connect: their entries of the connect reply."""
    rates: NamespaceBuckets = field(default_factory=NamespaceBuckets)
    """This connection's buckets for the namespaces' ``rate_limit``."""
    announce_server_side: bool = False
    """The connect reply is sent: a server-side subscription now comes with a push."""

    # -- subscribe --------------------------------------------------------------------------

    def subscribe(self, ident: int, params: dict[str, object], now: float) -> list[Action]:
        channel, token = params.get("channel"), params.get("token", "")
        recover, offset, epoch = params.get("recover"), params.get("offset", 0), params.get("epoch")
        if not isinstance(channel, str) or not isinstance(token, str):
            return [bad_request(ident)]
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            return [bad_request(ident)]
        if epoch is not None and not isinstance(epoch, str):
            return [bad_request(ident)]
        if channel in self.channels and not recover:
            return [Send(cp.error(ident, ErrorReply.ALREADY_SUBSCRIBED))]
        grant = SubscriptionGrant()
        if token:
            options = options_of(self.permissions.namespaces, channel)
            if isinstance(options, Refusal):
                return [refused(ident, options)]
            try:
                grant = self._grant(token, channel)
            except TokenExpired:
                return [Send(cp.error(ident, ErrorReply.TOKEN_EXPIRED))]
            except AuthError:
                return [Close(Disconnect.INVALID_TOKEN, "invalid token")]
        else:
            allowed = self.permissions.subscribe(self.identity, channel)
            if isinstance(allowed, Refusal):
                return [refused(ident, allowed)]
            options = allowed.options
        if channel not in self.channels and len(self.channels) >= self.max_channels:
            return [Send(cp.error(ident, ErrorReply.LIMIT_EXCEEDED))]
        history = options.keeps_history
        recoverable = history and bool(
            params.get("recoverable") or recover or options.force_recovery
        )
        positioned = history and (recoverable or bool(params.get("positioned")))
        join_leave = options.join_leave and bool(
            params.get("join_leave") or options.force_push_join_leave
        )
        self.channels[channel] = Subscription(
            recoverable, positioned, False, grant.expires_at, grant.info
        )
        since = offset if recover and recoverable else None
        return [
            JoinChannel(ident, channel, since, epoch or None, join_leave, data=params.get("data"))
        ]

    def _grant(self, token: str, channel: str) -> SubscriptionGrant:
        if self.tokens is None:
            raise AuthError("subscription tokens are not accepted here")
        return self.tokens.subscription(token, channel, self.identity.subject)

    def add_server_side(
        self, channel: str, info: object = None, data: object = None
    ) -> JoinChannel:
        """``info``: the channel info its ``subs`` entry (or the server API) gives, if any;
        ``data``: what the ``subscribe`` push of a join after connect carries."""
        options = self.permissions.namespaces.options(channel)
        history = options.keeps_history
        self.channels[channel] = Subscription(history, history, True, info=info)
        return JoinChannel(0, channel, None, None, options.join_leave, server_side=True, data=data)

    def subscribed(self, action: JoinChannel, position: JoinPosition, now: float) -> bytes | None:
        """The reply to a subscribe whose join holds (None for a server-side one: its entry
        goes into the connect reply)."""
        sub = self.channels.get(action.channel)
        result: dict[str, object] = {}
        if sub is not None:
            result.update(_ttl(sub.expires_at, now))
            if sub.recoverable:
                result["recoverable"] = True
            if (sub.positioned or sub.recoverable) and position.history:
                result.update(positioned=True, epoch=position.epoch, offset=position.offset)
        if action.since is not None:
            result["was_recovering"] = True
            result["recovered"] = position.recovered
            if position.replayed:
                result["publications"] = cp.publications(position.replayed)
        if action.server_side:
            if self.announce_server_side:  # joined after the connect reply: say so in a push
                if action.data is not None:
                    result["data"] = action.data
                return cp.push(action.channel, "subscribe", result)
            self.server_results[action.channel] = result
            return None
        return cp.reply(action.id, "subscribe", result)

    def join_failed(self, action: JoinChannel, outcome: JoinOutcome) -> list[Action]:
        self.channels.pop(action.channel, None)
        if action.server_side:
            return [Close(Disconnect.SERVER_ERROR, f"could not subscribe {action.channel}")]
        if outcome is JoinOutcome.CHANNEL_FULL:
            return [Send(cp.error(action.id, ErrorReply.LIMIT_EXCEEDED, "channel full"))]
        return [Send(cp.error(action.id, ErrorReply.INTERNAL))]

    def unsubscribe(self, ident: int, params: dict[str, object]) -> list[Action]:
        channel = params.get("channel")
        if not isinstance(channel, str):
            return [bad_request(ident)]
        reply = Send(cp.reply(ident, "unsubscribe", {}))
        if self.channels.pop(channel, None) is None:
            return [reply]
        return [Leave(channel), reply]

    def sub_refresh(self, ident: int, params: dict[str, object], now: float) -> list[Action]:
        channel, token = params.get("channel"), params.get("token")
        if not isinstance(channel, str) or not isinstance(token, str):
            return [bad_request(ident)]
        sub = self.channels.get(channel)
        if sub is None:
            return [Send(cp.error(ident, ErrorReply.PERMISSION_DENIED))]
        try:
            grant = self._grant(token, channel)
        except TokenExpired:
            return [Send(cp.error(ident, ErrorReply.TOKEN_EXPIRED))]
        except AuthError:
            return [Close(Disconnect.INVALID_TOKEN, "invalid token")]
        sub.expires_at = grant.expires_at
        return [Send(cp.reply(ident, "sub_refresh", _ttl(grant.expires_at, now)))]

    def expired(self, now: float, delay: float) -> bool:
        """A subscription token ran out ``delay`` ago without a ``sub_refresh``."""
        return any(s.expires_at is not None and now >= s.expires_at + delay for s in self.values())

    def values(self) -> list[Subscription]:
        return list(self.channels.values())

    def chan_info(self, channel: str) -> object:
        """The channel info of this connection's subscription of ``channel`` (None: none)."""
        sub = self.channels.get(channel)
        return None if sub is None else sub.info

    # -- publish, presence, history ---------------------------------------------------------

    def publish(self, ident: int, params: dict[str, object], now: float) -> list[Action]:
        channel = params.get("channel")
        if not isinstance(channel, str) or "data" not in params:
            return [bad_request(ident)]
        allowed = self.permissions.publish(
            self.identity, channel, subscribed=channel in self.channels
        )
        if isinstance(allowed, Refusal):
            return [refused(ident, allowed)]
        chan_info = self.chan_info(channel)
        body = chat_body(
            channel, self.client, self.identity.user, params["data"], self.info, chan_info
        )
        most = allowed.options.max_message_size
        if most and len(body) > most:
            return [Send(cp.error(ident, ErrorReply.LIMIT_EXCEEDED, "message too large"))]
        rate = allowed.options.rate_limit
        if rate is not None and self.rates.take(namespace_of(channel), rate, now) > 0:
            return [Tally("rate_limited"), Send(cp.error(ident, ErrorReply.TOO_MANY_REQUESTS))]
        user_key = self.identity.subject or self.client
        return [PublishTo(ident, channel, body, user_key)]

    def presence(self, ident: int, params: dict[str, object], stats: bool) -> list[Action]:
        channel = params.get("channel")
        if not isinstance(channel, str):
            return [bad_request(ident)]
        allowed = self.permissions.presence(
            self.identity, channel, subscribed=channel in self.channels
        )
        if isinstance(allowed, Refusal):
            return [refused(ident, allowed)]
        return [ReadPresence(ident, channel, stats)]

    def history(self, ident: int, params: dict[str, object]) -> list[Action]:
        channel, limit = params.get("channel"), params.get("limit", 0)
        since, reverse = params.get("since"), bool(params.get("reverse"))
        if not isinstance(channel, str) or not isinstance(limit, int) or isinstance(limit, bool):
            return [bad_request(ident)]
        allowed = self.permissions.history(
            self.identity, channel, subscribed=channel in self.channels
        )
        if isinstance(allowed, Refusal):
            return [refused(ident, allowed)]
        size = allowed.options.history.size
        if since is None:
            return [ReadHistory(ident, channel, None, None, size, reverse, limit)]
        if not isinstance(since, dict):
            return [bad_request(ident)]
        offset, epoch = since.get("offset", 0), since.get("epoch", "")
        if not isinstance(offset, int) or offset < 0 or not isinstance(epoch, str):
            return [bad_request(ident)]
        if reverse:  # what came before ``since``, newest first: read all, cut below
            return [ReadHistory(ident, channel, None, epoch or None, size, True, limit, offset)]
        return [ReadHistory(ident, channel, offset, epoch or None, size, False, limit)]


def chat_body(
    channel: str, client: str, user: str, data: object, info: object, chan_info: object = None
) -> bytes:
    """A Centrifugo publish as the feed ``chat`` every member receives (``message`` is the
    publication's data; ``info``, when the connection has one, its connection info;
    ``chan_info``, when its subscription of the channel has one, that channel info)."""
    message: dict[str, object] = {
        "type": "chat",
        "channel": channel,
        "client": client,
        "user": user,
        "message": data,
    }
    if info is not None:
        message["info"] = info
    if chan_info is not None:
        message["chan_info"] = chan_info
    return orjson.dumps(message)


def history_reply(action: ReadHistory, page: HistoryPage) -> bytes:
    """The ``history`` reply, or error 112 when ``since`` can no longer be served."""
    if action.epoch and page.epoch and action.epoch != page.epoch:
        return cp.error(action.id, ErrorReply.UNRECOVERABLE_POSITION)
    if action.since is not None and not page.complete:
        return cp.error(action.id, ErrorReply.UNRECOVERABLE_POSITION)
    pubs = cp.publications(page.messages)
    if action.reverse:
        pubs.reverse()
        before = action.before
        if before is not None:
            pubs = [p for p, o in zip(pubs, reversed(page.offsets), strict=False) if o < before]
    limit = action.request_limit
    if limit >= 0:
        pubs = pubs[:limit]
    result: dict[str, object] = {"epoch": page.epoch, "offset": page.top}
    if pubs:
        result["publications"] = pubs
    return cp.reply(action.id, "history", result)


def presence_reply(action: ReadPresence, members: list[dict[str, object]]) -> bytes:
    if action.stats:
        users = {str(m.get("user", "")) for m in members}
        stats = {"num_clients": len(members), "num_users": len(users)}
        return cp.reply(action.id, "presence_stats", dict(stats))
    clients = {str(m["client"]): cp.client_info(m) for m in members}
    return cp.reply(action.id, "presence", {"presence": clients})
