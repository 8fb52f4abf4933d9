// Watchlist: A signs in watching B; right after sign-in A learns B is offline; B signs in (A gets
// `online`), B disconnects (A gets `offline`). Events arrive on pusher.user.watchlist.
// Usage: node watchlist.mjs PORT

import { backend, cli, client, closeAll, connected, next, run, unique } from './lib.mjs';

const { port } = cli();
const watcherId = unique('watcher-');
const watchedId = unique('watched-');

run(async () => {
  const server = backend(port);
  const alice = client(port, server, { user: { id: watcherId, watchlist: [watchedId] } });
  const bob = client(port, server, { user: { id: watchedId } });
  await Promise.all([connected(alice, 'alice'), connected(bob, 'bob')]);

  const initial = next(alice.user.watchlist, 'offline', 'initial offline');
  alice.signin();
  const initialOffline = (await initial).data;

  const online = next(alice.user.watchlist, 'online', 'online');
  bob.signin();
  const wentOnline = (await online).data;

  const offline = next(alice.user.watchlist, 'offline', 'offline');
  bob.disconnect();
  const wentOffline = (await offline).data;
  await closeAll(alice);
  return {
    watcher: watcherId,
    watched: watchedId,
    initial: initialOffline,
    online: wentOnline,
    offline: wentOffline,
  };
});
