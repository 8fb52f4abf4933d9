"""Webhooks end to end (HTTP_API.md §5): a real server posting to a real HTTP receiver.

The receiver is an aiohttp server on 127.0.0.1, port 0, running in the test's own event loop.
Every wait is on a queue with a timeout. "Nothing else was sent" is proven with a barrier: a
later, distinct webhook must be the next one the receiver gets. Webhooks of one app and URL
arrive in creation order (§5.4), and held events are released in the order they were held, so
a barrier emitted after the suspect event would have queued behind it.

Servers run with ``RELAY_WEBHOOK_GRACE_PERIOD=0`` unless a test is about the grace period.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pusher
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from conftest import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    TIMEOUT,
    PusherSocket,
    ServerProcess,
    api,
    connect,
    start_server,
    token,
)

ALL_TYPES = [
    "channel_occupied",
    "channel_vacated",
    "member_added",
    "member_removed",
    "client_event",
    "cache_miss",
    "subscription_count",
]


# -- the receiver ------------------------------------------------------------------------------


@dataclass
class Hook:
    """One webhook request as the receiver saw it."""

    path: str
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.payload["events"]


class Receiver:
    """Records every POST per path; answers 200, or 500 while a path has failures to give."""

    def __init__(self) -> None:
        self.attempts: dict[str, list[Hook]] = defaultdict(list)  # every request, failed too
        self._accepted: dict[str, asyncio.Queue[Hook]] = defaultdict(asyncio.Queue)
        self.failures: dict[str, int] = {}  # path → how many 500s to answer first
        self.redirects: dict[str, int] = {}  # path → how many 302s (to a GET that says 200)
        self.gets: list[str] = []
        self.hanging: set[str] = set()  # paths that never answer (until stop)
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        app.router.add_get("/{path:.*}", self._get)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str = "hook") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        hook = Hook(path, request.headers, await request.read())
        self.attempts[path].append(hook)
        if path in self.hanging:
            await self._release.wait()
            return web.Response(status=503)
        if self.redirects.get(path, 0) > 0:
            self.redirects[path] -= 1
            raise web.HTTPFound(f"/{path}-moved")
        if self.failures.get(path, 0) > 0:
            self.failures[path] -= 1
            return web.Response(status=500, text="try again")
        self._accepted[path].put_nowait(hook)
        return web.Response(status=200, text="ok")

    async def _get(self, request: web.Request) -> web.Response:
        self.gets.append(request.path)
        return web.Response(status=200, text="a page, not a webhook receiver")

    async def next(self, path: str = "hook", timeout: float = TIMEOUT) -> Hook:
        """The next request this path accepted (answered 200)."""
        return await asyncio.wait_for(self._accepted[path].get(), timeout)

    async def expect(
        self, *events: dict[str, Any], path: str = "hook", timeout: float = TIMEOUT
    ) -> None:
        """The next accepted events, across requests, are exactly ``events``, in order."""
        got: list[dict[str, Any]] = []
        while len(got) < len(events):
            got.extend((await self.next(path, timeout)).events)
        assert got == list(events)


# -- helpers -----------------------------------------------------------------------------------


def target(
    url: str,
    types: list[str] | None = None,
    headers: dict[str, str] | None = None,
    filter: dict[str, str] | None = None,
) -> dict[str, Any]:
    webhook: dict[str, Any] = {"url": url, "event_types": types or ALL_TYPES}
    if headers is not None:
        webhook["headers"] = headers
    if filter is not None:
        webhook["filter"] = filter
    return webhook


def hook_env(*targets: dict[str, Any], grace: float = 0, **extra: str) -> dict[str, str]:
    return {
        "RELAY_APP_WEBHOOKS": json.dumps(list(targets)),
        "RELAY_WEBHOOK_GRACE_PERIOD": str(grace),
        **extra,
    }


def occupied(channel: str) -> dict[str, Any]:
    return {"name": "channel_occupied", "channel": channel}


def vacated(channel: str) -> dict[str, Any]:
    return {"name": "channel_vacated", "channel": channel}


def added(channel: str, user_id: Any) -> dict[str, Any]:
    return {"name": "member_added", "channel": channel, "user_id": user_id}


def removed(channel: str, user_id: Any) -> dict[str, Any]:
    return {"name": "member_removed", "channel": channel, "user_id": user_id}


def signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def sync(sock: PusherSocket) -> None:
    """Ping → pong: the server has handled everything this socket sent before."""
    await sock.send("pusher:ping", {})
    await sock.expect("pusher:pong")


async def subscribe(
    sock: PusherSocket,
    channel: str,
    user_id: Any = None,
    secret: str = APP_SECRET,
    key: str = APP_KEY,
) -> None:
    """Subscribe to any kind of channel, signing private and presence ones."""
    data: dict[str, Any] = {}
    if channel.startswith("presence-"):
        channel_data = json.dumps({"user_id": user_id})
        data = {
            "auth": token(sock.socket_id, channel, channel_data, secret, key),
            "channel_data": channel_data,
        }
    elif channel.startswith("private-"):
        data = {"auth": token(sock.socket_id, channel, None, secret, key)}
    await sock.send("pusher:subscribe", {"channel": channel, **data})
    await sock.expect("pusher_internal:subscription_succeeded")


async def unsubscribe(sock: PusherSocket, channel: str) -> None:
    await sock.send("pusher:unsubscribe", {"channel": channel})
    await sync(sock)


async def rest(
    srv: ServerProcess, method: str, path: str, payload: Any = None, params: Any = None
) -> tuple[int, Any]:
    return await asyncio.to_thread(api, srv, method, path, payload, params)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hooks = Receiver()
    await hooks.start()
    yield hooks
    await hooks.stop()


@pytest.fixture
async def relay(receiver: Receiver) -> AsyncIterator[Callable[..., Awaitable[ServerProcess]]]:
    """Start servers; each is stopped (and must exit 0) while the receiver still answers."""
    started: list[ServerProcess] = []

    async def start(env: dict[str, str]) -> ServerProcess:
        srv = await asyncio.to_thread(start_server, env)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        # In a thread: the server may post to the receiver, which runs in this loop.
        assert await asyncio.to_thread(srv.stop) == 0, "\n".join(srv.lines)


# -- every event type (§5.3) -------------------------------------------------------------------


async def test_channel_occupied_and_vacated(receiver: Receiver, relay: Any) -> None:
    srv = await relay(hook_env(target(receiver.url())))
    a, b = await connect(srv), await connect(srv)
    await subscribe(a, "news")
    await receiver.expect(occupied("news"))
    await subscribe(b, "news")  # 1 → 2: no webhook
    await unsubscribe(a, "news")  # 2 → 1: no webhook
    await subscribe(a, "other")
    await receiver.expect(occupied("other"))  # barrier: nothing came in between
    await unsubscribe(b, "news")
    await receiver.expect(vacated("news"))
    await a.close()
    await receiver.expect(vacated("other"))  # a disconnect vacates too
    await b.close()


async def test_member_added_and_removed_once_per_user(receiver: Receiver, relay: Any) -> None:
    srv = await relay(hook_env(target(receiver.url())))
    room = "presence-room"
    a1, a2, b = await connect(srv), await connect(srv), await connect(srv)
    await subscribe(a1, room, "user-1")
    await receiver.expect(occupied(room), added(room, "user-1"))
    await subscribe(a2, room, "user-1")  # the same user's second connection: no webhook
    await subscribe(b, room, 42)  # user_id keeps its JSON type
    await receiver.expect(added(room, 42))
    await unsubscribe(a1, room)  # user-1 still has a2: no webhook
    await unsubscribe(a2, room)
    await receiver.expect(removed(room, "user-1"))
    await b.close()
    await receiver.expect(removed(room, 42), vacated(room))
    await a1.close()
    await a2.close()


async def test_client_event(receiver: Receiver, relay: Any) -> None:
    srv = await relay(hook_env(target(receiver.url(), ["client_event"])))
    sender, listener = await connect(srv), await connect(srv)
    private = "private-chat"
    await subscribe(sender, private)
    await subscribe(listener, private)
    await sender.send("client-typing", {"on": True}, channel=private)
    await sender.send("client-typing", "plain text", channel=private)
    # data is always a string: an object as compact JSON, a string as sent.
    await receiver.expect(
        {
            "name": "client_event",
            "channel": private,
            "event": "client-typing",
            "data": '{"on":true}',
            "socket_id": sender.socket_id,
        },
        {
            "name": "client_event",
            "channel": private,
            "event": "client-typing",
            "data": "plain text",
            "socket_id": sender.socket_id,
        },
    )
    presence = "presence-chat"
    await subscribe(sender, presence, "user-7")
    await subscribe(listener, presence, "user-8")
    await sender.send("client-typing", '{"on":false}', channel=presence)
    await receiver.expect(
        {
            "name": "client_event",
            "channel": presence,
            "event": "client-typing",
            "data": '{"on":false}',
            "socket_id": sender.socket_id,
            "user_id": "user-7",
        }
    )
    await sender.close()
    await listener.close()


async def test_cache_miss(receiver: Receiver, relay: Any) -> None:
    srv = await relay(hook_env(target(receiver.url())))
    a, b = await connect(srv), await connect(srv)
    await subscribe(a, "cache-prices")
    await receiver.expect(
        occupied("cache-prices"), {"name": "cache_miss", "channel": "cache-prices"}
    )
    status, _ = await rest(
        srv,
        "POST",
        f"/apps/{APP_ID}/events",
        {"name": "p", "channels": ["cache-prices"], "data": "1"},
    )
    assert status == 200
    await b.send("pusher:subscribe", {"channel": "cache-prices"})
    await b.expect("p")  # the cached event: no cache_miss this time
    await a.close()
    await b.close()
    await receiver.expect(vacated("cache-prices"))


async def test_subscription_count(receiver: Receiver, relay: Any) -> None:
    srv = await relay(hook_env(target(receiver.url()), RELAY_APP_SUBSCRIPTION_COUNT="true"))
    a, b = await connect(srv), await connect(srv)

    def count(n: int) -> dict[str, Any]:
        return {"name": "subscription_count", "channel": "counted", "subscription_count": n}

    await subscribe(a, "counted")
    await receiver.expect(occupied("counted"), count(1))
    await subscribe(b, "counted")
    await receiver.expect(count(2))
    await unsubscribe(b, "counted")
    await receiver.expect(count(1))
    await unsubscribe(a, "counted")
    await receiver.expect(vacated("counted"))
    # Presence channels have no subscription_count.
    await subscribe(a, "presence-counted", "u")
    await receiver.expect(occupied("presence-counted"), added("presence-counted", "u"))
    await subscribe(b, "presence-counted", "v")
    await receiver.expect(added("presence-counted", "v"))
    await a.close()
    await b.close()


async def test_subscription_count_off_by_default(receiver: Receiver, relay: Any) -> None:
    srv = await relay(hook_env(target(receiver.url())))
    a, b = await connect(srv), await connect(srv)
    await subscribe(a, "counted")
    await subscribe(b, "counted")
    await unsubscribe(a, "counted")
    await unsubscribe(b, "counted")
    await receiver.expect(occupied("counted"), vacated("counted"))
    await a.close()
    await b.close()


# -- the request (§5.2) ------------------------------------------------------------------------


async def test_request_shape_and_signature(receiver: Receiver, relay: Any) -> None:
    headers = {"X-Custom": "1", "X-Pusher-Key": "forged", "x-pusher-signature": "forged"}
    srv = await relay(hook_env(target(receiver.url(), headers=headers)))
    sock = await connect(srv)
    before = time.time() * 1000
    await subscribe(sock, "shape")
    hook = await receiver.next()
    after = time.time() * 1000

    assert hook.headers["Content-Type"] == "application/json"  # exactly: Node's WebHook.isValid
    assert hook.headers["X-Pusher-Key"] == APP_KEY  # custom headers cannot override it
    assert hook.headers["X-Custom"] == "1"
    assert hook.headers["User-Agent"].startswith("fastrelay/")
    assert hook.headers["X-Pusher-Signature"] == signature(APP_SECRET, hook.body)
    assert hook.headers.getall("X-Pusher-Signature") == [signature(APP_SECRET, hook.body)]

    payload = hook.payload
    assert hook.body == json.dumps(payload, separators=(",", ":")).encode()  # compact JSON
    assert payload["events"] == [occupied("shape")]
    assert isinstance(payload["time_ms"], int)
    assert before - 5000 <= payload["time_ms"] <= after + 5000

    client = pusher.Pusher(app_id=APP_ID, key=APP_KEY, secret=APP_SECRET)
    key, sig = hook.headers["X-Pusher-Key"], hook.headers["X-Pusher-Signature"]
    assert client.validate_webhook(key, sig, hook.body.decode()) == payload
    assert client.validate_webhook(key, sig, hook.body.decode().replace("shape", "shapf")) is None
    assert client.validate_webhook(key, "0" * 64, hook.body.decode()) is None
    await sock.close()


# -- filters (§5.1) ----------------------------------------------------------------------------


async def test_event_types_subset(receiver: Receiver, relay: Any) -> None:
    srv = await relay(hook_env(target(receiver.url(), ["member_removed", "channel_vacated"])))
    a, b = await connect(srv), await connect(srv)
    await subscribe(a, "presence-x", "u1")
    await subscribe(b, "plain")
    await a.close()
    # occupied and member_added were created first: had they been sent, they would come first.
    await receiver.expect(removed("presence-x", "u1"), vacated("presence-x"))
    await b.close()
    await receiver.expect(vacated("plain"))


async def test_channel_filters_per_url(receiver: Receiver, relay: Any) -> None:
    env = hook_env(
        target(receiver.url("a"), filter={"channel_name_starts_with": "private-"}),
        target(receiver.url("b"), filter={"channel_name_ends_with": "-orders"}),
        target(
            receiver.url("c"),
            filter={"channel_name_starts_with": "private-", "channel_name_ends_with": "-orders"},
        ),
        target(receiver.url("all")),
    )
    srv = await relay(env)
    sock = await connect(srv)
    channels = ["public", "private-chat", "shop-orders", "private-orders"]
    for channel in channels:
        await subscribe(sock, channel)
    await receiver.expect(*[occupied(c) for c in channels], path="all")
    await receiver.expect(occupied("private-chat"), occupied("private-orders"), path="a")
    await receiver.expect(occupied("shop-orders"), occupied("private-orders"), path="b")
    await receiver.expect(occupied("private-orders"), path="c")
    # Bodies carry only the matching events, and each is signed for what it carries.
    for path in ("a", "b", "c", "all"):
        for hook in receiver.attempts[path]:
            assert len(hook.events) == 1
            assert hook.headers["X-Pusher-Signature"] == signature(APP_SECRET, hook.body)
    assert len(receiver.attempts["c"]) == 1
    await sock.close()
    await receiver.expect(vacated("private-orders"), path="c")


# -- batching (§5.4) ---------------------------------------------------------------------------


async def test_batching_collects_per_app(receiver: Receiver, relay: Any) -> None:
    url = receiver.url()
    apps = [
        {"id": "1", "key": APP_KEY, "secret": APP_SECRET, "webhooks": [target(url)]},
        {"id": "2", "key": "app-key-2", "secret": "app-secret-2", "webhooks": [target(url)]},
    ]
    env = {
        "RELAY_APPS": json.dumps(apps),
        "RELAY_WEBHOOK_BATCHING": "true",
        "RELAY_WEBHOOK_BATCHING_DURATION": "500",
        "RELAY_WEBHOOK_GRACE_PERIOD": "0",
    }
    srv = await relay(env)
    one = await connect(srv)
    two = await connect(srv, key="app-key-2")
    await subscribe(one, "presence-one", "u1")
    await subscribe(two, "presence-two", "u2", secret="app-secret-2", key="app-key-2")

    secrets = {APP_KEY: APP_SECRET, "app-key-2": "app-secret-2"}
    by_key: dict[str, list[dict[str, Any]]] = {APP_KEY: [], "app-key-2": []}
    while sum(map(len, by_key.values())) < 4:
        hook = await receiver.next()
        key = hook.headers["X-Pusher-Key"]
        assert hook.headers["X-Pusher-Signature"] == signature(secrets[key], hook.body)
        # Created in one go (subscribe = occupied + member_added): one request, never mixed.
        by_key[key].extend(hook.events)
        assert len(hook.events) == 2
    assert by_key == {
        APP_KEY: [occupied("presence-one"), added("presence-one", "u1")],
        "app-key-2": [occupied("presence-two"), added("presence-two", "u2")],
    }
    await one.close()
    await two.close()


# -- retries (§5.4) ----------------------------------------------------------------------------


async def test_failing_receiver_gets_the_event_once_at_the_third_attempt(
    receiver: Receiver, relay: Any
) -> None:
    receiver.failures["hook"] = 2
    srv = await relay(hook_env(target(receiver.url())))
    sock = await connect(srv)
    await subscribe(sock, "flaky")
    hook = await receiver.next()  # retried after 1 s and 2 s
    assert hook.events == [occupied("flaky")]
    attempts = receiver.attempts["hook"]
    assert len(attempts) == 3
    # A retry resends the same request: same body (and time_ms), same signature.
    assert {a.body for a in attempts} == {hook.body}
    assert {a.headers["X-Pusher-Signature"] for a in attempts} == {signature(APP_SECRET, hook.body)}
    # Barrier: the lane sends one request at a time and logs each attempt before the next.
    await subscribe(sock, "after")
    await receiver.expect(occupied("after"))
    assert len(receiver.attempts["hook"]) == 4  # "flaky" was not delivered a fourth time

    status, log = await rest(
        srv, "GET", f"/apps/{APP_ID}/events/log", params={"type": "webhook_sent,webhook_failed"}
    )
    assert status == 200
    entries = [
        {k: e[k] for k in ("type", "url", "status", "attempt", "events")} for e in log["events"]
    ]
    base = {"url": receiver.url(), "events": ["channel_occupied"]}
    assert entries[:3] == [
        {"type": "webhook_failed", "status": 500, "attempt": 1, **base},
        {"type": "webhook_failed", "status": 500, "attempt": 2, **base},
        {"type": "webhook_sent", "status": 200, "attempt": 3, **base},
    ]
    # The barrier's own entry is written once its answer is read: it may not be there yet.
    assert entries[3:] in ([], [{"type": "webhook_sent", "status": 200, "attempt": 1, **base}])
    await sock.close()


async def test_a_redirect_is_not_a_delivery(receiver: Receiver, relay: Any) -> None:
    # Followed, a 302 would turn the POST into a body-less GET whose 200 loses the event.
    receiver.redirects["hook"] = 1
    srv = await relay(hook_env(target(receiver.url())))
    sock = await connect(srv)
    await subscribe(sock, "moved")
    await receiver.expect(occupied("moved"))  # the retry, 1 s later, to the same URL
    assert receiver.gets == []
    await subscribe(sock, "after")  # barrier: attempt 2 is in the log once this arrives
    await receiver.expect(occupied("after"))
    status, log = await rest(
        srv, "GET", f"/apps/{APP_ID}/events/log", params={"type": "webhook_sent,webhook_failed"}
    )
    assert status == 200
    entries = [(e["type"], e["status"], e["attempt"]) for e in log["events"]]
    assert entries[:2] == [("webhook_failed", 302, 1), ("webhook_sent", 200, 2)]
    assert entries[2:] in ([], [("webhook_sent", 200, 1)])  # the barrier's, maybe not yet
    await sock.close()


@pytest.mark.parametrize("down", ["closed_port", "never_answers"])
async def test_dead_receiver_does_not_slow_websocket_delivery(
    receiver: Receiver, relay: Any, down: str
) -> None:
    if down == "closed_port":
        url = f"http://127.0.0.1:{closed_port()}/hook"
    else:
        receiver.hanging.add("hang")
        url = receiver.url("hang")
    env = hook_env(target(url), RELAY_SHUTDOWN_GRACE_PERIOD="1")
    srv = await relay(env)
    channel = "private-feed"
    sender, listener = await connect(srv), await connect(srv)
    await subscribe(sender, channel)
    await subscribe(listener, channel)

    # 200 client events, each one a webhook (client_event) bound for the dead receiver ...
    for n in range(200):
        await sender.send("client-n", {"n": n}, channel=channel)
    # ... and 200 API events.
    for first in range(0, 200, 10):
        batch = [
            {"name": "api-n", "channel": channel, "data": str(n)} for n in range(first, first + 10)
        ]
        status, _ = await rest(srv, "POST", f"/apps/{APP_ID}/batch_events", {"batch": batch})
        assert status == 200

    client_ns: list[int] = []
    api_ns: list[int] = []
    while len(client_ns) < 200 or len(api_ns) < 200:
        message = await listener.recv()
        if message["event"] == "client-n":
            client_ns.append(message["data"]["n"])
        elif message["event"] == "api-n":
            api_ns.append(int(message["data"]))
    assert client_ns == list(range(200))
    assert api_ns == list(range(200))

    # Still responsive while the webhooks wait for their retries (or their timeouts).
    await sync(listener)
    await sync(sender)
    status, log = await rest(
        srv, "GET", f"/apps/{APP_ID}/events/log", params={"type": "webhook_sent,webhook_failed"}
    )
    assert status == 200
    assert all(e["type"] == "webhook_failed" for e in log["events"])
    if down == "closed_port":
        assert log["events"] and log["events"][0].get("status") is None  # no answer at all
    await sender.close()
    await listener.close()


# -- grace period (§5.4: vacate/remove delay) --------------------------------------------------


async def test_grace_cancels_a_quick_return_to_a_channel(receiver: Receiver, relay: Any) -> None:
    srv = await relay(hook_env(target(receiver.url()), grace=1))
    a, b = await connect(srv), await connect(srv)
    await subscribe(a, "room")
    await receiver.expect(occupied("room"))
    await unsubscribe(a, "room")  # channel_vacated held
    await subscribe(b, "room")  # another client, within the grace: both cancelled
    # Barrier: a witness channel occupied then left. A second channel_occupied("room") would
    # arrive before occupied("witness"); a channel_vacated("room"), held before the witness's
    # own vacated, would be released before it.
    await subscribe(a, "witness")
    await unsubscribe(a, "witness")
    await receiver.expect(occupied("witness"), vacated("witness"))
    await a.close()
    await b.close()


async def test_grace_cancels_a_page_reload_on_presence(receiver: Receiver, relay: Any) -> None:
    srv = await relay(hook_env(target(receiver.url()), grace=1))
    room = "presence-room"
    first = await connect(srv)
    await subscribe(first, room, "user-1")
    await receiver.expect(occupied(room), added(room, "user-1"))
    # Reload: the close handshake completes after the server let go of the connection.
    await first.close()
    again = await connect(srv)
    await subscribe(again, room, "user-1")  # same user: member_removed and channel_vacated go
    await subscribe(again, "witness")
    await unsubscribe(again, "witness")
    await receiver.expect(occupied("witness"), vacated("witness"))
    await again.close()


async def test_grace_releases_what_does_not_come_back(receiver: Receiver, relay: Any) -> None:
    srv = await relay(hook_env(target(receiver.url()), grace=1))
    a, b = await connect(srv), await connect(srv)
    await subscribe(a, "lonely")
    await receiver.expect(occupied("lonely"))
    await unsubscribe(a, "lonely")  # nobody comes back
    await subscribe(a, "later")
    # Created after it, sent before it: the vacated is held, then released (not lost).
    await receiver.expect(occupied("later"), vacated("lonely"), timeout=TIMEOUT + 1)

    # Another user joining does not cancel the leaver's member_removed (only the channel pair).
    room = "presence-room"
    await subscribe(a, room, "user-1")
    await receiver.expect(occupied(room), added(room, "user-1"))
    await unsubscribe(a, room)
    await subscribe(b, room, "user-2")
    await receiver.expect(added(room, "user-2"), removed(room, "user-1"), timeout=TIMEOUT + 1)
    await a.close()
    await b.close()


async def test_shutdown_flushes_held_webhooks(receiver: Receiver, relay: Any) -> None:
    srv = await relay(hook_env(target(receiver.url()), grace=3))
    sock = await connect(srv)
    await subscribe(sock, "held")
    await receiver.expect(occupied("held"))
    await unsubscribe(sock, "held")  # channel_vacated held for 3 s
    await sock.close()
    assert await asyncio.to_thread(srv.stop) == 0, "\n".join(srv.lines)
    # The server has exited: whatever it delivered is already here.
    await receiver.expect(vacated("held"), timeout=1)
    assert not any("not delivered" in line for line in srv.lines), "\n".join(srv.lines)


async def test_shutdown_sends_the_vacated_of_connected_clients(
    receiver: Receiver, relay: Any
) -> None:
    srv = await relay(hook_env(target(receiver.url()), grace=3))
    sock = await connect(srv)
    await subscribe(sock, "presence-live", "user-1")
    await receiver.expect(occupied("presence-live"), added("presence-live", "user-1"))
    # Still connected at SIGTERM: the server closes it (4200) and nobody can come back.
    assert await asyncio.to_thread(srv.stop) == 0, "\n".join(srv.lines)
    assert (await sock.closed())[0] == 4200
    await receiver.expect(removed("presence-live", "user-1"), vacated("presence-live"), timeout=1)
