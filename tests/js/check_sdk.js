// Centrifugo's JavaScript SDK (npm "centrifuge", on Node with the "ws" package) against two
// sanic-feeds instances. Driven by tests/test_centrifugo_js.py, which passes the addresses and
// tokens as one JSON argument and checks the JSON this prints.
'use strict';
const { Centrifuge } = require('centrifuge');
const WebSocket = require('ws');
const { given, once, sleep, report, recoverAfterReconnect } = require('./check_common');

const results = {};

function client(url, options) {
  return new Centrifuge(url, { websocket: WebSocket, timeout: 5000, ...options });
}

async function main() {
  const ann = client(given.one, { token: given.ann });
  const bob = client(given.two, { token: given.bob });
  ann.connect();
  bob.connect();
  results.connected = (await once(ann, 'connected')).client.length > 0;
  await once(bob, 'connected');

  // Publish across instances, join pushes, presence, history, RPC.
  const sub = ann.newSubscription('js-room', { joinLeave: true, recoverable: true });
  const received = [];
  sub.on('publication', (ctx) => received.push(ctx));
  const joined = once(sub, 'join');
  sub.subscribe();
  await once(sub, 'subscribed');
  const bobSub = bob.newSubscription('js-room');
  bobSub.subscribe();
  await once(bobSub, 'subscribed');
  results.join_user = (await joined).info.user;
  await bobSub.publish({ text: 'hi' });
  for (let i = 0; i < 50 && received.length === 0; i++) await sleep(100);
  results.publication = received.map((ctx) => ({ data: ctx.data, user: ctx.info && ctx.info.user, offset: ctx.offset }));
  let presence = {};
  for (let i = 0; i < 50; i++) {
    presence = (await sub.presence()).clients;
    if (Object.keys(presence).length === 2) break;
    await sleep(100);
  }
  results.presence_users = Object.values(presence).map((info) => info.user).sort();
  const stats = await sub.presenceStats();
  results.presence_stats = [stats.numClients, stats.numUsers];
  const history = await sub.history({ limit: 10 });
  results.history = history.publications.map((p) => p.data);
  results.rpc = (await ann.rpc('whoami', { x: 1 })).data;
  // An asynchronous message from the backend (Feeds.send_message, here from an RPC handler
  // on the other instance's side of the broker): the client's "message" event.
  const message = once(ann, 'message');
  await bob.rpc('message_ann', { hello: 'ann' });
  results.message = (await message).data;
  try {
    await ann.rpc('nope', {});
    results.rpc_missing = 'no error';
  } catch (e) {
    results.rpc_missing = e.code;
  }

  // Recovery: what bob publishes while ann is away comes back on reconnect.
  if (process.env.DEBUG_SDK) {
    sub.on('state', (c) => console.error('sub state', JSON.stringify(c)));
    sub.on('error', (c) => console.error('sub error', JSON.stringify(c)));
    sub.on('subscribing', (c) => console.error('subscribing', JSON.stringify(c)));
    ann.on('state', (c) => console.error('client state', JSON.stringify(c)));
    ann.on('disconnected', (c) => console.error('client gone', JSON.stringify(c)));
  }
  results.recovery = await recoverAfterReconnect(ann, sub, bobSub, received, (c) => c.data);

  // A refused token: disconnected with 3500, and no reconnecting.
  const refused = client(given.one, { token: given.bad });
  let connecting = 0;
  refused.on('connecting', () => { connecting += 1; });
  refused.connect();
  results.refused = (await once(refused, 'disconnected')).code;
  await sleep(1000);
  results.refused_state = refused.state;
  results.refused_attempts = connecting;

  // Token refresh: getToken is called before the connection's token runs out, and it goes on.
  let asked = 0;
  const refreshing = client(given.one, {
    token: given.short,
    getToken: async () => { asked += 1; return given.fresh; },
  });
  refreshing.connect();
  const first = (await once(refreshing, 'connected')).client;
  let dropped = false;
  refreshing.on('disconnected', () => { dropped = true; });
  refreshing.on('connecting', () => { dropped = true; });
  for (let i = 0; i < 50 && asked === 0; i++) await sleep(100);
  await sleep(500);
  results.refresh = { asked, same: refreshing.state === 'connected' && !dropped, client: first.length > 0 };

  for (const c of [ann, bob, refreshing]) c.disconnect();
}

report(main, results);
