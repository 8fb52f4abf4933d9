// Reconnect catch-up with event history (RELAY_EXTRAS.md §4), the recipe the README documents.
//
// The server puts each event's history id in the live envelope as an extra top-level "id".
// pusher-js drops unknown envelope fields, so the client reads the id from the raw WebSocket
// message (the transport's "message" event), applies each event at most once, and after every
// (re)subscription asks ITS backend for what it missed (`after=<last id>`); the backend signs the
// history request with the Node SDK (`pusher.get`). Live events that arrive while a catch-up is
// in flight are held back and applied after it, so the result is in order, with no gap and no
// duplicate.
//
// Phases (READY lines on stderr, commands on stdin):
//   READY {"phase":"subscribed"}   → the test publishes 3 events; the client receives them live,
//                                    then disconnects
//   READY {"phase":"disconnected"} → the test publishes 3 more, then writes "reconnect"
//   the client reconnects; on the catch-up after the resubscription the backend first publishes
//   one event itself (so that event reaches the client both live and in the history page)
//   READY {"phase":"caught_up"}    → the test publishes 2 more, the last named "done"
// Output: every event as the app saw it, how it came (live or history), and the fetches made.
// Usage: node catchup.mjs PORT CHANNEL

import http from 'node:http';
import readline from 'node:readline';
import {
  backend,
  cli,
  client,
  closeAll,
  connected,
  fail,
  run,
  signalReady,
  subscribe,
  within,
} from './lib.mjs';

const { port, args } = cli();
const name = args[0] || 'catchup';
const server = backend(port);

// -- the app's backend: one route that signs the history request with the Node SDK -----------

let publishDuringCatchUp = false;

const backendServer = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://backend');
  const channel = url.searchParams.get('channel');
  const after = url.searchParams.get('after');
  try {
    if (publishDuringCatchUp) {
      // Test hook: an event published after the resubscription and before the history read
      // reaches the client twice (live and in the page); the client must apply it once.
      publishDuringCatchUp = false;
      await server.trigger(channel, 'during-catchup', { n: 7 });
    }
    const response = await server.get({
      path: `/channels/${encodeURIComponent(channel)}/events`,
      params: { after, limit: 100 },
    });
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(await response.text());
  } catch (error) {
    res.writeHead(502, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ error: String(error && error.message ? error.message : error) }));
  }
});
await new Promise((resolve) => backendServer.listen(0, '127.0.0.1', resolve));
const backendUrl = `http://127.0.0.1:${backendServer.address().port}`;

// -- the client: the catch-up recipe -------------------------------------------------------

const pusher = client(port, server);
const lastId = {}; // channel → id of the last event applied
const held = {}; // channel → live events held back while a catch-up runs
const epochs = {}; // channel → history epoch seen (a change means the server restarted)
const delivered = []; // what the app applied, in order
const fetches = []; // every history page fetched
let duplicatesDropped = 0;
let gaps = 0;
let onApplied = () => {};

function decode(data) {
  if (typeof data !== 'string') return data;
  try {
    return JSON.parse(data);
  } catch {
    return data;
  }
}

function apply(channel, event, via) {
  if (event.id <= (lastId[channel] || 0)) {
    duplicatesDropped += 1; // already applied: the same event came live and in a page
    return;
  }
  lastId[channel] = event.id;
  delivered.push({ id: event.id, event: event.event, data: decode(event.data), via });
  onApplied();
}

// pusher-js keeps only event/channel/data/user_id of a message; the transport's "message" event
// still carries the raw MessageEvent. A new transport comes with every connection.
pusher.connection.bind('connected', () => {
  pusher.connection.connection.transport.bind('message', (raw) => {
    const message = JSON.parse(raw.data);
    if (typeof message.id !== 'number' || message.channel !== name) return;
    if (held[name]) held[name].push(message);
    else apply(name, message, 'live');
  });
});

async function catchUp(channel) {
  const waiting = (held[channel] = []);
  let page;
  do {
    const after = lastId[channel] || 0;
    const query = new URLSearchParams({ channel, after: String(after) });
    const response = await fetch(`${backendUrl}/history?${query}`);
    if (!response.ok) throw new Error(`backend answered ${response.status}`);
    page = await response.json();
    fetches.push({ after, ids: page.events.map((e) => e.id), has_more: page.has_more });
    if (epochs[channel] !== undefined && epochs[channel] !== page.epoch) {
      // The server restarted: its ids start again at 1; reload the channel's state instead.
      throw new Error('history epoch changed');
    }
    epochs[channel] = page.epoch;
    if (after > 0 && page.events.length && page.events[0].id > after + 1) {
      gaps += 1; // retention dropped events we never saw: reload the channel's state instead
    }
    for (const event of page.events) apply(channel, event, 'history');
  } while (page.has_more);
  delete held[channel];
  for (const event of waiting) apply(channel, event, 'live');
}

// -- the scenario --------------------------------------------------------------------------

const lines = readline.createInterface({ input: process.stdin });
const commands = [];
let onCommand = () => {};
lines.on('line', (line) => {
  commands.push(line.trim());
  onCommand();
});

function command(expected) {
  const promise = new Promise((resolve) => {
    const check = () => {
      if (commands.includes(expected)) resolve();
    };
    onCommand = check;
    check();
  });
  return within(promise, `"${expected}" on stdin`);
}

function appliedUpTo(id) {
  const promise = new Promise((resolve) => {
    const check = () => {
      if ((lastId[name] || 0) >= id) resolve();
    };
    onApplied = check;
    check();
  });
  return within(promise, `event id ${id} applied`);
}

function caughtUp() {
  // Resolves after the next (re)subscription's catch-up has finished.
  return within(
    new Promise((resolve, reject) => {
      nextCatchUp = { resolve, reject };
    }),
    'catch-up after the subscription',
  );
}

let nextCatchUp = null;

run(async () => {
  const states = [];
  pusher.connection.bind('state_change', ({ current }) => states.push(current));
  await connected(pusher);
  const channel = pusher.subscribe(name);
  channel.bind('pusher:subscription_succeeded', () => {
    const waiter = nextCatchUp;
    nextCatchUp = null;
    catchUp(name).then(
      () => waiter && waiter.resolve(),
      (error) => (waiter ? waiter.reject(error) : fail(String(error))),
    );
  });
  const firstCatchUp = caughtUp();
  await subscribe(pusher, name);
  await firstCatchUp;
  const firstSocket = pusher.connection.socket_id;
  signalReady({ phase: 'subscribed', socket_id: firstSocket });

  await appliedUpTo(3);
  await closeAll(pusher);
  signalReady({ phase: 'disconnected' });

  await command('reconnect');
  publishDuringCatchUp = true;
  const secondCatchUp = caughtUp();
  pusher.connect();
  await connected(pusher, 'reconnection');
  await secondCatchUp;
  signalReady({ phase: 'caught_up', socket_id: pusher.connection.socket_id });

  await appliedUpTo(9);
  await closeAll(pusher);
  backendServer.close();
  lines.close();
  return {
    channel: name,
    first_socket_id: firstSocket,
    delivered,
    fetches,
    duplicates_dropped: duplicatesDropped,
    gaps,
    held_left: Object.keys(held),
    states,
  };
});
