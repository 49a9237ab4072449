"""Baseline: the seeds' pattern on Sanic. An in-memory room per channel, and for every message
received, ``for ws in room: await ws.send(msg)``: serial, awaited sends."""

from __future__ import annotations

import sys

from sanic import Request, Sanic
from sanic.server.websockets.impl import WebsocketImplProtocol

app = Sanic("naive_room")
app.config.MOTD = False
rooms: dict[str, set[WebsocketImplProtocol]] = {}


@app.websocket("/feed/<channel>")
async def feed(request: Request, ws: WebsocketImplProtocol, channel: str) -> None:
    room = rooms.setdefault(channel, set())
    room.add(ws)
    try:
        async for message in ws:
            for member in list(room):
                try:
                    await member.send(message)
                except Exception:  # the seeds' error handling: drop the member
                    room.discard(member)
    finally:
        room.discard(ws)


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]), single_process=True, access_log=False)
