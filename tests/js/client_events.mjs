// Client events between two pusher-js clients on a private or presence channel.
// A triggers client-ping; B must receive it (presence: with metadata.user_id = A's user id);
// B answers client-ack. The server handles client-ping before client-ack, so any echo of
// client-ping to A would have reached A before the ack: A's log at that point proves no echo.
// Usage: node client_events.mjs PORT private|presence

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

const { port, args } = cli();
const kind = args[0] || 'private';
if (kind !== 'private' && kind !== 'presence') {
  throw new Error(`unknown channel kind ${kind}`);
}
const name = unique(`${kind}-client-events-`);

run(async () => {
  const server = backend(port);
  const alice = client(port, server, {
    presence: { user_id: 'user-a', user_info: { name: 'Alice' } },
  });
  const bob = client(port, server, { presence: { user_id: 'user-b', user_info: { name: 'Bob' } } });
  await Promise.all([connected(alice, 'alice'), connected(bob, 'bob')]);
  const [a, b] = await Promise.all([subscribe(alice, name), subscribe(bob, name)]);
  const aliceLog = record(a);
  const bobLog = record(b);

  const atBob = next(b, 'client-ping', 'client-ping at bob');
  const sentByAlice = a.trigger('client-ping', { from: 'alice', text: 'ünïcode' });
  const ping = await atBob;

  const atAlice = next(a, 'client-ack', 'client-ack at alice');
  const sentByBob = b.trigger('client-ack', 'plain string');
  const ack = await atAlice;

  await closeAll(alice, bob);
  return {
    channel: name,
    trigger_returned: [sentByAlice, sentByBob],
    bob_received: { data: ping.data, metadata: ping.metadata },
    alice_received: { data: ack.data, metadata: ack.metadata },
    alice_log: aliceLog,
    bob_log: bobLog,
  };
});
