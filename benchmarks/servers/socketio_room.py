"""Baseline: python-socketio (on aiohttp), the usual Python choice for rooms. Each client
joins the room named in its ``join`` event; a ``chat`` event is emitted to the whole room.

Started with a ``redis://`` URL, instances share rooms through ``AsyncRedisManager``.

Clients speak Engine.IO 4 over a WebSocket (``/socket.io/?EIO=4&transport=websocket``), so the
load generator does the Socket.IO handshake itself (see ``loadgen.SocketIOSubscriber``).
"""

from __future__ import annotations

import sys

import socketio
from aiohttp import web

# argv: PORT [BROKER]; with a redis:// broker, instances share rooms through python-socketio's
# Redis manager (its way of scaling out).
BROKER = sys.argv[2] if len(sys.argv) > 2 else "memory://"
manager = socketio.AsyncRedisManager(BROKER) if BROKER.startswith("redis") else None
sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*", client_manager=manager)
app = web.Application()
sio.attach(app)


@sio.on("join")  # type: ignore[misc]
async def join(sid: str, room: str) -> None:
    await sio.enter_room(sid, room)
    await sio.emit("system", "joined", to=sid)


@sio.on("chat")  # type: ignore[misc]
async def chat(sid: str, message: str) -> None:
    for room in sio.rooms(sid):
        if room != sid:
            await sio.emit("chat", message, room=room)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
