// Drive the Node server SDK (pusher-http-node) against the server: run a JSON list of calls in
// order and print each call's HTTP status and parsed body (or the SDK's error) as one JSON line.
// Usage: node node_sdk.mjs PORT '[{"op":"trigger","channels":["c"],"event":"e","data":{}}, ...]'
//        node node_sdk.mjs PORT - < calls.json   (the list on stdin, for large payloads)
//   ops: trigger {channels, event, data, params?} · triggerBatch {batch} · get {path, params?}
//        post {path, body, params?} (a signed POST to /apps/{id}{path})
//        sendToUser {user_id, event, data} · terminateUserConnections {user_id}
//        authorizeChannel {socket_id, channel, data?} · authenticateUser {socket_id, user_data}
// Options (env): NODE_SDK_MASTER_KEY_BASE64 enables encrypted channels in the SDK.

import fs from 'node:fs';
import { backend, cli, run, within } from './lib.mjs';

const { port, args } = cli();
const calls = JSON.parse(args[0] === '-' ? fs.readFileSync(0, 'utf8') : args[0] || '[]');
const masterKey = process.env.NODE_SDK_MASTER_KEY_BASE64;
const server = backend(port, masterKey ? { encryptionMasterKeyBase64: masterKey } : {});

// `send` makes the request; the SDK may also throw before sending (its own validation).
async function response(send) {
  try {
    const res = await send();
    const text = await res.text();
    let body;
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
    return { status: res.status, body };
  } catch (error) {
    // RequestError: the SDK rejects every status >= 400 and keeps the body as text.
    if (error && error.status !== undefined) {
      let body = error.body;
      try {
        body = JSON.parse(error.body);
      } catch {
        // keep the text
      }
      return { status: error.status, body, error: error.message };
    }
    return { status: null, error: String(error && error.message ? error.message : error) };
  }
}

async function call(c) {
  switch (c.op) {
    case 'trigger':
      return response(() => server.trigger(c.channels, c.event, c.data, c.params));
    case 'triggerBatch':
      return response(() => server.triggerBatch(c.batch));
    case 'get':
      return response(() => server.get({ path: c.path, params: c.params || {} }));
    case 'post':
      return response(() => server.post({ path: c.path, body: c.body, params: c.params || {} }));
    case 'sendToUser':
      return response(() => server.sendToUser(c.user_id, c.event, c.data));
    case 'terminateUserConnections':
      return response(() => server.terminateUserConnections(c.user_id));
    case 'authorizeChannel':
      return { token: server.authorizeChannel(c.socket_id, c.channel, c.data) };
    case 'authenticateUser':
      return { token: server.authenticateUser(c.socket_id, c.user_data) };
    default:
      throw new Error(`unknown op ${c.op}`);
  }
}

run(async () => {
  const results = [];
  for (const c of calls) {
    results.push(await within(call(c), `${c.op} call`));
  }
  return { results };
});
