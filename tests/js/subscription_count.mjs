// pusher:subscription_count (PROTOCOL.md §3.9; the server must run with
// RELAY_APP_SUBSCRIPTION_COUNT=true). A subscribes (count 1), B subscribes (2), B unsubscribes
// (1); pusher-js re-emits each as pusher:subscription_count and keeps channel.subscriptionCount.
// Usage: node subscription_count.mjs PORT

import { backend, cli, client, closeAll, connected, run, unique, within } from './lib.mjs';

const { port } = cli();
const name = unique('counted-');

function counter(channel) {
  const seen = [];
  const waiters = [];
  channel.bind('pusher:subscription_count', (data) => {
    seen.push(data.subscription_count);
    for (const w of waiters.splice(0)) w();
  });
  const reach = (n, label) =>
    within(
      new Promise((resolve) => {
        const check = () => (seen.at(-1) === n ? resolve() : waiters.push(check));
        check();
      }),
      label,
    );
  return { seen, reach };
}

run(async () => {
  const server = backend(port);
  const alice = client(port, server);
  const bob = client(port, server);
  await Promise.all([connected(alice, 'alice'), connected(bob, 'bob')]);

  const a = alice.subscribe(name);
  const aCounts = counter(a);
  await aCounts.reach(1, 'count 1 at alice');

  const bChannel = bob.subscribe(name);
  const bCounts = counter(bChannel);
  await Promise.all([aCounts.reach(2, 'count 2 at alice'), bCounts.reach(2, 'count 2 at bob')]);
  const afterJoin = { alice: a.subscriptionCount, bob: bChannel.subscriptionCount };

  bob.unsubscribe(name);
  await aCounts.reach(1, 'count 1 at alice after bob left');
  const afterLeave = a.subscriptionCount;
  await closeAll(alice, bob);
  return {
    channel: name,
    alice_counts: aCounts.seen,
    bob_counts: bCounts.seen,
    after_join: afterJoin,
    after_leave: afterLeave,
  };
});
