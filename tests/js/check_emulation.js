// Centrifugo's JavaScript SDK over an emulation transport (http_stream or sse, the first
// argument's "transport") against two sanic-feeds instances: ann streams from instance one but
// posts her commands to instance two's /emulation (so they cross the broker), bob streams from
// and posts to instance two. Driven by tests/test_centrifugo_emulation.py, which checks the JSON
// this prints. Node 20 has fetch and ReadableStream; EventSource needs --experimental-eventsource.
'use strict';
const { Centrifuge } = require('centrifuge');
const { given, once, sleep, report, recoverAfterReconnect } = require('./check_common');

const results = {};

function client(stream, emulation, token) {
  return new Centrifuge([{ transport: given.transport, endpoint: stream }], {
    token, emulationEndpoint: emulation, timeout: 5000, minReconnectDelay: 100,
  });
}

async function main() {
  const ann = client(given.one_stream, given.two_emulation, given.ann);
  const bob = client(given.two_stream, given.two_emulation, given.bob);
  const connected = [once(ann, 'connected'), once(bob, 'connected')];
  ann.connect();
  bob.connect();
  results.transport = (await connected[0]).transport;
  await connected[1];

  const sub = ann.newSubscription('emu-room', { recoverable: true, joinLeave: true });
  const received = [];
  sub.on('publication', (ctx) => received.push(ctx.data));
  const joined = once(sub, 'join');
  sub.subscribe();
  await once(sub, 'subscribed');
  const bobSub = bob.newSubscription('emu-room');
  const bobReceived = [];
  bobSub.on('publication', (ctx) => bobReceived.push(ctx.data));
  bobSub.subscribe();
  await once(bobSub, 'subscribed');
  results.join_user = (await joined).info.user;
  await bobSub.publish({ text: 'hi' });
  await sub.publish({ text: 'yo' });
  for (let i = 0; i < 50 && (received.length < 2 || bobReceived.length < 2); i++) await sleep(100);
  results.ann_received = received.slice();
  results.bob_received = bobReceived.slice();
  results.presence_users = Object.values((await sub.presence()).clients).map((c) => c.user).sort();

  // Recovery: what bob publishes while ann is away comes back on reconnect.
  results.recovery = await recoverAfterReconnect(ann, sub, bobSub, received);

  // A refused token: the disconnect push's code, and no reconnecting.
  const refused = client(given.one_stream, given.one_emulation, given.bad);
  let connecting = 0;
  refused.on('connecting', () => { connecting += 1; });
  refused.connect();
  results.refused = (await once(refused, 'disconnected')).code;
  await sleep(500);
  results.refused_attempts = connecting;

  for (const c of [ann, bob, refused]) c.disconnect();
}

report(main, results);
