// Laravel Echo 2 (pusher connector) on top of the real pusher-js Node build, configured the way a
// Laravel app's resources/js/echo.js configures it, with the channel authorization a Laravel
// backend gives (`/broadcasting/auth` answers what the Pusher server SDK's authorizeChannel
// returns; here the Node SDK signs in a customHandler, so no PHP is needed).
//
// The app credentials come from FASTRELAY_APP_ID / FASTRELAY_APP_KEY / FASTRELAY_APP_SECRET when
// set (the migration tests start fastrelay with soketi's or Reverb's variables and their own
// credentials), else from lib.mjs.

import Echo from 'laravel-echo';
import Pusher from 'pusher-js';
import PusherServer from 'pusher';

import { APP_ID, APP_KEY, APP_SECRET, within } from './lib.mjs';

export const CREDENTIALS = {
  appId: process.env.FASTRELAY_APP_ID || APP_ID,
  key: process.env.FASTRELAY_APP_KEY || APP_KEY,
  secret: process.env.FASTRELAY_APP_SECRET || APP_SECRET,
};

/** The "Laravel backend": the Node server SDK with the app's credentials. */
export function laravelBackend(port, options = {}) {
  return new PusherServer({
    ...CREDENTIALS,
    host: '127.0.0.1',
    port: String(port),
    useTLS: false,
    ...options,
  });
}

/**
 * An Echo instance as Laravel's echo.js builds it for `broadcaster` `pusher` (PUSHER_* /
 * VITE_PUSHER_* variables, so a `cluster` is required by pusher-js 8) or `reverb` (Echo forces
 * cluster ''), pointed at fastrelay over plain ws.
 *
 * `user` is the `{id, ...}` the authorization signs for presence channels (Laravel: the channel
 * callback's return value becomes user_info, the auth id the user_id); a private channel whose
 * name starts with `private-forbidden.` gets a token signed with the wrong secret, as an app with
 * a stale PUSHER_APP_SECRET would produce.
 */
export function makeEcho(port, backend, { broadcaster = 'pusher', user } = {}) {
  const forger = new PusherServer({ ...CREDENTIALS, secret: 'not-the-app-secret' });
  const authorize = (socketId, channelName) => {
    if (channelName.startsWith('presence-')) {
      return backend.authorizeChannel(socketId, channelName, { user_id: user.id, user_info: user });
    }
    if (channelName.startsWith('private-forbidden.')) {
      return forger.authorizeChannel(socketId, channelName);
    }
    return backend.authorizeChannel(socketId, channelName);
  };
  const where = {
    wsHost: '127.0.0.1',
    wsPort: port,
    wssPort: port,
    forceTLS: false,
    enabledTransports: ['ws', 'wss'],
  };
  const options =
    broadcaster === 'reverb'
      ? { broadcaster: 'reverb', key: CREDENTIALS.key, ...where }
      : { broadcaster: 'pusher', key: CREDENTIALS.key, cluster: 'mt1', ...where };
  return new Echo({
    ...options,
    Pusher,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        try {
          callback(null, authorize(socketId, channelName));
        } catch (error) {
          callback(error, null);
        }
      },
    },
  });
}

/** The pusher-js client under an Echo instance. */
export function pusherOf(echo) {
  return echo.connector.pusher;
}

/**
 * A one-shot waiter: calls `register(callback)` (wrapping an Echo method such as `listen`, `here`,
 * `joining`) and resolves with the first value the callback receives, within the wait deadline.
 */
export function once(register, label) {
  return within(
    new Promise((resolve) => {
      let done = false;
      register((value) => {
        if (!done) {
          done = true;
          resolve(value);
        }
      });
    }),
    label,
  );
}

/**
 * Everything some callbacks received, by label: `sink(label)` is a callback that records its
 * first argument; `first(label)` resolves with the first value recorded under `label` (already
 * there, or arriving within the wait deadline counted from this call).
 */
export function inbox() {
  const seen = {};
  const waiters = {};
  return {
    seen,
    sink(label) {
      return (value) => {
        (seen[label] ||= []).push(value);
        for (const wake of (waiters[label] || []).splice(0)) wake();
      };
    },
    first(label) {
      const promise = new Promise((resolve) => {
        if (seen[label]?.length) {
          resolve(seen[label][0]);
        } else {
          (waiters[label] ||= []).push(() => resolve(seen[label][0]));
        }
      });
      return within(promise, label);
    },
  };
}

/** Resolve with the first `error` event of the pusher-js connection under `echo`. */
export function connectionError(echo, label) {
  return once((callback) => pusherOf(echo).connection.bind('error', callback), label);
}

/** Disconnect Echo instances and resolve once each pusher-js connection is closed. */
export async function disconnectAll(...echos) {
  await Promise.all(
    echos.map((echo) => {
      const connection = pusherOf(echo).connection;
      if (connection.state === 'disconnected') return Promise.resolve();
      const closed = new Promise((resolve) => {
        connection.bind('state_change', ({ current }) => {
          if (current === 'disconnected') resolve();
        });
      });
      echo.disconnect();
      return within(closed, 'disconnect');
    }),
  );
}
