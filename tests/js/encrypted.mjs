// private-encrypted-: the Node SDK (with the master key) authorizes the subscription (adding the
// shared_secret); the server relays ciphertext it cannot read; pusher-js decrypts.
// Mode `node` (default): the Node SDK triggers `secret-message` itself; it also publishes to a
//   private-encrypted-cache- channel before subscribing, and the cached ciphertext must decrypt.
// Mode `external`: after READY (stderr) the test publishes `secret-message` (e.g. with the Python
// SDK and the same master key) and this client decrypts it.
// Usage: node encrypted.mjs PORT MASTER_KEY_BASE64 [CHANNEL] [node|external]

import {
  backend,
  cli,
  client,
  closeAll,
  connected,
  next,
  run,
  signalReady,
  subscribe,
  unique,
} from './lib.mjs';

const { port, args } = cli();
const masterKey = args[0] || process.env.RELAY_ENCRYPTION_MASTER_KEY_BASE64;
if (!masterKey) {
  throw new Error('usage: node encrypted.mjs PORT MASTER_KEY_BASE64 [CHANNEL] [node|external]');
}
const name = args[1] || unique('private-encrypted-interop-');
const mode = args[2] || 'node';

run(async () => {
  const server = backend(port, { encryptionMasterKeyBase64: masterKey });
  const pusher = client(port, server);
  const socketId = await connected(pusher);
  const channel = await subscribe(pusher, name);
  const secret = next(channel, 'secret-message');
  const payload = { text: 'top secret ✓', n: 42 };
  let status = null;
  if (mode === 'external') {
    signalReady({ socket_id: socketId, channel: name });
  } else {
    status = (await server.trigger(name, 'secret-message', payload)).status;
  }
  const { data } = await secret;
  let cached = null;
  if (mode !== 'external') {
    const cacheName = unique('private-encrypted-cache-interop-');
    await server.trigger(cacheName, 'cached-secret', { cached: 'yes ✓' });
    const cacheChannel = pusher.subscribe(cacheName);
    cached = (await next(cacheChannel, 'cached-secret', `cached event on ${cacheName}`)).data;
  }
  await closeAll(pusher);
  return {
    socket_id: socketId,
    channel: name,
    trigger_status: status,
    sent: payload,
    decrypted: data,
    decrypted_cached: cached,
  };
});
