// Public channel: subscribe, tell the test we are ready, record every event until `done`.
// The test publishes (with the Python SDK) after READY; the last event it sends is `done`.
// Usage: node public.mjs PORT CHANNEL

import {
  backend,
  cli,
  client,
  closeAll,
  connected,
  next,
  record,
  run,
  signalReady,
  subscribe,
} from './lib.mjs';

const { port, args } = cli();
const name = args[0] || 'public-interop';

run(async () => {
  const pusher = client(port, backend(port));
  const socketId = await connected(pusher);
  const channel = await subscribe(pusher, name);
  const seen = record(channel);
  const done = next(channel, 'done', `"done" on ${name}`);
  signalReady({ socket_id: socketId, channel: name });
  await done;
  await closeAll(pusher);
  return { socket_id: socketId, channel: name, events: seen.filter((e) => e.event !== 'done') };
});
