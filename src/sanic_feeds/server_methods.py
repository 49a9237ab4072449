"""The server API's methods: what each does with the node, and the result it answers.

Each method takes the request's :class:`~.server_requests.Fields` and returns its ``result``
object, or raises :class:`~.server_requests.ApiError`. Methods that act on a user's connections
(``subscribe``, ``unsubscribe``, ``disconnect``, ``refresh``) publish a control command that
every node applies to its own sessions (``control.py``); they answer once the broker took the
command, not once the connections changed. The server API is no client: namespace permissions
do not apply to it, only the channel name rules and the namespaces themselves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from fnmatch import fnmatchcase

import orjson

from . import __version__
from .centrifugo_protocol import client_info
from .control import ControlCommand, DisconnectUser, RefreshUser, SubscribeUser, UnsubscribeUser
from .errors import BrokerUnavailable
from .namespaces import ChannelOptions
from .node import Node
from .presence import Member
from .protocol import CloseCode
from .server_history import publication, window
from .server_requests import (
    ApiCode,
    ApiError,
    Fields,
    channel_options,
    disconnect_of,
    idempotency_key,
)

log = logging.getLogger(__name__)

Result = dict[str, object]
Method = Callable[[Fields], Awaitable[Result]]

MAX_BROADCAST_CHANNELS = 1000
MAX_BATCH_COMMANDS = 1000


class ServerMethods:
    """Every server API method, bound to the running node (``node()`` gives it)."""

    def __init__(self, node: Callable[[], Node], max_publish_size: int) -> None:
        self._node = node
        self._max_publish_size = max_publish_size
        self.methods: dict[str, Method] = {
            "publish": self.publish,
            "broadcast": self.broadcast,
            "subscribe": self.subscribe,
            "unsubscribe": self.unsubscribe,
            "disconnect": self.disconnect,
            "refresh": self.refresh,
            "presence": self.presence,
            "presence_stats": self.presence_stats,
            "history": self.history,
            "history_remove": self.history_remove,
            "channels": self.channels,
            "info": self.info,
        }
        """Name -> method; ``batch`` calls them (it is not one of them: no batch in a batch)."""

    async def call(self, name: str, body: object) -> Result:
        """Run method ``name`` on a request body: its result, or ApiError."""
        method = self.methods.get(name)
        if method is None:
            raise ApiError(ApiCode.METHOD_NOT_FOUND)
        try:
            return await method(Fields(body))
        except ApiError:
            raise
        except BrokerUnavailable as exc:
            raise ApiError(ApiCode.INTERNAL, f"broker unavailable: {exc}") from exc
        except Exception as exc:  # a bug must answer 100, not kill the request or the server
            log.exception("server API method %s failed", name)
            raise ApiError(ApiCode.INTERNAL) from exc

    async def batch(self, body: object) -> list[Result]:
        """``{"commands": [{"<method>": {...}}, ...], "parallel": bool}`` -> one reply each,
        ``{"<method>": result}`` or ``{"error": ...}``, in order."""
        fields = Fields(body)
        commands = fields.raw("commands", [])
        if not isinstance(commands, list):
            raise ApiError(ApiCode.BAD_REQUEST, "field commands must be a list")
        if len(commands) > MAX_BATCH_COMMANDS:
            raise ApiError(ApiCode.LIMIT_EXCEEDED, f"at most {MAX_BATCH_COMMANDS} commands")
        if fields.flag("parallel"):
            return list(await asyncio.gather(*(self._command(c) for c in commands)))
        return [await self._command(command) for command in commands]

    async def _command(self, command: object) -> Result:
        if not isinstance(command, dict) or len(command) != 1:
            error = ApiError(ApiCode.BAD_REQUEST, "a command is {<method>: {...}}")
            return {"error": error.to_json()}
        ((name, body),) = command.items()
        try:
            return {name: await self.call(name, body)}
        except ApiError as exc:
            return {"error": exc.to_json()}

    # -- publishing ------------------------------------------------------------------------------

    def _options(self, channel: str) -> ChannelOptions:
        return channel_options(self._node().namespaces, channel)

    def _data(self, fields: Fields) -> object:
        if fields.has("b64data"):
            raise ApiError(ApiCode.BAD_REQUEST, "b64data: binary data is not supported")
        data = fields.raw("data")
        if len(orjson.dumps(data)) > self._max_publish_size:
            raise ApiError(ApiCode.LIMIT_EXCEEDED, f"data over {self._max_publish_size} bytes")
        return data

    async def publish(self, fields: Fields) -> Result:
        channel = fields.channel()
        self._options(channel)
        return await self._publish(channel, self._data(fields), fields)

    async def _publish(self, channel: str, data: object, fields: Fields) -> Result:
        key, skip = idempotency_key(fields), fields.flag("skip_history")
        stored = await self._node().publish(channel, data, key, skip)
        return {} if stored is None else {"offset": stored.offset, "epoch": stored.epoch}

    async def broadcast(self, fields: Fields) -> Result:
        """The same data to many channels, each published on its own: one response each."""
        channels = fields.texts("channels", most=MAX_BROADCAST_CHANNELS)
        if not channels:
            raise ApiError(ApiCode.BAD_REQUEST, "field channels must name at least one channel")
        data = self._data(fields)

        async def one(channel: str) -> Result:
            try:
                self._options(Fields({"channel": channel}).channel())
                return {"result": await self._publish(channel, data, fields)}
            except ApiError as exc:
                return {"error": exc.to_json()}
            except BrokerUnavailable as exc:
                return {"error": ApiError(ApiCode.INTERNAL, f"broker unavailable: {exc}").to_json()}

        return {"responses": list(await asyncio.gather(*(one(c) for c in channels)))}

    # -- a user's connections, on every node -----------------------------------------------------

    async def _send(self, command: ControlCommand) -> Result:
        await self._node().control.send(command)
        return {}

    async def subscribe(self, fields: Fields) -> Result:
        user, channel = fields.user(), fields.channel()
        self._options(channel)
        since = fields.obj("recover_since")
        position = (None, None) if since is None else (since.integer("offset"), since.text("epoch"))
        client = fields.text("client", "")
        since_, epoch = position
        command = SubscribeUser(
            user, channel, client, since_, epoch, fields.raw("info", None), fields.raw("data", None)
        )
        return await self._send(command)

    async def unsubscribe(self, fields: Fields) -> Result:
        user, channel = fields.user(), fields.channel()
        self._options(channel)
        return await self._send(UnsubscribeUser(user, channel, fields.text("client", "")))

    async def disconnect(self, fields: Fields) -> Result:
        user, client = fields.user(), fields.text("client", "")
        code, reason = disconnect_of(fields, CloseCode.DISCONNECTED)
        keep = tuple(fields.texts("whitelist", most=1000))
        return await self._send(DisconnectUser(user, code, reason, client, keep))

    async def refresh(self, fields: Fields) -> Result:
        user, client = fields.user(), fields.text("client", "")
        expire_at = fields.integer("expire_at", 0)
        if expire_at < 0:
            raise ApiError(ApiCode.BAD_REQUEST, "field expire_at must be Unix seconds")
        expired = fields.flag("expired")
        return await self._send(RefreshUser(user, client, expired, expire_at or None))

    # -- presence and history --------------------------------------------------------------------

    async def presence(self, fields: Fields) -> Result:
        members = await self._members(fields)
        return {"presence": {m.client: client_info(m.public()) for m in members}}

    async def presence_stats(self, fields: Fields) -> Result:
        members = await self._members(fields)
        return {"num_clients": len(members), "num_users": len({m.user for m in members})}

    async def _members(self, fields: Fields) -> list[Member]:
        channel = fields.channel()
        if not self._options(channel).presence:
            raise ApiError(ApiCode.NOT_AVAILABLE, "presence is off for this channel")
        return await self._node().channel_members(channel)

    def _history_channel(self, fields: Fields) -> tuple[str, int]:
        channel = fields.channel()
        options = self._options(channel)
        if not options.keeps_history:
            raise ApiError(ApiCode.NOT_AVAILABLE, "history is off for this channel")
        return channel, options.history.size

    async def history(self, fields: Fields) -> Result:
        """Centrifugo's history iteration: ``limit`` (0: the position only, -1: all),
        ``since`` {offset, epoch}, ``reverse``."""
        channel, size = self._history_channel(fields)
        limit = fields.integer("limit", 0)
        if limit < -1:
            raise ApiError(ApiCode.BAD_REQUEST, "field limit must be -1 (all), 0 or more")
        given = fields.obj("since")
        since = None if given is None else (given.integer("offset"), given.text("epoch", ""))
        page = await self._node().broker.history(channel, None, None, size if limit else 1)
        chosen = window(page, since, limit, fields.flag("reverse")) if limit else []
        publications = [publication(offset, body) for offset, body in chosen]
        return {"publications": publications, "offset": page.top, "epoch": page.epoch}

    async def history_remove(self, fields: Fields) -> Result:
        channel, _ = self._history_channel(fields)
        await self._node().broker.remove_history(channel)
        return {}

    # -- the cluster -----------------------------------------------------------------------------

    async def channels(self, fields: Fields) -> Result:
        """Channels with members on any node (``pattern``: a glob, as ``--join-leave-except``)."""
        pattern = fields.text("pattern", "")
        totals = await self._node().cluster_rooms()
        return {
            "channels": {
                channel: {"num_clients": count}
                for channel, count in sorted(totals.rooms.items())
                if not pattern or fnmatchcase(channel, pattern)
            }
        }

    async def info(self, fields: Fields) -> Result:
        """Every live node: this one as it is now, the others as they last reported."""
        node = self._node()
        rooms = node.hub.rooms()
        nodes = [
            {
                "uid": node.id,
                "name": node.id,
                "version": __version__,
                "num_clients": len(node.sessions),
                "num_users": node.control.users,
                "num_channels": len(rooms),
                "num_subs": sum(rooms.values()),
                "uptime": int(time.time() - node.started_at),
            }
        ]
        for node_id, report in sorted((await node.presence.node_reports()).items()):
            if node_id == node.id:
                continue
            channels = report.channels
            started = report.fact("started")
            nodes.append(
                {
                    "uid": node_id,
                    "name": node_id,
                    "version": report.version,
                    "num_clients": report.clients,
                    "num_users": report.fact("users"),
                    "num_channels": len(channels),
                    "num_subs": sum(channels.values()),
                    "uptime": max(int(time.time()) - started, 0) if started else 0,
                }
            )
        return {"nodes": nodes}
