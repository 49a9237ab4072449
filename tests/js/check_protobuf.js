// Centrifugo's JavaScript SDK with the Protobuf encoding (npm "centrifuge"'s protobuf build, on
// Node with "ws") against two sanic-feeds instances: ann speaks Protobuf on instance one, bob
// JSON on instance two, carol Protobuf over HTTP streaming from instance one with her commands
// posted to instance two's /emulation (forwarded through the broker), in one channel. Driven by tests/test_centrifugo_protobuf.py, which
// checks the JSON this prints.
'use strict';
const { Centrifuge } = require('centrifuge/build/protobuf');
const JsonCentrifuge = require('centrifuge').Centrifuge;
const WebSocket = require('ws');
const { given, once, sleep, report, recoverAfterReconnect } = require('./check_common');

const results = {};
const encode = (value) => new TextEncoder().encode(JSON.stringify(value));
const decode = (bytes) => JSON.parse(new TextDecoder().decode(bytes));
// protobufjs gives uint64 fields (offsets) as Long objects.
const number = (value) => (value && typeof value === 'object' ? value.toNumber() : value);

async function main() {
  const options = { websocket: WebSocket, timeout: 5000, minReconnectDelay: 100 };
  const ann = new Centrifuge(given.one, { ...options, token: given.ann });
  const bob = new JsonCentrifuge(given.two, { ...options, token: given.bob });
  const carol = new Centrifuge([{ transport: 'http_stream', endpoint: given.one_stream }], {
    ...options, token: given.carol, emulationEndpoint: given.two_emulation,
  });
  const connected = [once(ann, 'connected'), once(bob, 'connected'), once(carol, 'connected')];
  ann.connect();
  bob.connect();
  carol.connect();
  results.client = (await connected[0]).client.length > 0;
  await connected[1];
  results.carol_transport = (await connected[2]).transport;
  const carolSub = carol.newSubscription('pb-room');
  const carolReceived = [];
  carolSub.on('publication', (ctx) => carolReceived.push(decode(ctx.data)));
  carolSub.subscribe();
  await once(carolSub, 'subscribed');

  const sub = ann.newSubscription('pb-room', { recoverable: true, joinLeave: true });
  const received = [];
  sub.on('publication', (ctx) => received.push({ data: decode(ctx.data), user: ctx.info && ctx.info.user, offset: number(ctx.offset) }));
  // Carol's own join notice may still be on its way when ann subscribes: wait for bob's.
  const joined = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no join of bob in 5000 ms')), 5000);
    sub.on('join', (ctx) => {
      if (ctx.info.user === 'bob') { clearTimeout(timer); resolve(ctx); }
    });
  });
  sub.subscribe();
  await once(sub, 'subscribed');
  const bobSub = bob.newSubscription('pb-room');
  const bobReceived = [];
  bobSub.on('publication', (ctx) => bobReceived.push(ctx.data));
  bobSub.subscribe();
  await once(bobSub, 'subscribed');
  results.join_user = (await joined).info.user;
  await bobSub.publish({ text: 'hi' });
  await sub.publish(encode({ text: 'yo' }));
  await carolSub.publish(encode({ text: 'hey' }));
  for (let i = 0; i < 50 && (received.length < 3 || bobReceived.length < 3 || carolReceived.length < 3); i++) await sleep(100);
  results.ann_received = received.slice();
  results.bob_received = bobReceived.slice();
  results.carol_received = carolReceived.slice();
  results.presence_users = Object.values((await sub.presence()).clients).map((c) => c.user).sort();
  results.history = (await sub.history({ limit: 10 })).publications.map((p) => decode(p.data));
  results.rpc = decode((await ann.rpc('whoami', encode({ x: 1 }))).data);

  // Recovery: what bob publishes while ann is away comes back on reconnect.
  results.recovery = await recoverAfterReconnect(ann, sub, bobSub, received, (r) => r.data);

  // A refused token: disconnected with 3500, and no reconnecting.
  const refused = new Centrifuge(given.one, { ...options, token: given.bad });
  refused.connect();
  results.refused = (await once(refused, 'disconnected')).code;

  for (const c of [ann, bob, carol, refused]) c.disconnect();
}

report(main, results);
