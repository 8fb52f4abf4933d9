// Shared helpers for the interop scenarios: real pusher-js clients and the real Node server SDK
// (pusher-http-node) pointed at a local fastrelay. Every wait is bound to an event and a deadline;
// nothing sleeps. A scenario prints exactly one JSON line on stdout and exits 0, or prints the
// reason on stderr and exits non-zero.

import crypto from 'node:crypto';
import Pusher from 'pusher-js';
import PusherServer from 'pusher';

export const APP_ID = '1';
export const APP_KEY = 'app-key';
export const APP_SECRET = 'app-secret';

// Deadlines in milliseconds: SCENARIO_WAIT_MS / SCENARIO_TOTAL_MS when given (the pytest side
// passes values already scaled), else the defaults times FASTRELAY_TESTS_TIMEOUT_FACTOR.
const FACTOR = Number(process.env.FASTRELAY_TESTS_TIMEOUT_FACTOR || '1');
const configured = (name, fallback) =>
  process.env[name] ? Number(process.env[name]) : Math.round(fallback * FACTOR);
// One wait (connect, subscribe, receive one event) must finish within this.
export const WAIT_MS = configured('SCENARIO_WAIT_MS', 5000);
// The whole scenario must finish within this.
const SCENARIO_MS = configured('SCENARIO_TOTAL_MS', 20000);

/** Command line: `node scenario.mjs PORT [args...]`; PORT may also come from FASTRELAY_PORT. */
export function cli() {
  const args = process.argv.slice(2);
  const port = Number(args[0] || process.env.FASTRELAY_PORT);
  if (!Number.isInteger(port) || port <= 0) {
    fail('usage: node <scenario> PORT [args...] (or FASTRELAY_PORT=PORT)');
  }
  return { port, args: args.slice(1) };
}

/** A name suffix unique to this run, so scenarios can share one server. */
export function unique(prefix) {
  return `${prefix}${crypto.randomBytes(6).toString('hex')}`;
}

export function fail(message) {
  process.stderr.write(`scenario failed: ${message}\n`);
  process.exit(2);
}

/** Run the scenario body; print its result as one JSON line, or fail. */
export function run(body) {
  const watchdog = setTimeout(
    () => fail(`scenario did not finish within ${SCENARIO_MS} ms`),
    SCENARIO_MS,
  );
  body().then(
    (result) => {
      clearTimeout(watchdog);
      process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0));
    },
    (error) => fail(error && error.stack ? error.stack : String(error)),
  );
}

/** Tell the driving test that the scenario is ready for it to act (stderr, one line). */
export function signalReady(info) {
  process.stderr.write(`READY ${JSON.stringify(info)}\n`);
}

/** Race `promise` against the wait deadline. */
export function within(promise, label, ms = WAIT_MS) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${ms} ms waiting for ${label}`)),
      ms,
    );
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** The Node server SDK, configured for the local server. */
export function backend(port, options = {}) {
  return new PusherServer({
    appId: APP_ID,
    key: APP_KEY,
    secret: APP_SECRET,
    host: '127.0.0.1',
    port: String(port),
    useTLS: false,
    ...options,
  });
}

/**
 * A pusher-js client whose authorization and sign-in are signed by `server` (the Node SDK).
 *
 * `presence` is the `{user_id, user_info}` this client uses on presence channels; `user` is the
 * user_data it signs in with; `authorize(socketId, channelName)` overrides channel authorization.
 */
export function client(port, server, { presence, user, authorize } = {}) {
  const sign =
    authorize ||
    ((socketId, channelName) =>
      channelName.startsWith('presence-')
        ? server.authorizeChannel(socketId, channelName, presence)
        : server.authorizeChannel(socketId, channelName));
  return new Pusher(APP_KEY, {
    wsHost: '127.0.0.1',
    wsPort: port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    disableStats: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        try {
          callback(null, sign(socketId, channelName));
        } catch (error) {
          callback(error, null);
        }
      },
    },
    userAuthentication: {
      customHandler: ({ socketId }, callback) => {
        try {
          callback(null, server.authenticateUser(socketId, user));
        } catch (error) {
          callback(error, null);
        }
      },
    },
  });
}

/** Resolve when the client is connected (reject if pusher-js gives up). */
export function connected(pusher, label = 'connection') {
  const promise = new Promise((resolve, reject) => {
    if (pusher.connection.state === 'connected') {
      resolve(pusher.connection.socket_id);
      return;
    }
    const onChange = ({ current }) => {
      if (current === 'connected') {
        pusher.connection.unbind('state_change', onChange);
        resolve(pusher.connection.socket_id);
      } else if (current === 'failed' || current === 'unavailable') {
        pusher.connection.unbind('state_change', onChange);
        reject(new Error(`${label}: connection state became ${current}`));
      }
    };
    pusher.connection.bind('state_change', onChange);
  });
  return within(promise, label);
}

/** Resolve with `{data, metadata}` the next time `emitter` emits `event`. */
export function next(emitter, event, label = event) {
  const promise = new Promise((resolve) => {
    const handler = (data, metadata) => {
      emitter.unbind(event, handler);
      resolve({ data, metadata });
    };
    emitter.bind(event, handler);
  });
  return within(promise, label);
}

/** Resolve with the first connection-level message for which `match(message)` holds. */
export function nextMessage(pusher, match, label) {
  const promise = new Promise((resolve) => {
    const handler = (message) => {
      if (match(message)) {
        pusher.connection.unbind('message', handler);
        resolve(message);
      }
    };
    pusher.connection.bind('message', handler);
  });
  return within(promise, label);
}

/** Subscribe; resolve with the channel once the server confirms, reject on subscription_error. */
export async function subscribe(pusher, name) {
  const channel = pusher.subscribe(name);
  const promise = new Promise((resolve, reject) => {
    channel.bind('pusher:subscription_succeeded', () => resolve(channel));
    channel.bind('pusher:subscription_error', (error) =>
      reject(new Error(`subscription to ${name} failed: ${JSON.stringify(error)}`)),
    );
  });
  return within(promise, `subscription_succeeded on ${name}`);
}

/** Record every non-internal event a channel emits, in arrival order. */
export function record(channel) {
  const seen = [];
  channel.bind_global((event, data) => {
    if (!event.startsWith('pusher:') && !event.startsWith('pusher_internal:')) {
      seen.push({ event, data });
    }
  });
  return seen;
}

/** Disconnect clients and resolve once each is closed (bounded). */
export async function closeAll(...clients) {
  await Promise.all(
    clients.map((pusher) => {
      if (pusher.connection.state === 'disconnected') return Promise.resolve();
      const closed = new Promise((resolve) => {
        pusher.connection.bind('state_change', ({ current }) => {
          if (current === 'disconnected') resolve();
        });
      });
      pusher.disconnect();
      return within(closed, 'disconnect');
    }),
  );
}
