// User sign-in: pusher.signin() signs in through the Node SDK's authenticateUser; pusher-js then
// subscribes to #server-to-user-{id}; the Node SDK's sendToUser reaches pusher.user.bind().
// A second client, signed in as another user, must not get it (its own sendToUser is the barrier).
// Usage: node signin.mjs PORT [USER_ID]

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
} from './lib.mjs';

const { port, args } = cli();
const userId = args[0] || unique('user-');
const otherId = unique('other-user-');

function userEvents(pusher) {
  const seen = [];
  pusher.user.bind_global((event, data) => seen.push({ event, data }));
  return seen;
}

async function signIn(pusher, id) {
  const userChannel = `#server-to-user-${id}`;
  const signedIn = nextMessage(
    pusher,
    (m) => m.event === 'pusher:signin_success',
    'pusher:signin_success',
  );
  const userChannelReady = nextMessage(
    pusher,
    (m) => m.event === 'pusher_internal:subscription_succeeded' && m.channel === userChannel,
    `subscription_succeeded on ${userChannel}`,
  );
  pusher.signin();
  const success = await signedIn;
  await userChannelReady;
  return success;
}

run(async () => {
  const server = backend(port);
  const user = { id: userId, name: 'Signed In', user_info: { role: 'tester' } };
  const pusher = client(port, server, { user });
  const other = client(port, server, { user: { id: otherId } });
  const [socketId] = await Promise.all([connected(pusher), connected(other, 'other')]);
  const [success] = await Promise.all([signIn(pusher, userId), signIn(other, otherId)]);
  const mine = userEvents(pusher);
  const theirs = userEvents(other);

  const delivered = next(pusher.user, 'invoice-paid', 'invoice-paid at pusher.user');
  const response = await server.sendToUser(userId, 'invoice-paid', { invoice: 7, total: '12.50' });
  const { data } = await delivered;
  const barrier = next(other.user, 'barrier', 'barrier at the other user');
  await server.sendToUser(otherId, 'barrier', {});
  await barrier;
  const userData = pusher.user.user_data;
  await closeAll(pusher, other);
  return {
    socket_id: socketId,
    user_id: userId,
    signin_success: success.data,
    user_data: userData,
    send_status: response.status,
    received: data,
    user_events: mine,
    other_user_events: theirs,
  };
});
