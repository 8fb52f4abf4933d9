// Private channel: pusher-js authorizes through the Node SDK, subscribes, and receives what the
// Node SDK triggers; an event triggered with this client's socket_id must not reach it.
// Usage: node private.mjs PORT

import {
  backend,
  cli,
  client,
  closeAll,
  connected,
  next,
  record,
  run,
  subscribe,
  unique,
} from './lib.mjs';

const { port } = cli();
const name = unique('private-interop-');

run(async () => {
  const server = backend(port);
  const pusher = client(port, server);
  const socketId = await connected(pusher);
  const channel = await subscribe(pusher, name);
  const seen = record(channel);

  const excluded = await server.trigger(name, 'excluded', { n: 1 }, { socket_id: socketId });
  const delivered = next(channel, 'delivered');
  const included = await server.trigger(name, 'delivered', { n: 2, text: 'héllo "quoted"' });
  const { data } = await delivered;
  await closeAll(pusher);
  return {
    socket_id: socketId,
    channel: name,
    trigger_status: [excluded.status, included.status],
    received: data,
    events: seen,
  };
});
