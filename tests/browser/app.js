// A page of a Laravel app: Laravel Echo (pusher connector) on pusher-js's browser build, both
// loaded as plain <script>s from the npm packages. Everything it receives is written into the
// DOM; window.snapshot() reads the DOM back for the test (tests/integration/test_browser.py).
//
// Query string: key, wsHost, wsPort (where fastrelay is), id (suffix of the channel names),
// token (the bearer token the auth endpoint maps to a user, as Sanctum would).
/* global Echo */
(function () {
  'use strict';

  const params = new URLSearchParams(window.location.search);
  const id = params.get('id') || 'demo';
  const names = { news: `news.${id}`, orders: `orders.${id}`, room: `room.${id}` };
  const $ = (selector) => document.querySelector(selector);

  function append(list, text, data = {}) {
    const item = document.createElement('li');
    item.textContent = text;
    Object.assign(item.dataset, data);
    $(list).appendChild(item);
    return item;
  }

  // laravel-echo 2's IIFE build exports its module object: the class is Echo.default.
  const echo = new Echo.default({
    broadcaster: 'pusher',
    key: params.get('key'),
    cluster: 'mt1',
    wsHost: params.get('wsHost'),
    wsPort: Number(params.get('wsPort')),
    wssPort: Number(params.get('wsPort')),
    forceTLS: false,
    enabledTransports: ['ws', 'wss'],
    authEndpoint: '/auth',
    bearerToken: params.get('token'),
  });
  const connection = echo.connector.pusher.connection;

  connection.bind('state_change', ({ current }) => {
    $('#state').textContent = current;
    append('#states', current);
  });
  connection.bind('connected', () => {
    $('#socket-id').textContent = echo.socketId();
  });
  connection.bind('error', (error) => {
    const data = (error && error.data) || {};
    append('#errors', JSON.stringify({ type: error.type, code: data.code ?? null }));
  });

  function show(channel) {
    return (event, data) => {
      append('#events', JSON.stringify(data), { channel, event });
    };
  }

  function subscribed(channel) {
    return () => append('#subscribed', channel, { channel, socket: echo.socketId() });
  }

  const members = new Map();
  function renderMembers() {
    $('#members').replaceChildren();
    for (const [memberId, info] of [...members].sort(([a], [b]) => a - b)) {
      append('#members', info.name, { id: JSON.stringify(memberId) });
    }
  }

  echo.channel(names.news).listenToAll(show(names.news)).subscribed(subscribed(names.news));
  echo
    .private(names.orders)
    .listenToAll(show(`private-${names.orders}`))
    .subscribed(subscribed(`private-${names.orders}`))
    .error((error) => append('#errors', JSON.stringify({ type: error.type, code: error.status })));
  echo
    .join(names.room)
    .here((users) => {
      members.clear();
      for (const user of users) members.set(user.id, user);
      renderMembers();
    })
    .joining((user) => {
      members.set(user.id, user);
      renderMembers();
    })
    .leaving((user) => {
      members.delete(user.id);
      renderMembers();
    })
    .listenToAll(show(`presence-${names.room}`))
    .subscribed(subscribed(`presence-${names.room}`));

  window.snapshot = function snapshot() {
    const items = (selector) => [...document.querySelectorAll(`${selector} li`)];
    return {
      state: $('#state').textContent,
      socket_id: $('#socket-id').textContent,
      states: items('#states').map((li) => li.textContent),
      errors: items('#errors').map((li) => JSON.parse(li.textContent)),
      subscribed: items('#subscribed').map((li) => ({
        channel: li.dataset.channel,
        socket_id: li.dataset.socket,
      })),
      members: items('#members').map((li) => ({
        id: JSON.parse(li.dataset.id),
        name: li.textContent,
      })),
      events: items('#events').map((li) => ({
        channel: li.dataset.channel,
        event: li.dataset.event,
        data: JSON.parse(li.textContent),
      })),
    };
  };
})();
