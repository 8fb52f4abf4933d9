"""Webhook delivery (HTTP_API.md §5): filtered, signed, optionally batched, retried, never blocking.

The hub calls :meth:`WebhookSender.emit` synchronously, inside the event loop, for every
webhook-shaped event. ``emit`` only stamps, routes and queues the event and schedules work; every
request runs in a task, so a slow or dead receiver never slows message delivery or other
receivers.

Path of an event::

    emit ─ grace hold (channel_vacated / member_removed, see grace.py)
         ─ every target whose event_types and channel filters match (filters.py)
         ─ lane of (app id, URL, custom headers): batch buffer (batching on) ─ ready queue
         ─ the lane's worker task: one request at a time ─ on failure a retry timer

Numbers (constructor defaults):

* Request: success is a 2xx answer within ``request_timeout`` = 10 s. One aiohttp
  ``ClientSession`` (pooled; aiohttp's connector allows 100 connections) serves every URL.
* Retries: after a network error, a timeout or a non-2xx answer, wait ``backoff_base`` × 2^(n-1)
  s after attempt n: 1, 2, 4, 8 … s. No attempt is scheduled later than ``retry_window`` = 280 s
  after the webhook's ``time_ms`` (pusher-http-python rejects bodies older than 300 s), so at
  most 9 attempts (t ≈ 0, 1, 3, 7, 15, 31, 63, 127, 255 s); then the events are dropped, counted
  in ``failed`` and logged as a warning.
* Ordering: per lane, the oldest ready request is sent first (creation order). A request waiting
  for its retry does not hold the lane up: later webhooks go meanwhile and the retry takes its
  original place among whatever is still queued once it is due.
* Memory: at most ``max_pending`` = 10 000 queued events per sender (batch buffers, ready
  queues and requests waiting for a retry; an event routed to n URLs counts n times). Beyond
  that the oldest queued events are dropped (counted in ``dropped``). At most ``max_pending``
  held events (the oldest is released early past that). In flight: one request per lane. Lanes
  are forgotten when idle, so their number follows the configured targets.
* Grace: ``grace_period`` = 3 s hold for ``channel_vacated``/``member_removed``; 0 disables it.
* Batching: ``batching_ms`` = 50 ms per lane (never mixing apps), all collected events in one
  request whose ``time_ms`` is that of its oldest event.
* Warnings (drops, give-ups, emits after close) are logged at most once per 10 s per kind, with
  the number of suppressed ones, so a dead receiver cannot flood the log.
* Shutdown: ``close(timeout)`` releases held events, flushes batch buffers, gives up retries that
  would fall after the deadline, waits for the rest until ``timeout`` and then cancels; whatever
  was not delivered is logged.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import orjson

from .._version import __version__
from ..config import App, WebhookTarget
from ..protocol.auth import webhook_signature
from .filters import target_wants
from .grace import CANCELLED_BY, HELD_FOR, GraceHold, Held

__all__ = ["USER_AGENT", "EventLogSink", "Poster", "WebhookSender"]

log = logging.getLogger("fastrelay.webhooks")

Poster = Callable[[str, bytes, Mapping[str, str]], Awaitable[int]]
"""``(url, body, headers) -> HTTP status``; raises on a network error or a timeout."""

EventLogSink = Callable[[App, str, dict[str, Any]], None]
"""``(app, "webhook_sent" | "webhook_failed", {"url", "status", "attempt", "events"})``."""

USER_AGENT = f"fastrelay/{__version__}"

# Custom headers may not replace these (compared lower-case: HTTP header names are not cased).
_PROTECTED_HEADERS = frozenset({"content-type", "x-pusher-key", "x-pusher-signature"})

_WARNING_INTERVAL = 10.0

LaneKey = tuple[str, str, tuple[tuple[str, str], ...]]


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _name(event: Any) -> Any:
    return event.get("name") if isinstance(event, dict) else type(event).__name__


class _State(enum.Enum):
    COLLECTING = "collecting"  # a lane's open batch buffer
    READY = "ready"  # in the lane's ready heap
    WAITING = "waiting"  # failed, retry timer running
    IN_FLIGHT = "in_flight"
    FINISHED = "finished"  # delivered, given up or dropped


class _Delivery:
    """One request-to-be: the events for one lane, sent (and retried) together."""

    __slots__ = ("app", "attempt", "due", "items", "lane", "retry", "seq", "state")

    def __init__(self, lane: _Lane, app: App, seq: int, state: _State) -> None:
        self.lane = lane
        self.app = app
        self.seq = seq
        self.state = state
        self.items: list[tuple[int, dict[str, Any]]] = []  # (time_ms, event)
        self.attempt = 0
        self.retry: asyncio.TimerHandle | None = None
        self.due = 0.0

    @property
    def time_ms(self) -> int:
        # The oldest event's: a released grace event may join a batch of newer ones.
        return min(t for t, _ in self.items)


class _Lane:
    """Everything bound for one (app id, URL, custom headers): its order and its worker."""

    __slots__ = ("batch", "batch_timer", "headers", "key", "ready", "url", "waiting", "worker")

    def __init__(self, key: LaneKey, target: WebhookTarget) -> None:
        self.key = key
        self.url = target.url
        self.headers = target.headers
        self.ready: list[tuple[int, _Delivery]] = []  # heap by seq = creation order
        self.batch: _Delivery | None = None
        self.batch_timer: asyncio.TimerHandle | None = None
        self.worker: asyncio.Task[None] | None = None
        self.waiting = 0  # deliveries with a retry timer running

    def idle(self) -> bool:
        return not self.ready and self.batch is None and self.worker is None and not self.waiting


class _Warnings:
    """Warnings rate-limited per kind, reporting how many were suppressed in between."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, kind: str, message: str, *args: Any) -> None:
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < _WARNING_INTERVAL:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message += " (%d similar warnings suppressed)"
            args = (*args, suppressed)
        log.warning(message, *args)


class WebhookSender:
    """Delivers an app's webhooks to its targets; :meth:`emit` is the hub's ``emit_webhook``."""

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        batching: bool = False,
        batching_ms: int = 50,
        grace_period: float = 3.0,
        poster: Poster | None = None,
        event_log: EventLogSink | None = None,
        retry_window: float = 280.0,
        max_pending: int = 10_000,
        wall_clock_ms: Callable[[], int] = _wall_clock_ms,
        backoff_base: float = 1.0,
        request_timeout: float = 10.0,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._loop = loop
        self._batching = batching
        self._batching_s = max(0, batching_ms) / 1000
        self._poster: Poster = poster if poster is not None else self._post
        self._default_poster = poster is None
        self._event_log = event_log
        self._retry_window_ms = retry_window * 1000
        self._max_pending = max_pending
        self._wall_clock_ms = wall_clock_ms
        self._backoff_base = backoff_base
        self._request_timeout = request_timeout
        self._grace = GraceHold(
            loop=loop, delay=grace_period, limit=max_pending, release=self._release
        )
        self._session: aiohttp.ClientSession | None = None
        self._lanes: dict[LaneKey, _Lane] = {}
        # Every unfinished delivery in creation order: the front holds the oldest, for drops.
        self._live: OrderedDict[int, _Delivery] = OrderedDict()
        self._seq = itertools.count()
        self._queued = 0
        self._in_flight = 0
        self._dropped = 0
        self._failed = 0
        self._closing = False
        self._closed = False
        self._deadline = math.inf
        self._idle: asyncio.Future[None] | None = None
        self._warnings = _Warnings(loop.time)

    # -- public ------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Events not yet delivered: held for grace, queued (or awaiting a retry), in flight."""
        return len(self._grace) + self._queued + self._in_flight

    @property
    def dropped(self) -> int:
        """Events dropped unsent: queue overflow (oldest first) or emitted after :meth:`close`."""
        return self._dropped

    @property
    def failed(self) -> int:
        """Events given up on: retry window exhausted, or still undelivered at shutdown."""
        return self._failed

    def emit(self, app: App, event: dict[str, Any]) -> None:
        """Queue one webhook event of ``app`` for its targets; never blocks, never raises."""
        if not app.webhooks:
            return
        try:
            if self._closed:
                self._dropped += 1
                self._warnings.warn(
                    "closed", "webhook %r emitted after close: dropped", _name(event)
                )
                return
            time_ms = self._wall_clock_ms()
            name = event.get("name")
            if self._grace.enabled and not self._closing:
                if name in CANCELLED_BY and self._grace.cancel(app, event):
                    return
                if name in HELD_FOR and self._wants_pair(app, name, event.get("channel")):
                    self._grace.hold(app, event, time_ms)
                    return
            self._route(app, event, time_ms)
        except Exception:
            # Only the name: event data may be private (RELAY_EXTRAS.md §5 never stores it).
            log.exception("webhook event dropped: %r", _name(event))

    async def start(self) -> None:
        """Open the HTTP client session (only for the default, aiohttp-based poster)."""
        if self._default_poster and self._session is None:
            self._session = self._new_session()

    async def close(self, timeout: float) -> None:
        """Send what is due and finish what is in flight within ``timeout`` seconds, then stop."""
        if self._closed or self._closing:
            return
        loop = self._loop
        self._closing = True
        self._deadline = loop.time() + max(0.0, timeout)
        try:
            # Nobody can come back to cancel a held event now, and nothing more will batch.
            self._grace.release_all()
            for lane in list(self._lanes.values()):
                self._flush_batch(lane)
            for delivery in list(self._live.values()):
                if delivery.state is _State.WAITING and delivery.due > self._deadline:
                    self._give_up(delivery, None)
            if self._queued + self._in_flight:
                self._idle = loop.create_future()
                remaining = max(0.0, self._deadline - loop.time())
                try:
                    await asyncio.wait_for(asyncio.shield(self._idle), remaining)
                except asyncio.TimeoutError:
                    pass
        finally:
            self._closed = True
            await self._stop_everything()
            if self._session is not None:
                session, self._session = self._session, None
                await session.close()

    # -- routing -----------------------------------------------------------------------------

    def _wants_pair(self, app: App, held_name: str, channel: Any) -> bool:
        # Hold only when some target cares about the departure or its arrival twin.
        arrival = HELD_FOR[held_name]
        return any(
            target_wants(t, held_name, channel) or target_wants(t, arrival, channel)
            for t in app.webhooks
        )

    def _release(self, held: Held) -> None:
        if not self._closed:
            self._route(held.app, held.event, held.time_ms)

    def _route(self, app: App, event: dict[str, Any], time_ms: int) -> None:
        name = event.get("name")
        channel = event.get("channel")
        seen: set[LaneKey] = set()
        for target in app.webhooks:
            if not target_wants(target, name, channel):
                continue
            key: LaneKey = (app.id, target.url, target.headers)
            if key in seen:  # two targets, same URL and headers: one copy
                continue
            seen.add(key)
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = _Lane(key, target)
            self._enqueue(lane, app, event, time_ms)
        if self._queued > self._max_pending:
            self._trim()

    def _enqueue(self, lane: _Lane, app: App, event: dict[str, Any], time_ms: int) -> None:
        if self._batching and not self._closing:
            delivery = lane.batch
            if delivery is None:
                delivery = lane.batch = self._new_delivery(lane, app, _State.COLLECTING)
                lane.batch_timer = self._loop.call_later(self._batching_s, self._flush_batch, lane)
            delivery.items.append((time_ms, event))
            self._queued += 1
            return
        delivery = self._new_delivery(lane, app, _State.READY)
        delivery.items.append((time_ms, event))
        self._queued += 1
        self._make_ready(delivery)

    def _new_delivery(self, lane: _Lane, app: App, state: _State) -> _Delivery:
        delivery = _Delivery(lane, app, next(self._seq), state)
        self._live[delivery.seq] = delivery
        return delivery

    def _flush_batch(self, lane: _Lane) -> None:
        if lane.batch_timer is not None:
            lane.batch_timer.cancel()
            lane.batch_timer = None
        delivery, lane.batch = lane.batch, None
        if delivery is not None and delivery.items:
            self._make_ready(delivery)
        else:
            self._forget_if_idle(lane)

    def _make_ready(self, delivery: _Delivery) -> None:
        delivery.state = _State.READY
        lane = delivery.lane
        heapq.heappush(lane.ready, (delivery.seq, delivery))
        if lane.worker is None and not self._closed:
            lane.worker = self._loop.create_task(self._drain(lane))

    # -- delivery ----------------------------------------------------------------------------

    async def _drain(self, lane: _Lane) -> None:
        """The lane's worker: one request at a time, oldest ready first, until none is ready."""
        try:
            while lane.ready:
                _, delivery = heapq.heappop(lane.ready)
                if delivery.state is not _State.READY:  # dropped while queued
                    continue
                try:
                    await self._attempt(delivery)
                except Exception:
                    # A bug must cost this request, not the lane: later webhooks still go.
                    log.exception("webhook delivery to %s failed unexpectedly", lane.url)
        finally:
            lane.worker = None
            self._forget_if_idle(lane)

    async def _attempt(self, delivery: _Delivery) -> None:
        lane = delivery.lane
        count = len(delivery.items)
        delivery.state = _State.IN_FLIGHT
        delivery.attempt += 1
        self._queued -= count
        self._in_flight += count
        events = [event for _, event in delivery.items]
        try:
            body = orjson.dumps({"time_ms": delivery.time_ms, "events": events})
        except orjson.JSONEncodeError:
            # Not JSON-serializable: no retry can fix that.
            log.exception("webhook to %s not serializable: %d event(s) dropped", lane.url, count)
            self._in_flight -= count
            self._failed += count
            self._finish(delivery)
            self._check_idle()
            return
        status: int | None = None
        try:
            headers = self._headers(lane, delivery.app, body)
            status = await asyncio.wait_for(
                self._poster(lane.url, body, headers), self._request_timeout
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("webhook to %s, attempt %d: %r", lane.url, delivery.attempt, exc)
        self._in_flight -= count
        sent = isinstance(status, int) and 200 <= status < 300
        if sent:
            self._finish(delivery)
        else:
            self._retry_later(delivery, status)
        self._report(delivery, sent, status, events)
        self._check_idle()

    def _retry_later(self, delivery: _Delivery, status: int | None) -> None:
        delay = self._backoff_base * 2 ** (delivery.attempt - 1)
        due = self._loop.time() + delay
        age_at_retry_ms = self._wall_clock_ms() + delay * 1000 - delivery.time_ms
        if age_at_retry_ms > self._retry_window_ms or due > self._deadline:
            self._give_up(delivery, status)
            return
        delivery.state = _State.WAITING
        delivery.due = due
        delivery.lane.waiting += 1
        delivery.retry = self._loop.call_later(delay, self._retry_due, delivery)
        self._queued += len(delivery.items)
        if self._queued > self._max_pending:
            self._trim()

    def _retry_due(self, delivery: _Delivery) -> None:
        delivery.retry = None
        delivery.lane.waiting -= 1
        if delivery.state is _State.WAITING:
            self._make_ready(delivery)

    def _give_up(self, delivery: _Delivery, status: int | None) -> None:
        count = len(delivery.items)
        if delivery.state is _State.WAITING:
            self._queued -= count
        self._failed += count
        self._warnings.warn(
            "gave_up",
            "webhook to %s given up after %d attempt(s) (last status %s): %d event(s) dropped",
            delivery.lane.url,
            delivery.attempt,
            status,
            count,
        )
        self._finish(delivery)

    def _finish(self, delivery: _Delivery) -> None:
        """Take a delivery out of every structure but the lane heap (the worker skips it)."""
        lane = delivery.lane
        if delivery.state is _State.WAITING:
            lane.waiting -= 1
            if delivery.retry is not None:
                delivery.retry.cancel()
                delivery.retry = None
        elif delivery.state is _State.COLLECTING and lane.batch is delivery:
            lane.batch = None
            if lane.batch_timer is not None:
                lane.batch_timer.cancel()
                lane.batch_timer = None
        delivery.state = _State.FINISHED
        self._live.pop(delivery.seq, None)
        self._forget_if_idle(lane)

    def _trim(self) -> None:
        """Drop the oldest queued events until at most ``max_pending`` remain (in flight stays)."""
        excess = self._queued - self._max_pending
        victims: list[_Delivery] = []
        needed = excess
        for delivery in self._live.values():
            if delivery.state is _State.IN_FLIGHT:
                continue
            victims.append(delivery)
            needed -= len(delivery.items)
            if needed <= 0:
                break
        dropped = 0
        for delivery in victims:
            take = min(excess - dropped, len(delivery.items))
            del delivery.items[:take]
            dropped += take
            if not delivery.items:
                self._finish(delivery)
        self._queued -= dropped
        self._dropped += dropped
        self._warnings.warn(
            "overflow",
            "webhook queue full (%d events): dropped the %d oldest, %d dropped in total",
            self._max_pending,
            dropped,
            self._dropped,
        )
        self._check_idle()

    def _forget_if_idle(self, lane: _Lane) -> None:
        if lane.idle() and self._lanes.get(lane.key) is lane:
            del self._lanes[lane.key]

    def _check_idle(self) -> None:
        if self._idle is not None and not self._idle.done() and not self._queued + self._in_flight:
            self._idle.set_result(None)

    def _headers(self, lane: _Lane, app: App, body: bytes) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        for name, value in lane.headers:
            lower = name.lower()
            if lower in _PROTECTED_HEADERS:
                continue
            for existing in [k for k in headers if k.lower() == lower]:
                del headers[existing]
            headers[name] = value
        headers["X-Pusher-Key"] = app.key
        headers["X-Pusher-Signature"] = webhook_signature(app, body)
        return headers

    def _report(
        self, delivery: _Delivery, sent: bool, status: int | None, events: list[dict[str, Any]]
    ) -> None:
        if self._event_log is None:
            return
        fields = {
            "url": delivery.lane.url,
            "status": status,
            "attempt": delivery.attempt,
            "events": [event.get("name") for event in events],
        }
        try:
            self._event_log(delivery.app, "webhook_sent" if sent else "webhook_failed", fields)
        except Exception:
            # The event log is a debugging aid: its failure must not stop deliveries.
            log.exception("webhook event log sink failed")

    # -- shutdown and HTTP -------------------------------------------------------------------

    async def _stop_everything(self) -> None:
        workers = [lane.worker for lane in self._lanes.values() if lane.worker is not None]
        for worker in workers:
            worker.cancel()
        for delivery in self._live.values():
            if delivery.retry is not None:
                delivery.retry.cancel()
        for lane in self._lanes.values():
            if lane.batch_timer is not None:
                lane.batch_timer.cancel()
        if workers:
            await asyncio.gather(*workers, return_exceptions=True)
        lost = self._queued + self._in_flight + len(self._grace)
        self._grace.release_all()  # _release ignores them once closed
        self._lanes.clear()
        self._live.clear()
        self._queued = self._in_flight = 0
        if lost:
            self._failed += lost
            log.warning("webhooks: %d event(s) not delivered before shutdown", lost)
        if self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    def _new_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._request_timeout))

    async def _post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """The default poster: one pooled aiohttp session for every URL."""
        if self._session is None:  # emitted before start(): open it on first use
            self._session = self._new_session()
        # No redirects: aiohttp turns a POST answered 301/302/303 into a body-less GET, whose 2xx
        # would count as delivered. A 3xx is a failure (retried, logged with its status).
        async with self._session.post(
            url, data=body, headers=dict(headers), allow_redirects=False
        ) as response:
            await response.read()  # read to the end so the connection goes back to the pool
            return response.status
