// Baseline: Node.js with the `ws` library, a room per path, broadcast by sending the same
// message to every open member (the usual `ws` broadcast pattern).
"use strict";
const { WebSocketServer, WebSocket } = require("ws");

const rooms = new Map();
const wss = new WebSocketServer({ host: "127.0.0.1", port: Number(process.argv[2]), perMessageDeflate: false });

wss.on("connection", (ws, request) => {
  const name = request.url;
  let room = rooms.get(name);
  if (!room) rooms.set(name, (room = new Set()));
  room.add(ws);
  ws.send('{"type":"system"}');
  ws.on("message", (data, isBinary) => {
    for (const member of room) {
      if (member.readyState === WebSocket.OPEN) member.send(data, { binary: isBinary });
    }
  });
  ws.on("close", () => {
    room.delete(ws);
    if (room.size === 0) rooms.delete(name);
  });
});

process.on("SIGINT", () => process.exit(0));
