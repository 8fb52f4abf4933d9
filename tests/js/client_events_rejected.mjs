// Client events on a public channel are refused (PROTOCOL.md §8): pusher-js sends them anyway, the
// server answers pusher:error 4301 scoped to the channel, keeps the connection, relays nothing.
// A Node SDK event published afterwards is the barrier for "relayed nothing".
// Usage: node client_events_rejected.mjs PORT

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
const name = unique('public-client-events-');

run(async () => {
  const server = backend(port);
  const alice = client(port, server);
  const bob = client(port, server);
  await Promise.all([connected(alice, 'alice'), connected(bob, 'bob')]);
  const [a, b] = await Promise.all([subscribe(alice, name), subscribe(bob, name)]);
  const bobLog = record(b);

  const connectionError = next(alice.connection, 'error', 'connection error at alice');
  const channelError = next(a, 'pusher:error', 'channel pusher:error at alice');
  const sent = a.trigger('client-nope', { x: 1 });
  const { data: errorEvent } = await connectionError;
  const { data: channelErrorData } = await channelError;

  const barrier = next(b, 'barrier', 'barrier at bob');
  await server.trigger(name, 'barrier', {});
  await barrier;
  const state = alice.connection.state;
  await closeAll(alice, bob);
  return {
    channel: name,
    trigger_returned: sent,
    connection_error: errorEvent,
    channel_error: channelErrorData,
    alice_state: state,
    bob_log: bobLog,
  };
});
