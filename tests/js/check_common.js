// What every check_*.js shares: the JSON argument the Python test passes, waiting for an SDK
// event with a bound, and the one line of JSON the test reads back. A check that throws still
// prints what it found so far, so a failing test shows how far the SDK got.
'use strict';

const given = JSON.parse(process.argv[2]);

function once(emitter, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} in ${ms} ms`)), ms);
    emitter.once(event, (ctx) => { clearTimeout(timer); resolve(ctx); });
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Run the check and print its results as the last line (exit 0), or the error with the
// partial results (exit 1).
function report(main, results) {
  main().then(
    () => { console.log(JSON.stringify(results)); process.exit(0); },
    (e) => { console.log(JSON.stringify({ error: String(e && e.stack || e), partial: results })); process.exit(1); },
  );
}

// Recovery: what `publisher` publishes while `client` is away comes back to `sub` on reconnect.
// `received` is the subscription's log of publications (emptied first); `pick` turns an entry
// into the datum reported.
async function recoverAfterReconnect(client, sub, publisher, received, pick = (entry) => entry) {
  client.disconnect();
  await sleep(100);
  received.length = 0;
  for (let n = 0; n < 3; n++) await publisher.publish(n);
  const back = once(sub, 'subscribed');
  client.connect();
  const ctx = await back;
  for (let i = 0; i < 50 && received.length < 3; i++) await sleep(100);
  return { wasRecovering: ctx.wasRecovering, recovered: ctx.recovered, data: received.map(pick) };
}

module.exports = { given, once, sleep, report, recoverAfterReconnect };
