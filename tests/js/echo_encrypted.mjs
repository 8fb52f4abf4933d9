// Laravel Echo's encryptedPrivate(): the channel authorization carries the shared_secret (the Node
// SDK derives it from the master key, as pusher-php-server does for a Laravel app with
// `encryption_master_key_base64`), the server relays ciphertext, pusher-js decrypts and Echo
// hands over the plain payload. Whispering on an encrypted channel is refused by pusher-js itself.
//  READY (stderr) once subscribed; the test then publishes `.secret-message` and the namespaced
//  App\Events\SecretShared with the Python SDK (same master key).
// Usage: node echo_encrypted.mjs PORT MASTER_KEY_BASE64

import { cli, connected, run, signalReady, unique } from './lib.mjs';
import { disconnectAll, inbox, laravelBackend, makeEcho, pusherOf } from './echo_lib.mjs';

const { port, args } = cli();
const masterKey = args[0];
if (!masterKey) throw new Error('usage: node echo_encrypted.mjs PORT MASTER_KEY_BASE64');
const name = unique('vault.');

run(async () => {
  const backend = laravelBackend(port, { encryptionMasterKeyBase64: masterKey });
  const echo = makeEcho(port, backend, { user: { id: 1, name: 'Alice' } });
  const socketId = await connected(pusherOf(echo), 'echo');
  const box = inbox();
  const channel = echo
    .encryptedPrivate(name)
    .listen('.secret-message', box.sink('secret-message'))
    .listen('SecretShared', box.sink('SecretShared'))
    .subscribed(box.sink('subscribed'))
    .error(box.sink('error'));
  await box.first('subscribed');
  let whisper = null;
  try {
    channel.whisper('typing', { name: 'Alice' });
    whisper = 'sent';
  } catch (error) {
    whisper = { name: error.constructor.name, message: error.message };
  }
  signalReady({ socket_id: socketId, channel: `private-encrypted-${name}` });
  const [secret, shared] = await Promise.all([
    box.first('secret-message'),
    box.first('SecretShared'),
  ]);
  const state = pusherOf(echo).connection.state;
  await disconnectAll(echo);
  return {
    socket_id: socketId,
    state,
    whisper,
    secret_message: secret,
    secret_shared: shared,
    errors: box.seen.error || [],
  };
});
