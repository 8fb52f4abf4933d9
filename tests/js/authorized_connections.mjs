// Authorized connections (PROTOCOL.md §10.3; the server runs with
// RELAY_APP_USER_AUTHENTICATION=true and a short RELAY_USER_AUTHENTICATION_TIMEOUT).
// A pusher-js client that signs in keeps its connection, and so does one that subscribes to a
// private channel; one that does neither gets pusher:error 4009 "Connection not authorized within
// timeout." and close 4009, which pusher-js does not retry. The authorized clients connect first,
// so their deadlines pass before the idle one's: when the idle client is cut off, they have
// outlived their own deadlines.
// Usage: node authorized_connections.mjs PORT

import {
  backend,
  cli,
  client,
  closeAll,
  connected,
  next,
  nextMessage,
  run,
  subscribe,
  unique,
  WAIT_MS,
  within,
} from './lib.mjs';

const { port } = cli();
const userId = unique('authorized-');

run(async () => {
  const server = backend(port);
  const member = client(port, server, { user: { id: userId } });
  await connected(member, 'signed-in client');
  const signedIn = nextMessage(
    member,
    (m) => m.event === 'pusher:signin_success',
    'pusher:signin_success',
  );
  member.signin();
  await signedIn;
  const privateName = unique('private-authorized-');
  const subscriber = client(port, server);
  await connected(subscriber, 'private subscriber');
  const privateChannel = await subscribe(subscriber, privateName);

  const idle = client(port, server);
  await connected(idle, 'idle client');
  const errors = [];
  idle.connection.bind('error', (error) => errors.push(error));
  const left = new Promise((resolve) => {
    idle.connection.bind('state_change', ({ current }) => resolve(current));
  });
  const idleState = await within(left, 'idle client being disconnected', 3 * WAIT_MS);

  const delivered = next(member.user, 'still-here', 'sendToUser at the signed-in client');
  await server.sendToUser(userId, 'still-here', {});
  const published = next(privateChannel, 'still-here', 'event at the private subscriber');
  await server.trigger(privateName, 'still-here', {});
  await Promise.all([delivered, published]);
  const memberState = member.connection.state;
  const subscriberState = subscriber.connection.state;
  await closeAll(member, subscriber);
  return {
    idle_state: idleState,
    idle_errors: errors,
    member_state: memberState,
    subscriber_state: subscriberState,
  };
});
