// Presence with pusher-js (PROTOCOL.md §3.5, §3.8, §6).
//  1. Alice (user-a) joins alone: count 1, me.
//  2. Bob (user-b) joins: Alice gets member_added; Bob sees both members and himself as `me`.
//  3. Alice opens a second tab (same user-a): nobody gets member_added; then Carol (user-c) joins,
//     so Bob's member_added log must read [user-c] (Carol's join is the barrier for the tab).
//  4. The second tab unsubscribes (confirmed by a later subscription on that connection), then
//     Carol unsubscribes: Bob's member_removed log must read [user-c] only.
//  5. Bob disconnects: Alice gets member_removed for user-b.
// Usage: node presence.mjs PORT

import { backend, cli, client, closeAll, connected, next, run, subscribe, unique } from './lib.mjs';

const { port } = cli();
const name = unique('presence-interop-');

function members(channel) {
  const list = [];
  channel.members.each((member) => list.push({ id: member.id, info: member.info }));
  list.sort((x, y) => (x.id < y.id ? -1 : 1));
  return list;
}

function view(channel) {
  return { count: channel.members.count, me: channel.members.me, members: members(channel) };
}

run(async () => {
  const server = backend(port);
  const as = (user_id, user_info) => client(port, server, { presence: { user_id, user_info } });
  const alice = as('user-a', { name: 'Alice' });
  const bob = as('user-b', { name: 'Bob', n: 2 });
  const aliceTab = as('user-a', { name: 'Alice (tab 2)' });
  const carol = as('user-c', { name: 'Carol' });
  await Promise.all([alice, bob, aliceTab, carol].map((p, i) => connected(p, `client ${i}`)));

  const a = await subscribe(alice, name);
  const aliceAlone = view(a);

  const added = next(a, 'pusher:member_added', 'member_added at alice');
  const b = await subscribe(bob, name);
  const addedMember = (await added).data;
  const bobView = view(b);
  const aliceAfterAdd = view(a);
  const bobAdded = [];
  const bobRemoved = [];
  b.bind('pusher:member_added', (member) => bobAdded.push(member.id));
  b.bind('pusher:member_removed', (member) => bobRemoved.push(member.id));

  const tab = await subscribe(aliceTab, name);
  const tabView = view(tab);
  const carolAdded = next(b, 'pusher:member_added', 'carol member_added at bob');
  const c = await subscribe(carol, name);
  await carolAdded;
  const carolView = view(c);

  aliceTab.unsubscribe(name);
  await subscribe(aliceTab, unique('presence-tab-barrier-'));
  const carolRemoved = next(b, 'pusher:member_removed', 'carol member_removed at bob');
  carol.unsubscribe(name);
  await carolRemoved;
  const bobAfterLeaves = view(b);

  const removed = next(a, 'pusher:member_removed', 'member_removed at alice');
  bob.disconnect();
  const removedMember = (await removed).data;
  const aliceAfterRemove = view(a);
  await closeAll(alice, aliceTab, carol);
  return {
    channel: name,
    alice_alone: aliceAlone,
    member_added: addedMember,
    bob: bobView,
    alice_after_add: aliceAfterAdd,
    alice_tab: tabView,
    carol: carolView,
    bob_added_log: bobAdded,
    bob_removed_log: bobRemoved,
    bob_after_leaves: bobAfterLeaves,
    member_removed: removedMember,
    alice_after_remove: aliceAfterRemove,
  };
});
