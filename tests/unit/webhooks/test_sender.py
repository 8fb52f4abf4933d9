"""webhooks/: routing, filters, signing, batching, retries, grace, bounds and shutdown.

The deliveries go over real HTTP to an ``aiohttp.web`` receiver on 127.0.0.1 (port 0) that
records every request and can fail (500 or by dropping the connection), hang, or be absent (a
closed port). Every wait is on a condition with a timeout; "nothing else arrived" is proved with
a sentinel sent after the event under test on the same URL, since each URL gets its requests in
creation order.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from fastrelay._version import __version__
from fastrelay.config import App, WebhookTarget
from fastrelay.protocol.auth import webhook_signature
from fastrelay.webhooks import USER_AGENT, WebhookSender

WAIT = 5.0

EVENTS: dict[str, dict[str, Any]] = {
    "channel_occupied": {"name": "channel_occupied", "channel": "my-channel"},
    "channel_vacated": {"name": "channel_vacated", "channel": "my-channel"},
    "member_added": {"name": "member_added", "channel": "presence-room", "user_id": "user-1"},
    "member_removed": {"name": "member_removed", "channel": "presence-room", "user_id": "user-1"},
    "client_event": {
        "name": "client_event",
        "channel": "presence-room",
        "event": "client-typing",
        "data": '{"on":true}',
        "socket_id": "123.456",
        "user_id": "user-1",
    },
    "cache_miss": {"name": "cache_miss", "channel": "cache-prices"},
    "subscription_count": {
        "name": "subscription_count",
        "channel": "my-channel",
        "subscription_count": 2,
    },
}
ALL_TYPES = tuple(EVENTS)


def occupied(channel: str) -> dict[str, Any]:
    return {"name": "channel_occupied", "channel": channel}


def vacated(channel: str) -> dict[str, Any]:
    return {"name": "channel_vacated", "channel": channel}


def member(name: str, user_id: Any, channel: str = "presence-room") -> dict[str, Any]:
    return {"name": name, "channel": channel, "user_id": user_id}


# -- test doubles ------------------------------------------------------------------------------


class Conditions:
    """Lets a test await "some predicate became true" with a timeout, instead of sleeping."""

    def __init__(self) -> None:
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    def notify(self) -> None:
        for predicate, future in list(self._waiters):
            if not future.done() and predicate():
                future.set_result(None)

    async def until(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        if predicate():
            return
        future = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(future, timeout)
        finally:
            self._waiters.remove(entry)


@dataclass
class Recorded:
    path: str
    headers: CIMultiDictProxy[str]
    body: bytes
    status: int | None  # what the receiver answered; None = connection dropped or hung

    @property
    def payload(self) -> dict[str, Any]:
        return orjson.loads(self.body)

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.payload["events"]


class Receiver(Conditions):
    """A real webhook receiver: aiohttp.web on 127.0.0.1, port 0."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Recorded] = []
        self.fail_next = 0
        self.fail_mode = "500"  # or "close": drop the connection without an answer
        self.fail_if: Callable[[Recorded], bool] | None = None  # fails matching requests
        self.hang_next = 0  # hang (until teardown) instead of answering
        self.gate: asyncio.Event | None = None  # when set: answer only once it is set
        self._teardown = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._teardown.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    @property
    def delivered(self) -> list[Recorded]:
        return [r for r in self.requests if r.status == 200]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        record = Recorded(request.path, request.headers.copy(), await request.read(), 200)
        hang = self.hang_next > 0
        fail = not hang and (
            self.fail_next > 0 or (self.fail_if is not None and self.fail_if(record))
        )
        if hang:
            self.hang_next -= 1
            record.status = None
        elif fail:
            self.fail_next = max(0, self.fail_next - 1)
            record.status = 500 if self.fail_mode == "500" else None
        self.requests.append(record)
        self.notify()
        if hang:
            await self._teardown.wait()
        if self.gate is not None:
            await self.gate.wait()
        if fail and self.fail_mode == "close":
            assert request.transport is not None
            request.transport.close()
        return web.Response(status=record.status or 500)


class EventLog(Conditions):
    """The ``event_log`` sink: records (app id, type, fields) per attempt."""

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, app: App, kind: str, fields: dict[str, Any]) -> None:
        self.entries.append((app.id, kind, fields))
        self.notify()

    def summary(self) -> list[tuple[str, int, int | None]]:
        return [(kind, f["attempt"], f["status"]) for _, kind, f in self.entries]


class WallClock:
    """A settable ``wall_clock_ms``."""

    def __init__(self, now: int = 1_700_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def event_log() -> EventLog:
    return EventLog()


@pytest.fixture
async def make_sender(event_log: EventLog) -> AsyncIterator[Callable[..., WebhookSender]]:
    created: list[WebhookSender] = []

    def make(**options: Any) -> WebhookSender:
        options.setdefault("loop", asyncio.get_running_loop())
        options.setdefault("event_log", event_log)
        options.setdefault("grace_period", 0)
        options.setdefault("backoff_base", 0.05)
        sender = WebhookSender(**options)
        created.append(sender)
        return sender

    yield make
    for sender in created:
        await sender.close(1.0)


async def started(sender: WebhookSender) -> WebhookSender:
    await sender.start()
    return sender


def target(
    receiver: Receiver,
    path: str = "/hook",
    types: tuple[str, ...] = ALL_TYPES,
    headers: tuple[tuple[str, str], ...] = (),
    starts: str | None = None,
    ends: str | None = None,
) -> WebhookTarget:
    return WebhookTarget(receiver.url(path), types, headers, starts, ends)


def make_app(*targets: WebhookTarget, id: str = "app-id", secret: str = "app-secret") -> App:
    return App(id=id, key=f"key-{id}", secret=secret, webhooks=targets)


def closed_port_url() -> str:
    # Bind, note the port, close: nothing listens there any more (connection refused).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


# -- routing and filters -------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", ALL_TYPES)
async def test_each_event_type_goes_only_to_targets_listing_it(
    receiver: Receiver, make_sender: Callable[..., WebhookSender], event_type: str
) -> None:
    app = make_app(target(receiver, "/only", (event_type,)), target(receiver, "/all"))
    sender = await started(make_sender())
    for event in EVENTS.values():
        sender.emit(app, event)
    sentinel = {**EVENTS[event_type], "channel": "sentinel"}
    sender.emit(app, sentinel)

    await receiver.until(lambda: len(receiver.at("/only")) == 2 and len(receiver.at("/all")) == 8)
    assert [r.events for r in receiver.at("/only")] == [[EVENTS[event_type]], [sentinel]]
    assert [r.events[0] for r in receiver.at("/all")] == [*EVENTS.values(), sentinel]


@pytest.mark.parametrize(
    ("starts", "ends", "expected"),
    [
        ("private-", None, ["private-orders", "private-chat"]),
        (None, "-orders", ["private-orders", "public-orders"]),
        ("private-", "-orders", ["private-orders"]),
        ("", "", ["private-orders", "private-chat", "public-orders", "presence-x", None]),
    ],
)
async def test_channel_filters(
    receiver: Receiver,
    make_sender: Callable[..., WebhookSender],
    starts: str | None,
    ends: str | None,
    expected: list[str | None],
) -> None:
    app = make_app(target(receiver, starts=starts, ends=ends))
    sender = await started(make_sender())
    for channel in ["private-orders", "private-chat", "public-orders", "presence-x", None]:
        sender.emit(app, {"name": "cache_miss", "channel": channel})
    sender.emit(app, {"name": "cache_miss", "channel": "private-sentinel-orders"})

    await receiver.until(lambda: any("sentinel" in r.body.decode() for r in receiver.requests))
    channels = [r.events[0].get("channel") for r in receiver.requests]
    assert channels == [*expected, "private-sentinel-orders"]


async def test_no_targets_and_no_match_cost_nothing(
    receiver: Receiver, make_sender: Callable[..., WebhookSender]
) -> None:
    sender = await started(make_sender())
    sender.emit(make_app(), occupied("a"))
    sender.emit(make_app(target(receiver, types=("cache_miss",))), occupied("a"))
    assert sender.pending == 0


async def test_same_url_in_two_targets_gets_one_copy(
    receiver: Receiver, make_sender: Callable[..., WebhookSender]
) -> None:
    app = make_app(
        target(receiver, types=("channel_occupied",)),
        target(receiver, types=("channel_occupied", "cache_miss")),
    )
    sender = await started(make_sender())
    sender.emit(app, occupied("a"))
    sender.emit(app, {"name": "cache_miss", "channel": "sentinel"})
    await receiver.until(lambda: len(receiver.requests) == 2)
    assert [r.events[0]["name"] for r in receiver.requests] == ["channel_occupied", "cache_miss"]


# -- the request ---------------------------------------------------------------------------------


SIGNATURE_VECTORS = [
    (
        "thisisasecret",
        b'{"hello":"world"}',
        "40e0ad3b9aa49529322879e84de1aaaf18bde1efe839ca263d540cc865510d25",
    ),
    (
        "thisisasecret",
        b'{"time_ms":1530710011901,"events":[{"name":"client_event","channel":"private-my-channel",'
        b'"event":"client-event","data":"Unencrypted","socket_id":"240621.35780774"}]}',
        "a19cab2af3ca1029257570395e78d5d675e9e700ca676d18a375a7083178df1c",
    ),
    (
        "app-secret",
        b'{"time_ms":1700000000000,"events":[{"name":"channel_occupied","channel":"my-channel"}]}',
        "fec9fff324b82111ea03affc886e951bec5ee7a9e365bfd05cf254414c990a1a",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("secret", "body", "signature"), SIGNATURE_VECTORS)
def test_signature_vectors(secret: str, body: bytes, signature: str) -> None:
    assert webhook_signature(App(id="1", key="k", secret=secret), body) == signature


async def test_body_headers_and_signature(
    receiver: Receiver, make_sender: Callable[..., WebhookSender]
) -> None:
    app = make_app(target(receiver))
    sender = await started(make_sender(wall_clock_ms=WallClock(1_700_000_000_000)))
    sender.emit(app, occupied("my-channel"))
    await receiver.until(lambda: len(receiver.requests) == 1)
    request = receiver.requests[0]

    # The spec's vector (HTTP_API.md §5.5), byte for byte: compact JSON, creation time_ms.
    assert request.body == SIGNATURE_VECTORS[2][1]
    assert request.headers["X-Pusher-Signature"] == SIGNATURE_VECTORS[2][2]
    expected = hmac.new(b"app-secret", request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-Pusher-Signature"], expected)
    assert request.headers["X-Pusher-Key"] == "key-app-id"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"] == USER_AGENT == f"fastrelay/{__version__}"


async def test_custom_headers_cannot_override_pusher_headers(
    receiver: Receiver, make_sender: Callable[..., WebhookSender]
) -> None:
    headers = (
        ("X-Custom", "1"),
        ("x-pusher-key", "forged"),
        ("X-PUSHER-SIGNATURE", "forged"),
        ("content-type", "text/plain"),
        ("Authorization", "Bearer t"),
    )
    app = make_app(target(receiver, headers=headers))
    sender = await started(make_sender())
    sender.emit(app, occupied("a"))
    await receiver.until(lambda: len(receiver.requests) == 1)
    got = receiver.requests[0].headers

    assert got["X-Custom"] == "1"
    assert got["Authorization"] == "Bearer t"
    assert got.getall("X-Pusher-Key") == ["key-app-id"]
    assert got.getall("X-Pusher-Signature") == [
        hmac.new(b"app-secret", receiver.requests[0].body, hashlib.sha256).hexdigest()
    ]
    assert got.getall("Content-Type") == ["application/json"]


# -- batching ------------------------------------------------------------------------------------


async def test_batching_sends_one_request_with_all_events(
    receiver: Receiver, make_sender: Callable[..., WebhookSender], event_log: EventLog
) -> None:
    clock = WallClock(5_000)
    app = make_app(target(receiver))
    sender = await started(make_sender(batching=True, batching_ms=50, wall_clock_ms=clock))
    for i in range(3):
        sender.emit(app, occupied(f"c{i}"))
        clock.now += 10

    await event_log.until(lambda: len(event_log.entries) == 1)
    assert event_log.summary() == [("webhook_sent", 1, 200)]
    assert len(receiver.requests) == 1
    assert receiver.requests[0].payload == {
        "time_ms": 5_000,
        "events": [occupied("c0"), occupied("c1"), occupied("c2")],
    }
    assert sender.pending == 0


async def test_batching_never_mixes_apps(
    receiver: Receiver, make_sender: Callable[..., WebhookSender]
) -> None:
    first = make_app(target(receiver), id="1", secret="s1")
    second = make_app(target(receiver), id="2", secret="s2")
    sender = await started(make_sender(batching=True, batching_ms=50))
    for i in range(3):
        sender.emit(first, occupied(f"one-{i}"))
        sender.emit(second, occupied(f"two-{i}"))

    await receiver.until(lambda: len(receiver.requests) == 2)
    by_key = {r.headers["X-Pusher-Key"]: r for r in receiver.requests}
    assert set(by_key) == {"key-1", "key-2"}
    for key, secret, prefix in (("key-1", b"s1", "one-"), ("key-2", b"s2", "two-")):
        request = by_key[key]
        assert [e["channel"] for e in request.events] == [f"{prefix}{i}" for i in range(3)]
        signature = hmac.new(secret, request.body, hashlib.sha256).hexdigest()
        assert request.headers["X-Pusher-Signature"] == signature


# -- delivery, retries, ordering -----------------------------------------------------------------


async def test_events_arrive_in_creation_order(
    receiver: Receiver, make_sender: Callable[..., WebhookSender]
) -> None:
    app = make_app(target(receiver))
    sender = await started(make_sender())
    for i in range(20):
        sender.emit(app, occupied(f"c{i}"))
    await receiver.until(lambda: len(receiver.requests) == 20)
    assert [r.events[0]["channel"] for r in receiver.requests] == [f"c{i}" for i in range(20)]


@pytest.mark.parametrize(("mode", "status"), [("500", 500), ("close", None)])
async def test_fails_twice_then_succeeds(
    receiver: Receiver,
    make_sender: Callable[..., WebhookSender],
    event_log: EventLog,
    mode: str,
    status: int | None,
) -> None:
    receiver.fail_next, receiver.fail_mode = 2, mode
    app = make_app(target(receiver))
    sender = await started(make_sender())
    sender.emit(app, occupied("a"))

    await event_log.until(lambda: len(event_log.entries) == 3)
    assert event_log.summary() == [
        ("webhook_failed", 1, status),
        ("webhook_failed", 2, status),
        ("webhook_sent", 3, 200),
    ]
    assert event_log.entries[0][2] == {
        "url": receiver.url(),
        "status": status,
        "attempt": 1,
        "events": ["channel_occupied"],
    }
    assert len(receiver.delivered) == 1
    assert len({r.body for r in receiver.requests}) == 1  # the same signed body each time
    assert sender.pending == 0 and sender.failed == 0


async def test_receiver_down_retries_stop_after_retry_window(
    make_sender: Callable[..., WebhookSender],
    event_log: EventLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fastrelay.webhooks")
    app = make_app(WebhookTarget(closed_port_url(), ("channel_occupied",)))
    # Frozen wall clock: the window check sees only the backoff delays 0.05, 0.1, 0.2, 0.4 s,
    # so with a 0.3 s window the fourth failure is the last attempt.
    sender = await started(make_sender(retry_window=0.3, wall_clock_ms=WallClock()))
    sender.emit(app, occupied("a"))

    await event_log.until(lambda: bool(event_log.entries) and sender.pending == 0)
    assert event_log.summary() == [("webhook_failed", n, None) for n in (1, 2, 3, 4)]
    assert sender.failed == 1
    assert any("given up after 4 attempt" in r.getMessage() for r in caplog.records)


async def test_timeout_counts_as_failure(
    receiver: Receiver, make_sender: Callable[..., WebhookSender], event_log: EventLog
) -> None:
    receiver.hang_next = 1
    app = make_app(target(receiver))
    sender = await started(make_sender(request_timeout=0.2))
    sender.emit(app, occupied("a"))
    await event_log.until(lambda: len(event_log.entries) == 2)
    assert event_log.summary() == [("webhook_failed", 1, None), ("webhook_sent", 2, 200)]


async def test_a_retrying_webhook_does_not_block_later_ones(
    receiver: Receiver, make_sender: Callable[..., WebhookSender]
) -> None:
    failed_once: list[bool] = []

    def fail_first_a(record: Recorded) -> bool:
        if record.events[0]["channel"] == "a" and not failed_once:
            failed_once.append(True)
            return True
        return False

    receiver.fail_if = fail_first_a
    app = make_app(target(receiver))
    sender = await started(make_sender(backoff_base=0.3))
    sender.emit(app, occupied("a"))
    sender.emit(app, occupied("b"))

    await receiver.until(lambda: len(receiver.delivered) == 2)
    assert [(r.events[0]["channel"], r.status) for r in receiver.requests] == [
        ("a", 500),
        ("b", 200),
        ("a", 200),
    ]


async def test_a_dead_receiver_does_not_slow_another(
    receiver: Receiver, make_sender: Callable[..., WebhookSender], event_log: EventLog
) -> None:
    receiver.hang_next = 1  # /slow never answers (until the end of the test)
    slow = make_app(target(receiver, "/slow"), id="1")
    other = make_app(target(receiver, "/fast"), id="2")
    sender = await started(make_sender())
    sender.emit(slow, occupied("a"))
    await receiver.until(lambda: len(receiver.at("/slow")) == 1)

    for i in range(5):
        sender.emit(other, occupied(f"c{i}"))
    await event_log.until(lambda: len(event_log.entries) == 5)
    assert [r.events[0]["channel"] for r in receiver.at("/fast")] == [f"c{i}" for i in range(5)]
    assert sender.pending == 1  # the stuck one
    await sender.close(0.1)


# -- grace period --------------------------------------------------------------------------------


async def test_vacated_then_occupied_within_grace_sends_nothing(
    receiver: Receiver, make_sender: Callable[..., WebhookSender]
) -> None:
    app = make_app(target(receiver))
    sender = await started(make_sender(grace_period=0.2))
    sender.emit(app, vacated("x"))
    assert sender.pending == 1  # held
    sender.emit(app, occupied("x"))
    assert sender.pending == 0
    # Held after "x", so released after it: had "x" not been cancelled it would come first.
    sender.emit(app, vacated("sentinel"))

    await receiver.until(lambda: len(receiver.requests) == 1)
    assert receiver.requests[0].events == [vacated("sentinel")]


async def test_vacated_without_return_is_sent_after_grace_with_its_time(
    receiver: Receiver, make_sender: Callable[..., WebhookSender]
) -> None:
    clock = WallClock(7_000)
    app = make_app(target(receiver))
    sender = await started(make_sender(grace_period=0.2, wall_clock_ms=clock))
    loop = asyncio.get_running_loop()
    held_at = loop.time()
    sender.emit(app, vacated("x"))
    clock.now = 9_000

    await receiver.until(lambda: len(receiver.requests) == 1)
    assert loop.time() - held_at >= 0.19
    assert receiver.requests[0].payload == {"time_ms": 7_000, "events": [vacated("x")]}


async def test_member_removed_then_added_within_grace_sends_nothing(
    receiver: Receiver, make_sender: Callable[..., WebhookSender]
) -> None:
    app = make_app(target(receiver))
    sender = await started(make_sender(grace_period=0.2))
    sender.emit(app, member("member_removed", "u1"))
    sender.emit(app, member("member_added", "u1"))  # cancels both
    sender.emit(app, member("member_removed", "u2"))
    sender.emit(app, member("member_added", "u3"))  # another user: sent at once
    sender.emit(app, member("member_removed", 7))
    sender.emit(app, member("member_added", "7"))  # user ids keep their JSON type
    sender.emit(app, member("member_removed", "u1", channel="presence-other"))
    sender.emit(app, member("member_added", "u1"))  # ...and channel
    sender.emit(app, vacated("sentinel"))

    await receiver.until(
        lambda: any(r.events[0]["name"] == "channel_vacated" for r in receiver.requests)
    )
    sent = [
        (e["name"], e["channel"], e["user_id"]) for r in receiver.requests[:-1] for e in r.events
    ]
    assert sent[:3] == [
        ("member_added", "presence-room", "u3"),
        ("member_added", "presence-room", "7"),
        ("member_added", "presence-room", "u1"),
    ]
    assert sent[3:] == [
        ("member_removed", "presence-room", "u2"),
        ("member_removed", "presence-room", 7),
        ("member_removed", "presence-other", "u1"),
    ]


async def test_grace_zero_sends_both_at_once(
    receiver: Receiver, make_sender: Callable[..., WebhookSender]
) -> None:
    app = make_app(target(receiver))
    sender = await started(make_sender(grace_period=0))
    sender.emit(app, vacated("x"))
    sender.emit(app, occupied("x"))
    await receiver.until(lambda: len(receiver.requests) == 2)
    assert [r.events for r in receiver.requests] == [[vacated("x")], [occupied("x")]]


async def test_grace_holds_even_when_only_the_arrival_is_wanted(
    receiver: Receiver, make_sender: Callable[..., WebhookSender], event_log: EventLog
) -> None:
    # The target never sees vacated, but a reload must still not fire a second "occupied".
    app = make_app(target(receiver, types=("channel_occupied",)))
    sender = await started(make_sender(grace_period=0.2))
    sender.emit(app, vacated("x"))
    sender.emit(app, occupied("x"))
    sender.emit(app, occupied("sentinel"))
    await event_log.until(lambda: len(event_log.entries) == 1)
    assert [r.events for r in receiver.requests] == [[occupied("sentinel")]]
    assert sender.pending == 0


# -- bounds --------------------------------------------------------------------------------------


async def test_overflow_drops_the_oldest_queued(
    receiver: Receiver,
    make_sender: Callable[..., WebhookSender],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fastrelay.webhooks")
    receiver.gate = asyncio.Event()
    app = make_app(target(receiver))
    sender = await started(make_sender(max_pending=2))
    sender.emit(app, occupied("e1"))
    await receiver.until(lambda: len(receiver.requests) == 1)  # e1 in flight, held up

    for i in range(2, 6):
        sender.emit(app, occupied(f"e{i}"))
    assert sender.dropped == 2
    assert sender.pending == 3  # e1 in flight + e4, e5 queued
    assert any("queue full" in r.getMessage() for r in caplog.records)

    receiver.gate.set()
    await receiver.until(lambda: len(receiver.requests) == 3)
    assert [r.events[0]["channel"] for r in receiver.requests] == ["e1", "e4", "e5"]


async def test_overflow_trims_a_batch_and_close_flushes_it(
    receiver: Receiver, make_sender: Callable[..., WebhookSender]
) -> None:
    app = make_app(target(receiver))
    sender = await started(make_sender(batching=True, batching_ms=60_000, max_pending=3))
    for i in range(1, 6):
        sender.emit(app, occupied(f"e{i}"))
    assert (sender.dropped, sender.pending) == (2, 3)

    await sender.close(WAIT)
    assert [[e["channel"] for e in r.events] for r in receiver.requests] == [["e3", "e4", "e5"]]
    assert sender.pending == 0


# -- shutdown ------------------------------------------------------------------------------------


async def test_close_flushes_held_and_batched_events(
    receiver: Receiver, make_sender: Callable[..., WebhookSender]
) -> None:
    app = make_app(target(receiver))
    sender = await started(make_sender(batching=True, batching_ms=60_000, grace_period=60))
    sender.emit(app, vacated("x"))
    sender.emit(app, occupied("y"))
    sender.emit(app, occupied("z"))
    assert sender.pending == 3

    loop = asyncio.get_running_loop()
    began = loop.time()
    await sender.close(WAIT)
    assert loop.time() - began < 1.0
    assert sorted(e["channel"] for r in receiver.requests for e in r.events) == ["x", "y", "z"]
    assert sender.pending == 0 and sender.failed == 0


async def test_close_gives_up_retries_due_after_its_deadline(
    make_sender: Callable[..., WebhookSender], event_log: EventLog
) -> None:
    app = make_app(WebhookTarget(closed_port_url(), ("channel_occupied",)))
    sender = await started(make_sender(backoff_base=30.0))
    sender.emit(app, occupied("a"))
    await event_log.until(lambda: len(event_log.entries) == 1)

    loop = asyncio.get_running_loop()
    began = loop.time()
    await sender.close(2.0)
    assert loop.time() - began < 1.0
    assert (sender.pending, sender.failed) == (0, 1)


async def test_close_cancels_what_is_still_in_flight_at_the_deadline(
    receiver: Receiver,
    make_sender: Callable[..., WebhookSender],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fastrelay.webhooks")
    receiver.hang_next = 1
    app = make_app(target(receiver))
    sender = await started(make_sender())
    sender.emit(app, occupied("a"))
    await receiver.until(lambda: len(receiver.requests) == 1)

    await sender.close(0.1)
    assert (sender.pending, sender.failed) == (0, 1)
    assert any("not delivered before shutdown" in r.getMessage() for r in caplog.records)


async def test_emit_after_close_is_dropped_without_raising(
    receiver: Receiver, make_sender: Callable[..., WebhookSender]
) -> None:
    sender = await started(make_sender())
    await sender.close(0.1)
    sender.emit(make_app(target(receiver)), occupied("a"))
    assert (sender.dropped, sender.pending) == (1, 0)


# -- robustness and the injectable poster --------------------------------------------------------


async def test_emit_before_start_opens_the_session_on_first_use(
    receiver: Receiver, make_sender: Callable[..., WebhookSender]
) -> None:
    sender = make_sender()
    sender.emit(make_app(target(receiver)), occupied("a"))
    await receiver.until(lambda: len(receiver.requests) == 1)


async def test_failing_sinks_and_posters_never_reach_the_caller(
    make_sender: Callable[..., WebhookSender],
) -> None:
    calls: list[tuple[str, bytes, dict[str, str]]] = []
    done = asyncio.get_running_loop().create_future()

    async def poster(url: str, body: bytes, headers: Any) -> int:
        calls.append((url, body, dict(headers)))
        if len(calls) == 1:
            raise OSError("network down")
        done.set_result(None)
        return 204

    def broken_log(app: App, kind: str, fields: dict[str, Any]) -> None:
        raise RuntimeError("log sink bug")

    app = make_app(WebhookTarget("http://receiver.invalid/hook", ("channel_occupied",)))
    sender = make_sender(poster=poster, event_log=broken_log)
    await sender.start()
    sender.emit(app, occupied("a"))
    sender.emit(app, {"no": "name"})  # malformed: matches nothing, raises nothing
    sender.emit(app, "not a dict")  # type: ignore[arg-type]  # logged, not raised
    sender.emit(app, {"name": "channel_occupied", "channel": "b", "bad": {1, 2}})  # not JSON
    await asyncio.wait_for(done, WAIT)
    assert [c[0] for c in calls] == ["http://receiver.invalid/hook"] * 2
    assert [orjson.loads(c[1])["events"][0]["channel"] for c in calls] == ["a", "a"]
    assert sender.failed == 1  # the unserializable one, dropped without a request
    assert calls[1][2]["X-Pusher-Signature"] == webhook_signature(app, calls[1][1])
