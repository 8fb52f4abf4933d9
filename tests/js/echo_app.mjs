// The browser side of a Laravel app, in Node: Laravel Echo 2 (pusher connector, or the `reverb`
// broadcaster, which is the same connector with cluster '') against fastrelay.
//  1. Alice (user 1) and Bob (user 2) connect. Alice listens on a public channel (the namespaced
//     `OrderShipped`, a broadcastAs name `.order.shipped`, `Done`, listenToAll), a private channel,
//     her notification channel, and a private channel whose token is forged (`.error()`).
//  2. Presence: Alice joins alone (`here` = [Alice]); Bob joins (Alice's `joining` = Bob, Bob's
//     `here` = both).
//  3. Whispers: Bob whispers `typing` on the presence channel and `ack` on the private channel;
//     Alice's listenForWhisper gets both, then whispers `seen` back. Bob receives `seen` after any
//     echo of his own `typing` would have reached him, so his `typing` log proves there is none.
//  4. READY (stderr) with Alice's socket id and the channel names. The test publishes, with the
//     Python server SDK, what a Laravel backend broadcasts: App\Events\OrderShipped on both order
//     channels, `order.shipped` (broadcastAs), a BroadcastNotificationCreated notification, one
//     OrderShipped excluded by Alice's socket id (`->toOthers()`), then App\Events\Done.
//  5. Bob leaves the presence channel: Alice's `leaving` = Bob.
// Usage: node echo_app.mjs PORT [pusher|reverb]

import { cli, connected, run, signalReady, unique } from './lib.mjs';
import { disconnectAll, inbox, laravelBackend, makeEcho, pusherOf } from './echo_lib.mjs';

const { port, args } = cli();
const broadcaster = args[0] || 'pusher';
const id = unique('');
const names = {
  orders: `orders.${id}`,
  notifications: `App.Models.User.${id}`,
  chat: `chat.${id}`,
  forbidden: `forbidden.${id}`,
};

run(async () => {
  const backend = laravelBackend(port);
  const alice = makeEcho(port, backend, { broadcaster, user: { id: 1, name: 'Alice' } });
  const bob = makeEcho(port, backend, { broadcaster, user: { id: 2, name: 'Bob' } });
  const [aliceSocket] = await Promise.all([
    connected(pusherOf(alice), 'alice'),
    connected(pusherOf(bob), 'bob'),
  ]);
  const box = inbox();
  const publicAll = box.sink('public all');

  // 1. Alice's channels.
  alice
    .channel(names.orders)
    .listen('OrderShipped', box.sink('public OrderShipped'))
    .listen('.order.shipped', box.sink('public .order.shipped'))
    .listen('Done', box.sink('public Done'))
    .listenToAll((event, data) => publicAll({ event, data }))
    .subscribed(box.sink('public subscribed'));
  alice
    .private(names.orders)
    .listen('OrderShipped', box.sink('private OrderShipped'))
    .listenForWhisper('ack', box.sink('private whisper ack'))
    .subscribed(box.sink('private subscribed'));
  alice
    .private(names.notifications)
    .notification(box.sink('notification'))
    .subscribed(box.sink('notifications subscribed'));
  alice
    .private(names.forbidden)
    .subscribed(box.sink('forbidden subscribed'))
    .error(box.sink('forbidden error'));
  const forbiddenError = await box.first('forbidden error');
  await Promise.all(
    ['public', 'private', 'notifications'].map((name) => box.first(`${name} subscribed`)),
  );

  // 2. Presence.
  const aliceChat = alice
    .join(names.chat)
    .here(box.sink('alice here'))
    .joining(box.sink('alice joining'))
    .leaving(box.sink('alice leaving'))
    .listenForWhisper('typing', box.sink('alice whisper typing'));
  const aliceHere = await box.first('alice here');
  const bobChat = bob
    .join(names.chat)
    .here(box.sink('bob here'))
    .listenForWhisper('typing', box.sink('bob whisper typing'))
    .listenForWhisper('seen', box.sink('bob whisper seen'));
  const bobOrders = bob.private(names.orders).subscribed(box.sink('bob private subscribed'));
  const [bobHere, aliceJoining] = await Promise.all([
    box.first('bob here'),
    box.first('alice joining'),
    box.first('bob private subscribed'),
  ]);

  // 3. Whispers.
  bobChat.whisper('typing', { name: 'Bob' });
  bobOrders.whisper('ack', { order: 1 });
  const typing = await box.first('alice whisper typing');
  const ack = await box.first('private whisper ack');
  aliceChat.whisper('seen', { by: 'Alice' });
  const seen = await box.first('bob whisper seen');
  const bobTypingLog = [...(box.seen['bob whisper typing'] || [])];

  // 4. What the backend broadcasts.
  signalReady({
    socket_id: aliceSocket,
    channels: {
      public: names.orders,
      private: `private-${names.orders}`,
      notifications: `private-${names.notifications}`,
    },
  });
  await Promise.all(
    [
      'public OrderShipped',
      'public .order.shipped',
      'private OrderShipped',
      'notification',
      'public Done',
    ].map((label) => box.first(label)),
  );

  // 5. Bob leaves.
  bob.leave(names.chat);
  const aliceLeaving = await box.first('alice leaving');
  const aliceState = pusherOf(alice).connection.state;
  await disconnectAll(alice, bob);
  return {
    broadcaster,
    socket_id: aliceSocket,
    state: aliceState,
    forbidden_error: forbiddenError,
    forbidden_subscribed: Boolean(box.seen['forbidden subscribed']),
    alice_here: aliceHere,
    bob_here: bobHere,
    alice_joining: aliceJoining,
    alice_leaving: aliceLeaving,
    whisper_typing: typing,
    whisper_ack: ack,
    whisper_seen: seen,
    bob_typing_log: bobTypingLog,
    public_order_shipped: box.seen['public OrderShipped'],
    public_broadcast_as: box.seen['public .order.shipped'],
    public_done: box.seen['public Done'],
    public_all: box.seen['public all'].map(({ event }) => event),
    private_order_shipped: box.seen['private OrderShipped'],
    notification: box.seen.notification,
  };
});
