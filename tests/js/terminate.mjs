// terminateUserConnections against pusher-js (PROTOCOL.md §10.5, §3.2): a signed-in pusher-js
// client gets pusher:error 4009 and close 4009, and pusher-js treats 4009 as "refused": it goes
// straight to `disconnected` instead of reconnecting. Another signed-in user is untouched.
// Usage: node terminate.mjs PORT

import {
  backend,
  cli,
  client,
  closeAll,
  connected,
  next,
  nextMessage,
  run,
  unique,
  within,
} from './lib.mjs';

const { port } = cli();
const victimId = unique('victim-');
const otherId = unique('bystander-');

async function signIn(pusher) {
  const done = nextMessage(
    pusher,
    (m) => m.event === 'pusher:signin_success',
    'pusher:signin_success',
  );
  pusher.signin();
  return done;
}

run(async () => {
  const server = backend(port);
  const victim = client(port, server, { user: { id: victimId } });
  const other = client(port, server, { user: { id: otherId } });
  await Promise.all([connected(victim, 'victim'), connected(other, 'other')]);
  await Promise.all([signIn(victim), signIn(other)]);

  const errors = [];
  victim.connection.bind('error', (error) => errors.push(error));
  const states = [];
  const left = new Promise((resolve) => {
    victim.connection.bind('state_change', ({ current }) => {
      states.push(current);
      resolve();
    });
  });
  const response = await server.terminateUserConnections(victimId);
  await within(left, 'victim leaving the connected state');

  const stillThere = next(other.user, 'ping', 'sendToUser at the bystander');
  await server.sendToUser(otherId, 'ping', { ok: true });
  const { data } = await stillThere;
  const otherState = other.connection.state;
  await closeAll(other);
  return {
    terminate_status: response.status,
    victim_errors: errors,
    victim_states: states,
    victim_state: victim.connection.state,
    other_state: otherState,
    other_received: data,
  };
});
