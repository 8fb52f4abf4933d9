// Liveness with pusher-js (PROTOCOL.md §1.3, §3.3, §4).
// Mode `client`: pusher-js takes min(its activityTimeout, the server's activity_timeout); with a
//   300 ms option it sends pusher:ping after 300 ms of silence and must get pusher:pong each time
//   (three rounds), never leaving `connected`. A default client reports the server's 30 s.
// Mode `server` (server run with a short RELAY_PING_INTERVAL): the server's pusher:ping is answered
//   by pusher-js with pusher:pong; a second server ping proves the first pong was accepted (the
//   server sends no new ping while one is outstanding), and the client stays connected.
// Usage: node liveness.mjs PORT client|server

import Pusher from 'pusher-js';
import { APP_KEY, cli, closeAll, connected, run, WAIT_MS, within } from './lib.mjs';

const { port, args } = cli();
const mode = args[0] || 'client';

function make(options = {}) {
  return new Pusher(APP_KEY, {
    wsHost: '127.0.0.1',
    wsPort: port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    disableStats: true,
    ...options,
  });
}

function countMessages(pusher, event, n, label, ms) {
  let seen = 0;
  return within(
    new Promise((resolve) => {
      pusher.connection.bind('message', (message) => {
        if (message.event === event && ++seen === n) resolve(seen);
      });
    }),
    label,
    ms,
  );
}

run(async () => {
  const pusher = mode === 'client' ? make({ activityTimeout: 300, pongTimeout: 2000 }) : make();
  const plain = make();
  const states = [];
  await Promise.all([connected(pusher), connected(plain, 'default client')]);
  pusher.connection.bind('state_change', ({ current }) => states.push(current));
  const socketId = pusher.connection.socket_id;
  const event = mode === 'client' ? 'pusher:pong' : 'pusher:ping';
  await countMessages(pusher, event, mode === 'client' ? 3 : 2, `${event} rounds`, 2 * WAIT_MS);
  const result = {
    mode,
    rounds_of: event,
    activity_timeout_ms: pusher.connection.activityTimeout,
    default_activity_timeout_ms: plain.connection.activityTimeout,
    state_changes: [...states],
    same_socket: pusher.connection.socket_id === socketId,
  };
  await closeAll(pusher, plain);
  return result;
});
