// Cache channels (PROTOCOL.md §11). Warm: the Node SDK publishes twice before anyone subscribes; a
// pusher-js subscriber then gets the last event right after subscribing (and no cache_miss) — on
// cache-, private-cache- and presence-cache- channels. Cold: a subscriber to an empty cache channel
// gets pusher:cache_miss. A live event published afterwards is the barrier that proves nothing
// else (a second cached copy, a stray miss) was sent.
// Usage: node cache.mjs PORT

import { backend, cli, client, closeAll, connected, next, run, unique } from './lib.mjs';

const { port } = cli();
const warm = [unique('cache-warm-'), unique('private-cache-warm-'), unique('presence-cache-warm-')];
const cold = unique('cache-cold-');

function log(channel) {
  const seen = [];
  channel.bind_global((event, data) => {
    if (!event.startsWith('pusher_internal:')) seen.push({ event, data });
  });
  return seen;
}

run(async () => {
  const server = backend(port);
  for (const name of warm) {
    await server.trigger(name, 'price', { v: 1 });
    await server.trigger(name, 'price', { v: 2, on: name });
  }

  const pusher = client(port, server, { presence: { user_id: 'cache-user', user_info: {} } });
  await connected(pusher);

  const channels = [...warm, cold].map((name) => pusher.subscribe(name));
  const logs = channels.map(log);
  const firsts = channels.map((channel, i) =>
    i < warm.length
      ? next(channel, 'price', `cached price on ${channel.name}`)
      : next(channel, 'pusher:cache_miss', `pusher:cache_miss on ${channel.name}`),
  );
  const first = (await Promise.all(firsts)).map(({ data }) => (data === undefined ? null : data));

  const live = Promise.all(
    channels.map((channel) => next(channel, 'live', `live on ${channel.name}`)),
  );
  await server.trigger([...warm, cold], 'live', { v: 3 });
  await live;
  await closeAll(pusher);
  return {
    warm: warm.map((name, i) => ({ channel: name, cached: first[i], log: logs[i] })),
    cold: { channel: cold, cache_miss_data: first[warm.length], log: logs[warm.length] },
  };
});
