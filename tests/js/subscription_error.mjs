// A private subscription whose token was signed with the wrong secret must come back as
// pusher:subscription_error on the channel (and the Pusher-style pusher:error with code null on the
// connection), and the connection must stay usable: a correctly signed subscription still works.
// Usage: node subscription_error.mjs PORT

import { backend, cli, client, closeAll, connected, next, run, subscribe, unique } from './lib.mjs';

const { port } = cli();
const bad = unique('private-bad-auth-');
const good = unique('private-good-auth-');

run(async () => {
  const server = backend(port);
  const wrong = backend(port, { secret: 'not-the-app-secret' });
  const pusher = client(port, server, {
    authorize: (socketId, channelName) =>
      (channelName === bad ? wrong : server).authorizeChannel(socketId, channelName),
  });
  const socketId = await connected(pusher);

  const connectionError = next(pusher.connection, 'error', 'connection error event');
  const channel = pusher.subscribe(bad);
  let succeeded = false;
  channel.bind('pusher:subscription_succeeded', () => {
    succeeded = true;
  });
  const { data: subscriptionError } = await next(channel, 'pusher:subscription_error');
  const { data: errorEvent } = await connectionError;

  const ok = await subscribe(pusher, good);
  const stateAfter = pusher.connection.state;
  const badSubscribed = succeeded || channel.subscribed;
  const goodSubscribed = ok.subscribed;
  await closeAll(pusher);
  return {
    socket_id: socketId,
    channel: bad,
    subscription_error: subscriptionError,
    connection_error: errorEvent,
    bad_channel_subscribed: badSubscribed,
    good_channel_subscribed: goodSubscribed,
    state_after: stateAfter,
  };
});
