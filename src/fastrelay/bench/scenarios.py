"""The load scenarios: each connects its clients, drives traffic for bounded time, and returns a
plain dict of results (see :mod:`fastrelay.bench.report` for the shape).

Rate-stepped scenarios (``fanout``, ``multichannel``, ``client-events``) run one *step* per
entry of ``--rates``: a number is an open-loop pace (messages per second, sent on a schedule
whatever the server does), ``max`` a closed loop that keeps ``--window`` deliveries in flight
(messages sent but not yet delivered to every subscriber, counted per subscriber; at most
256 messages), i.e. the highest rate the server sustains without queueing. After each step the
tool waits (at most ``--drain`` seconds of no progress) for the last deliveries, then accounts
latency, loss, duplicates and reordering. A paced step that the server cannot keep up with
(loss, or publishes falling behind the schedule) ends the paced steps; ``max`` still runs.

Every step also reports the CPU used by the load generator (``time.process_time``) and, for a
server process on this machine, by the server (``/proc/<pid>/stat``), as a fraction of one core.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .client import DeliverySink, PusherSocket, bench_data, channel_auth, open_socket
from .progress import Progress
from .rest import PublishRequests, RestClient, RestError
from .stats import LatencyRecorder, OrderCounts
from .targets import Target, process_cpu_seconds, process_rss_bytes

__all__ = ["SCENARIOS", "Options", "Rate", "parse_rates", "run_scenario"]

Rate = float | str  # a number of messages per second, or "max"
EVENT = "bench"
CLIENT_EVENT = "client-bench"
CONNECTIONS_PER_SOURCE = 25_000  # loopback source addresses rotate past this many sockets


def parse_rates(text: str) -> tuple[Rate, ...]:
    """``"50,200,max"`` -> ``(50.0, 200.0, "max")``; raises ``ValueError``."""
    rates: list[Rate] = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part == "max":
            rates.append("max")
            continue
        value = float(part)
        if not value > 0:
            raise ValueError(f"a rate must be > 0, got {part}")
        rates.append(value)
    if not rates:
        raise ValueError("no rates given")
    return tuple(rates)


@dataclass(frozen=True, slots=True)
class Options:
    """Every knob of every scenario (the CLI fills it; defaults suit a 2-core machine)."""

    duration: float = 5.0  # seconds per step (rate steps; hold time of connections; rest)
    subscribers: int = 1000  # connections receiving messages (all channels together)
    channels: int = 10  # multichannel / client-events / connections: channels to spread over
    rates: tuple[Rate, ...] = (50.0, 200.0, 800.0, "max")
    window: int = 16000  # max step: deliveries in flight (16 publishes to 1,000 subscribers)
    publishers: int = 8  # REST connections of the publisher
    payload: int = 0  # extra bytes of padding in each message's data
    connections: int = 1000  # connections scenario
    connect_concurrency: int = 200  # handshakes in progress at once
    rest_connections: int = 16  # rest scenario: concurrent keep-alive connections
    churners: int = 40  # presence-churn: connections joining and leaving
    observers: int = 2  # presence-churn: members watching the churn
    drain: float = 3.0  # seconds without progress before a step's tail counts as lost
    load_warn: float = 0.9  # warn when the load generator uses this much of a core
    time_limit: float = 900.0  # seconds; no new step starts after this

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass
class Context:
    """One scenario against one target."""

    target: Target
    options: Options
    progress: Progress
    scenario: str
    started: float = field(default_factory=time.monotonic)
    warnings: list[str] = field(default_factory=list)

    def warn(self, text: str) -> None:
        text = f"{self.target.name} {self.scenario}: {text}"
        if text not in self.warnings:
            self.warnings.append(text)
        self.progress.warn(text)

    def over_time(self) -> bool:
        return time.monotonic() - self.started > self.options.time_limit

    def server_cpu(self) -> float | None:
        return process_cpu_seconds(self.target.pid) if self.target.pid else None

    def server_rss(self) -> int | None:
        return process_rss_bytes(self.target.pid) if self.target.pid else None

    def publish_requests(self) -> PublishRequests:
        t = self.target
        return PublishRequests(t.host, t.port, t.app_id, t.key, t.secret, t.prefix)

    def source_host(self, index: int) -> str | None:
        """Loopback source address for the ``index``-th socket, so that more sockets than one
        address has ephemeral ports can be opened; None (the default) for the first ones."""
        group = index // CONNECTIONS_PER_SOURCE
        if group == 0 or not self.target.host.startswith("127."):
            return None
        return f"127.0.{group // 250}.{group % 250 + 2}"


class CpuMeter:
    """CPU of this process and of the server over an interval, as fractions of one core."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._wall = time.monotonic()
        self._load = time.process_time()
        self._server = ctx.server_cpu()

    def read(self) -> tuple[float, float | None, float]:
        wall = max(time.monotonic() - self._wall, 1e-9)
        load = (time.process_time() - self._load) / wall
        server_now = self._ctx.server_cpu()
        server = None
        if server_now is not None and self._server is not None:
            server = (server_now - self._server) / wall
        return load, server, wall


@contextlib.contextmanager
def no_gc_pauses() -> Iterator[None]:
    """No cyclic garbage collection while measuring: the load generator allocates a few
    short-lived containers per message, and collector passes over the (frozen) long-lived
    client objects would show up as latency spikes that are the tool's, not the server's."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


# -- connecting ----------------------------------------------------------------------------


async def connect_many(
    ctx: Context,
    sink: DeliverySink,
    count: int,
    setup: Callable[[int, PusherSocket], Awaitable[None]],
    *,
    on_event: Callable[[PusherSocket, dict[str, Any]], None] | None = None,
    label: str = "connecting",
) -> tuple[list[PusherSocket], float]:
    """Open ``count`` sockets (``setup(i, sock)`` subscribes them), ``connect_concurrency`` at
    a time; returns them in index order and the elapsed seconds. Raises on the first failure."""
    target = ctx.target
    sockets: list[PusherSocket | None] = [None] * count
    next_index = 0
    done = 0
    started = time.monotonic()

    async def worker() -> None:
        nonlocal next_index, done
        while next_index < count:
            index = next_index
            next_index += 1
            sock = await open_socket(
                target.host,
                target.port,
                target.ws_path,
                sink,
                local_host=ctx.source_host(index),
                on_event=on_event,
            )
            sockets[index] = sock
            await setup(index, sock)
            done += 1
            elapsed = time.monotonic() - started
            ctx.progress.status(
                f"{target.name} {ctx.scenario}: {label} {done}/{count}"
                f" ({done / max(elapsed, 1e-9):,.0f}/s)"
            )

    workers = [
        asyncio.ensure_future(worker())
        for _ in range(max(1, min(ctx.options.connect_concurrency, count)))
    ]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        close_all([s for s in sockets if s is not None])
        raise
    return [s for s in sockets if s is not None], time.monotonic() - started


def close_all(sockets: Sequence[PusherSocket]) -> None:
    for sock in sockets:
        sock.close()


# -- emitters: where the messages of a rate step come from ----------------------------------


class RestEmitter:
    """Publishes through the HTTP API: ``publishers`` keep-alive connections, each a sequential
    worker with its own queue. A stream is a worker (one channel) or a channel (many channels,
    each always published by the same worker), so each stream's publishes are sequential."""

    def __init__(
        self,
        ctx: Context,
        channels: Sequence[str],
        receivers: Sequence[int],
        *,
        stream_per_channel: bool,
    ) -> None:
        self.ctx = ctx
        self.channels = list(channels)
        self.receivers = list(receivers)  # subscribers of each channel
        self.stream_per_channel = stream_per_channel
        count = max(1, ctx.options.publishers)
        self.requests = ctx.publish_requests()
        self.clients = [RestClient(ctx.target.host, ctx.target.port) for _ in range(count)]
        self.queues: list[deque[int]] = [deque() for _ in range(count)]
        self.wakers: list[asyncio.Event] = [asyncio.Event() for _ in range(count)]
        self.idle: list[asyncio.Event] = [asyncio.Event() for _ in range(count)]
        self.published: dict[int, int] = {}  # stream -> messages sent (next seq)
        self.emitted = 0
        self.sent = 0
        self.errors = 0
        self.padding = "x" * ctx.options.payload
        self._next = 0
        self._stopping = False
        self._tasks = [asyncio.ensure_future(self._worker(i)) for i in range(count)]

    @property
    def deliveries_per_message(self) -> float:
        return sum(self.receivers) / len(self.receivers)

    def expected_deliveries(self) -> int:
        if not self.stream_per_channel:
            return sum(self.published.values()) * self.receivers[0]
        return sum(count * self.receivers[s] for s, count in self.published.items())

    def backlog(self) -> int:
        return sum(len(q) for q in self.queues)

    def emit(self, count: int) -> None:
        workers = len(self.queues)
        for _ in range(count):
            job = self._next
            self._next += 1
            channel = job % len(self.channels)
            worker = channel % workers if self.stream_per_channel else job % workers
            self.queues[worker].append(channel)
            self.wakers[worker].set()
        self.emitted += count

    async def _worker(self, index: int) -> None:
        client = self.clients[index]
        queue = self.queues[index]
        waker = self.wakers[index]
        idle = self.idle[index]
        published = self.published
        build = self.requests.build
        while True:
            if not queue:
                idle.set()
                if self._stopping:
                    return
                waker.clear()
                await waker.wait()
                continue
            idle.clear()
            channel = queue.popleft()
            stream = channel if self.stream_per_channel else index
            seq = published.get(stream, 0)
            published[stream] = seq + 1
            data = bench_data(stream, seq, time.monotonic_ns(), self.padding)
            request = build(self.channels[channel], EVENT, data)
            try:
                status, body = await client.send(request)
            except RestError as exc:
                self.errors += 1
                self.ctx.progress.status(f"publish failed: {exc}", force=True)
                continue
            if status == 200:
                self.sent += 1
            else:
                # Refused, so not published: the stream's seq is free again (this worker is
                # the stream's only sender and has sent nothing since).
                published[stream] = seq
                self.errors += 1
                if self.errors <= 3:
                    self.ctx.warn(f"publish answered {status}: {body[:200]!r}")

    async def flush(self, timeout: float) -> bool:
        """Wait until every queued publish has been answered."""
        try:
            await asyncio.wait_for(
                asyncio.gather(*(self._until_idle(i) for i in range(len(self.queues)))), timeout
            )
        except asyncio.TimeoutError:
            return False
        return True

    async def _until_idle(self, index: int) -> None:
        while self.queues[index] or not self.idle[index].is_set():
            await self.idle[index].wait()
            if self.queues[index]:
                await asyncio.sleep(0.001)

    async def close(self) -> None:
        self._stopping = True
        for waker in self.wakers:
            waker.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self.clients:
            client.close()

    def extra(self) -> dict[str, Any]:
        return {
            "publish_errors": self.errors,
            "rest_reconnects": sum(c.reconnects for c in self.clients),
        }


class ClientEventEmitter:
    """Client events: the first member of each private channel sends, the others receive.
    A stream is a sender (one WebSocket connection, so its events are sequential)."""

    def __init__(self, ctx: Context, senders: Sequence[tuple[PusherSocket, str]], receivers: int):
        self.ctx = ctx
        self.senders = list(senders)
        self.receivers = receivers
        self.published: dict[int, int] = {}
        self.emitted = 0
        self.sent = 0
        self.padding = "x" * ctx.options.payload
        self._next = 0

    @property
    def deliveries_per_message(self) -> float:
        return float(self.receivers)

    def expected_deliveries(self) -> int:
        return sum(self.published.values()) * self.receivers

    def backlog(self) -> int:
        return 0

    def emit(self, count: int) -> None:
        senders = self.senders
        published = self.published
        padding = self.padding
        for _ in range(count):
            stream = self._next % len(senders)
            self._next += 1
            sock, channel = senders[stream]
            seq = published.get(stream, 0)
            published[stream] = seq + 1
            data = bench_data(stream, seq, time.monotonic_ns(), padding)
            sock.send_text(f'{{"event":"{CLIENT_EVENT}","channel":"{channel}","data":"{data}"}}')
        self.emitted += count
        self.sent += count

    async def flush(self, timeout: float) -> bool:
        return True

    async def close(self) -> None:
        return None

    def extra(self) -> dict[str, Any]:
        return {}


Emitter = RestEmitter | ClientEventEmitter


# -- rate steps ----------------------------------------------------------------------------


def order_counts(
    pairs: Sequence[tuple[PusherSocket, dict[int, int] | None]], emitter: Emitter
) -> OrderCounts:
    """Ordering and loss of every subscriber; ``published`` None means all of the emitter's
    streams reach that subscriber, else a ``{stream: count}`` filter is built from it."""
    total = OrderCounts()
    for sock, streams in pairs:
        published = (
            emitter.published
            if streams is None
            else {s: emitter.published.get(s, 0) for s in streams}
        )
        total = total + sock.tracker.counts(published)
    return total


async def run_steps(
    ctx: Context,
    sink: DeliverySink,
    emitter: Emitter,
    subscribers: Sequence[tuple[PusherSocket, Any]],
    unit: str,
) -> list[dict[str, Any]]:
    opts = ctx.options
    loop = asyncio.get_running_loop()
    steps: list[dict[str, Any]] = []
    saturated = False
    for rate in opts.rates:
        if ctx.over_time():
            ctx.warn(f"time limit reached; step {rate} and later skipped")
            break
        if rate != "max" and saturated:
            continue
        label = f"{rate:g}/s" if isinstance(rate, float) else "max"
        recorder = LatencyRecorder()
        sink.recorder = recorder
        before = order_counts(subscribers, emitter)
        delivered0, emitted0, sent0 = sink.delivered, emitter.emitted, emitter.sent
        disconnects0 = sink.disconnects
        meter = CpuMeter(ctx)
        t0 = loop.time()
        end = t0 + opts.duration
        monitor = asyncio.ensure_future(_monitor(ctx, sink, emitter, label, t0, end))
        with no_gc_pauses():
            try:
                if rate == "max":
                    await _closed_loop(ctx, sink, emitter, end)
                else:
                    await _paced(emitter, float(rate), end)
            finally:
                monitor.cancel()
            load_cpu, server_cpu, wall = meter.read()
            delivered1, sent1 = sink.delivered, emitter.sent
            backlog = emitter.backlog()
            await emitter.flush(opts.drain + opts.duration)
            await _drain(ctx, sink, emitter)
        after = order_counts(subscribers, emitter)
        counts = after - before
        published = emitter.sent - sent0
        summary = recorder.summary()
        step: dict[str, Any] = {
            "rate": rate if rate == "max" else float(rate),
            "seconds": round(wall, 3),
            f"{unit}_offered": emitter.emitted - emitted0,
            f"{unit}_sent": published,
            f"{unit}_per_s": round((sent1 - sent0) / wall, 1),
            "deliveries": counts.received,
            "deliveries_per_s": round((delivered1 - delivered0) / wall, 1),
            "latency_ms": summary.as_dict(),
            "lost": counts.lost,
            "duplicates": counts.duplicates,
            "reordered": counts.reordered,
            "disconnects": sink.disconnects - disconnects0,
            "backlog_at_end": backlog,
            "load_cpu": round(load_cpu, 3),
            "server_cpu": None if server_cpu is None else round(server_cpu, 3),
            # CPU time per delivery: unlike rates, not skewed by other work on the machine.
            "load_us_per_delivery": _per(load_cpu * wall, delivered1 - delivered0),
            "server_us_per_delivery": None
            if server_cpu is None
            else _per(server_cpu * wall, delivered1 - delivered0),
        }
        if recorder.dropped:
            step["latency_samples_dropped"] = recorder.dropped
        steps.append(step)
        ctx.progress.say(
            f"{ctx.target.name} {ctx.scenario} {label}: {step[f'{unit}_per_s']:,.0f} {unit}/s,"
            f" {step['deliveries_per_s']:,.0f} deliveries/s, p50 {summary.p50:.2f} ms,"
            f" p99 {summary.p99:.2f} ms, lost {counts.lost}, dup {counts.duplicates},"
            f" reordered {counts.reordered}, load cpu {load_cpu:.0%}"
            + ("" if server_cpu is None else f", server cpu {server_cpu:.0%}")
        )
        if load_cpu >= opts.load_warn:
            ctx.warn(
                f"step {label}: the load generator used {load_cpu:.0%} of a core, so this step"
                " may measure the load tool rather than the server"
            )
        if rate != "max" and (
            counts.lost
            or sink.disconnects > disconnects0
            or (sent1 - sent0) < 0.9 * float(rate) * wall
            or backlog > float(rate) * 0.5
        ):
            saturated = True
            ctx.progress.say(f"{ctx.target.name} {ctx.scenario}: saturated at {label}")
    return steps


def _per(cpu_seconds: float, count: int) -> float | None:
    """Microseconds of CPU per item."""
    return round(cpu_seconds / count * 1e6, 2) if count > 0 else None


async def _paced(emitter: Emitter, rate: float, end: float) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    while True:
        now = loop.time()
        if now >= end:
            return
        due = int((now - start) * rate) + 1 - sent
        if due > 0:
            emitter.emit(due)
            sent += due
        wake = min(start + sent / rate, end)
        await asyncio.sleep(max(0.0, wake - loop.time()))


async def _closed_loop(ctx: Context, sink: DeliverySink, emitter: Emitter, end: float) -> None:
    loop = asyncio.get_running_loop()
    per = emitter.deliveries_per_message
    window = max(1, min(256, round(ctx.options.window / per)))  # messages in flight
    base = sink.delivered  # deliveries counted against this step's messages start here
    emitted = 0
    while True:
        now = loop.time()
        if now >= end:
            return
        in_flight = emitted - (sink.delivered - base) / per
        allowed = int(window - in_flight)
        if allowed > 0:
            emitter.emit(allowed)
            emitted += allowed
            await asyncio.sleep(0)
            continue
        threshold = base + int((emitted - window + 1) * per)
        if not await sink.wait_for(threshold, min(1.0, end - now)) and loop.time() < end:
            # Deliveries stalled for a second: count what is missing as lost, go on.
            base = sink.delivered - int((emitted - window / 2) * per)


async def _drain(ctx: Context, sink: DeliverySink, emitter: Emitter) -> None:
    """Wait for the deliveries still due, until ``drain`` seconds pass without progress."""
    while True:
        target = emitter.expected_deliveries()
        if sink.delivered >= target:
            return
        before = sink.delivered
        await sink.wait_for(target, ctx.options.drain)
        if sink.delivered == before:
            return


async def _monitor(
    ctx: Context, sink: DeliverySink, emitter: Emitter, label: str, t0: float, end: float
) -> None:
    loop = asyncio.get_running_loop()
    last_t, last_d = loop.time(), sink.delivered
    meter = CpuMeter(ctx)
    while True:
        await asyncio.sleep(0.5)
        now = loop.time()
        rate = (sink.delivered - last_d) / max(now - last_t, 1e-9)
        last_t, last_d = now, sink.delivered
        load, server, _ = meter.read()
        meter = CpuMeter(ctx)
        ctx.progress.status(
            f"{ctx.target.name} {ctx.scenario} {label}: {now - t0:4.1f}/{end - t0:.0f} s,"
            f" {rate:,.0f} deliveries/s, backlog {emitter.backlog()}, load cpu {load:.0%}"
            + ("" if server is None else f", server cpu {server:.0%}")
        )


def _headline(steps: list[dict[str, Any]], unit: str) -> dict[str, Any]:
    clean = [s for s in steps if not (s["lost"] or s["duplicates"] or s["reordered"])]
    best = max(clean, key=lambda s: s["deliveries_per_s"], default=None)
    paced = [s for s in steps if s["rate"] != "max"]
    first = paced[0] if paced else None
    maximum = next((s for s in steps if s["rate"] == "max"), None)
    return {
        "deliveries_per_s": best["deliveries_per_s"] if best else 0.0,
        f"max_{unit}_per_s": best[f"{unit}_per_s"] if best else 0.0,
        "low_rate": first["rate"] if first else None,
        "p99_ms_low_rate": first["latency_ms"]["p99"] if first else None,
        "p99_ms_max_rate": maximum["latency_ms"]["p99"] if maximum else None,
        "server_us_per_delivery_max_rate": maximum["server_us_per_delivery"] if maximum else None,
        "lost": sum(s["lost"] for s in steps),
        "duplicates": sum(s["duplicates"] for s in steps),
        "reordered": sum(s["reordered"] for s in steps),
        "disconnects": sum(s["disconnects"] for s in steps),
    }


# -- scenarios -----------------------------------------------------------------------------


async def fanout(ctx: Context) -> dict[str, Any]:
    """``--subscribers`` on one public channel; REST publishes stepped through ``--rates``."""
    opts = ctx.options
    sink = DeliverySink()
    channel = "bench-fanout"

    async def setup(_index: int, sock: PusherSocket) -> None:
        await sock.subscribe(channel)

    sockets, elapsed = await connect_many(ctx, sink, opts.subscribers, setup)
    emitter = RestEmitter(ctx, [channel], [len(sockets)], stream_per_channel=False)
    try:
        steps = await run_steps(ctx, sink, emitter, [(s, None) for s in sockets], "publishes")
    finally:
        await emitter.close()
        close_all(sockets)
    return {
        "setup": {
            "subscribers": len(sockets),
            "channels": 1,
            "connect_seconds": round(elapsed, 3),
            **emitter.extra(),
        },
        "steps": steps,
        "summary": _headline(steps, "publishes"),
        "errors": sink.errors,
    }


def _spread(total: int, groups: int) -> list[int]:
    base, extra = divmod(total, groups)
    return [base + (1 if i < extra else 0) for i in range(groups)]


async def multichannel(ctx: Context) -> dict[str, Any]:
    """``--subscribers`` spread over ``--channels`` public channels; REST publishes round-robin
    over the channels; each channel is one stream."""
    opts = ctx.options
    groups = max(1, min(opts.channels, opts.subscribers))
    sink = DeliverySink()
    names = [f"bench-multi-{c}" for c in range(groups)]
    sizes = _spread(opts.subscribers, groups)
    owner = [c for c, size in enumerate(sizes) for _ in range(size)]

    async def setup(index: int, sock: PusherSocket) -> None:
        await sock.subscribe(names[owner[index]])

    sockets, elapsed = await connect_many(ctx, sink, opts.subscribers, setup)
    emitter = RestEmitter(ctx, names, sizes, stream_per_channel=True)
    try:
        steps = await run_steps(
            ctx, sink, emitter, [(s, (owner[i],)) for i, s in enumerate(sockets)], "publishes"
        )
    finally:
        await emitter.close()
        close_all(sockets)
    return {
        "setup": {
            "subscribers": len(sockets),
            "channels": groups,
            "connect_seconds": round(elapsed, 3),
            **emitter.extra(),
        },
        "steps": steps,
        "summary": _headline(steps, "publishes"),
        "errors": sink.errors,
    }


async def client_events(ctx: Context) -> dict[str, Any]:
    """``--channels`` private channels sharing ``--subscribers`` members; the first member of
    each channel sends client events (stepped through ``--rates``, in total), the rest receive."""
    opts = ctx.options
    groups = max(1, min(opts.channels, opts.subscribers // 2))
    if opts.subscribers < 2:
        raise ValueError("client-events needs --subscribers >= 2")
    sink = DeliverySink()
    names = [f"private-bench-{c}" for c in range(groups)]
    sizes = _spread(opts.subscribers, groups)
    owner = [c for c, size in enumerate(sizes) for _ in range(size)]
    secret = ctx.target.secret.encode()
    key = ctx.target.key

    async def setup(index: int, sock: PusherSocket) -> None:
        channel = names[owner[index]]
        await sock.subscribe(channel, auth=channel_auth(key, secret, sock.socket_id, channel))

    sockets, elapsed = await connect_many(ctx, sink, opts.subscribers, setup)
    first = {}
    for i, sock in enumerate(sockets):
        first.setdefault(owner[i], (i, sock))
    senders = [(first[c][1], names[c]) for c in range(groups)]
    sender_ids = {first[c][0] for c in range(groups)}
    receivers = min(sizes) - 1
    if min(sizes) != max(sizes):
        ctx.warn(
            "--subscribers is not a multiple of --channels; the max step's window is approximate"
        )
    emitter = ClientEventEmitter(ctx, senders, receivers)
    subscribers = [(s, (owner[i],)) for i, s in enumerate(sockets) if i not in sender_ids]
    try:
        steps = await run_steps(ctx, sink, emitter, subscribers, "events")
    finally:
        close_all(sockets)
    return {
        "setup": {
            "members": len(sockets),
            "channels": groups,
            "senders": groups,
            "connect_seconds": round(elapsed, 3),
        },
        "steps": steps,
        "summary": _headline(steps, "events"),
        "errors": sink.errors,
    }


async def connections(ctx: Context) -> dict[str, Any]:
    """``--connections`` idle connections, each subscribed to one of ``--channels`` public
    channels: connect rate, and the server's resident memory per connection."""
    opts = ctx.options
    sink = DeliverySink()
    groups = max(1, opts.channels)
    names = [f"bench-idle-{c}" for c in range(groups)]
    await asyncio.sleep(0.5)
    rss0 = ctx.server_rss()
    meter = CpuMeter(ctx)

    async def setup(index: int, sock: PusherSocket) -> None:
        await sock.subscribe(names[index % groups])

    sockets, elapsed = await connect_many(ctx, sink, opts.connections, setup)
    load_cpu, server_cpu, _ = meter.read()
    try:
        await asyncio.sleep(min(1.0, opts.duration))
        rss1 = ctx.server_rss()
        hold_end = time.monotonic() + max(0.0, opts.duration - 1.0)
        while time.monotonic() < hold_end:
            alive = sum(1 for s in sockets if not s.closed)
            ctx.progress.status(
                f"{ctx.target.name} connections: holding {alive:,} idle connections"
                f" ({hold_end - time.monotonic():.0f} s left)"
            )
            await asyncio.sleep(min(0.5, max(0.0, hold_end - time.monotonic())))
        rss2 = ctx.server_rss()
        alive = sum(1 for s in sockets if not s.closed)
    finally:
        close_all(sockets)
    count = len(sockets)
    rss_end = rss2 if rss2 is not None else rss1
    per_conn = None
    if rss0 is not None and rss_end is not None and count:
        per_conn = round((rss_end - rss0) / count, 1)
    if rss0 is None:
        ctx.warn("server memory not measured: the server is not a local process (give ?pid=N)")
    result_summary = {
        "connections": count,
        "connects_per_s": round(count / max(elapsed, 1e-9), 1),
        "rss_per_connection_bytes": per_conn,
        "alive_at_end": alive,
        "disconnects": sink.disconnects,
    }
    ctx.progress.say(
        f"{ctx.target.name} connections: {count:,} in {elapsed:.2f} s"
        f" ({result_summary['connects_per_s']:,.0f}/s), alive at end {alive:,}"
        + ("" if per_conn is None else f", server RSS {per_conn:,.0f} bytes per connection")
    )
    if load_cpu >= opts.load_warn:
        ctx.warn(
            f"connecting used {load_cpu:.0%} of a load core: the connect rate may be the tool's"
        )
    return {
        "setup": {"connections": count, "channels": groups, "connect_seconds": round(elapsed, 3)},
        "steps": [
            {
                "rss_before_bytes": rss0,
                "rss_connected_bytes": rss1,
                "rss_end_bytes": rss2,
                "connect_load_cpu": round(load_cpu, 3),
                "connect_server_cpu": None if server_cpu is None else round(server_cpu, 3),
            }
        ],
        "summary": result_summary,
        "errors": sink.errors,
    }


async def rest(ctx: Context) -> dict[str, Any]:
    """Signed publishes as fast as ``--rest-connections`` sequential keep-alive clients go, to a
    channel with no subscribers: the cost of the HTTP API itself."""
    opts = ctx.options
    requests = ctx.publish_requests()
    clients = [RestClient(ctx.target.host, ctx.target.port) for _ in range(opts.rest_connections)]
    recorder = LatencyRecorder()
    data = "x" * max(1, opts.payload)
    ok = 0
    failed = 0
    statuses: dict[int, int] = {}
    loop = asyncio.get_running_loop()
    meter = CpuMeter(ctx)
    t0 = loop.time()
    end = t0 + opts.duration

    async def worker(client: RestClient) -> None:
        nonlocal ok, failed
        samples = recorder.samples
        cached = requests.cached
        while loop.time() < end:
            request = cached("bench-rest", EVENT, data)
            sent = time.monotonic_ns()
            try:
                status, _body = await client.send(request)
            except RestError:
                failed += 1
                await asyncio.sleep(0.01)
                continue
            samples.append(time.monotonic_ns() - sent)
            if status == 200:
                ok += 1
            else:
                failed += 1
                statuses[status] = statuses.get(status, 0) + 1

    async def monitor() -> None:
        last_t, last_ok = t0, 0
        while True:
            await asyncio.sleep(0.5)
            now = loop.time()
            ctx.progress.status(
                f"{ctx.target.name} rest: {now - t0:4.1f}/{opts.duration:.0f} s,"
                f" {(ok - last_ok) / max(now - last_t, 1e-9):,.0f} publishes/s"
            )
            last_t, last_ok = now, ok

    watcher = asyncio.ensure_future(monitor())
    try:
        with no_gc_pauses():
            await asyncio.gather(*(worker(c) for c in clients))
    finally:
        watcher.cancel()
        for client in clients:
            client.close()
    load_cpu, server_cpu, wall = meter.read()
    summary = recorder.summary()
    reconnects = sum(c.reconnects for c in clients)
    step = {
        "seconds": round(wall, 3),
        "publishes": ok,
        "publishes_per_s": round(ok / wall, 1),
        "failed": failed,
        "statuses": {str(k): v for k, v in statuses.items()},
        "reconnects": reconnects,
        "latency_ms": summary.as_dict(),
        "load_cpu": round(load_cpu, 3),
        "server_cpu": None if server_cpu is None else round(server_cpu, 3),
        "server_us_per_publish": None if server_cpu is None else _per(server_cpu * wall, ok),
    }
    ctx.progress.say(
        f"{ctx.target.name} rest: {step['publishes_per_s']:,.0f} publishes/s over"
        f" {opts.rest_connections} connections, p50 {summary.p50:.2f} ms, p99 {summary.p99:.2f} ms,"
        f" failed {failed}, reconnects {reconnects}, load cpu {load_cpu:.0%}"
        + ("" if server_cpu is None else f", server cpu {server_cpu:.0%}")
    )
    if load_cpu >= opts.load_warn:
        ctx.warn(f"the load generator used {load_cpu:.0%} of a core: publishes/s may be the tool's")
    if failed:
        ctx.warn(f"{failed} publishes failed (statuses {statuses})")
    return {
        "setup": {"connections": opts.rest_connections},
        "steps": [step],
        "summary": {
            "publishes_per_s": step["publishes_per_s"],
            "p50_ms": round(summary.p50, 3),
            "p99_ms": round(summary.p99, 3),
            "failed": failed,
            "reconnects": reconnects,
            "server_us_per_publish": step["server_us_per_publish"],
        },
        "errors": [],
    }


@dataclass
class _Observer:
    added: int = 0
    removed: int = 0
    members: set[str] = field(default_factory=set)
    bad: int = 0  # member_removed for someone not present, or member_added twice


async def presence_churn(ctx: Context) -> dict[str, Any]:
    """``--churners`` connections join and leave one presence channel as fast as they can (one
    join in flight each) while ``--observers`` members watch: joins/s, join latency, and whether
    every observer saw one member_added and one member_removed per join."""
    opts = ctx.options
    channel = "presence-bench"
    if opts.churners + opts.observers > 100:
        ctx.warn("more than 100 members at once: servers cap presence channels at 100 by default")
    sink = DeliverySink()
    key = ctx.target.key
    secret = ctx.target.secret.encode()
    observers: dict[PusherSocket, _Observer] = {}

    def on_event(sock: PusherSocket, message: dict[str, Any]) -> None:
        state = observers.get(sock)
        if state is None or message.get("channel") != channel:
            return
        event = message.get("event")
        data = message.get("data")
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError:
                data = {}
        user = str(data.get("user_id")) if isinstance(data, dict) else ""
        if event == "pusher_internal:member_added":
            state.added += 1
            if user in state.members:
                state.bad += 1
            state.members.add(user)
        elif event == "pusher_internal:member_removed":
            state.removed += 1
            if user not in state.members:
                state.bad += 1
            state.members.discard(user)

    def member(user_id: str) -> str:
        return json.dumps({"user_id": user_id, "user_info": {}}, separators=(",", ":"))

    async def join(sock: PusherSocket, user_id: str) -> Any:
        data = member(user_id)
        auth = channel_auth(key, secret, sock.socket_id, channel, data)
        return await sock.subscribe(channel, auth=auth, channel_data=data)

    async def no_setup(_index: int, _sock: PusherSocket) -> None:
        return None

    watchers, _ = await connect_many(
        ctx, sink, opts.observers, no_setup, on_event=on_event, label="observers"
    )
    for index, sock in enumerate(watchers):
        # One after the other: observer i then sees exactly the observers after it join.
        observers[sock] = _Observer()
        await join(sock, f"observer-{index}")

    churners, elapsed = await connect_many(ctx, sink, opts.churners, no_setup, label="churners")
    loop = asyncio.get_running_loop()
    recorder = LatencyRecorder()
    joins = 0
    failures = 0
    meter = CpuMeter(ctx)
    t0 = loop.time()
    end = t0 + opts.duration

    async def churn(index: int, sock: PusherSocket) -> None:
        nonlocal joins, failures
        round_ = 0
        while loop.time() < end and not sock.closed:
            started = time.monotonic_ns()
            try:
                await join(sock, f"churn-{index}-{round_}")
            except Exception as exc:
                failures += 1
                sink.error(f"join failed: {exc}")
                return
            recorder.add(time.monotonic_ns() - started)
            joins += 1
            sock.unsubscribe(channel)
            round_ += 1
            if joins % 200 == 0:
                ctx.progress.status(
                    f"{ctx.target.name} presence-churn: {loop.time() - t0:4.1f} s,"
                    f" {joins / max(loop.time() - t0, 1e-9):,.0f} joins/s"
                )

    try:
        with no_gc_pauses():
            await asyncio.gather(*(churn(i, s) for i, s in enumerate(churners)))
        load_cpu, server_cpu, wall = meter.read()
        # Every join must reach every observer as one member_added and one member_removed.
        for _ in range(int(opts.drain / 0.05) + 1):
            if all(
                s.added >= joins + len(watchers) - 1 - i and s.removed >= joins
                for i, s in enumerate(observers.values())
            ):
                break
            await asyncio.sleep(0.05)
    finally:
        close_all(churners)
        close_all(watchers)
    summary = recorder.summary()
    observed = []
    consistent = failures == 0
    for i, state in enumerate(observers.values()):
        # Observer i saw the observers that joined after it, then every churn join and leave.
        later = {f"observer-{j}" for j in range(i + 1, len(watchers))}
        ok = (
            state.added == joins + len(later)
            and state.removed == joins
            and state.bad == 0
            and state.members == later
        )
        consistent = consistent and ok
        observed.append(
            {"added": state.added, "removed": state.removed, "bad": state.bad, "consistent": ok}
        )
    step = {
        "seconds": round(wall, 3),
        "joins": joins,
        "joins_per_s": round(joins / wall, 1),
        "join_latency_ms": summary.as_dict(),
        "failures": failures,
        "observers": observed,
        "load_cpu": round(load_cpu, 3),
        "server_cpu": None if server_cpu is None else round(server_cpu, 3),
    }
    ctx.progress.say(
        f"{ctx.target.name} presence-churn: {step['joins_per_s']:,.0f} joins/s, join p50"
        f" {summary.p50:.2f} ms, p99 {summary.p99:.2f} ms, member events"
        f" {'consistent' if consistent else 'INCONSISTENT'}, load cpu {load_cpu:.0%}"
        + ("" if server_cpu is None else f", server cpu {server_cpu:.0%}")
    )
    if not consistent:
        ctx.warn(f"member events inconsistent: {observed}")
    if load_cpu >= opts.load_warn:
        ctx.warn(f"the load generator used {load_cpu:.0%} of a core: joins/s may be the tool's")
    return {
        "setup": {
            "churners": len(churners),
            "observers": len(watchers),
            "connect_seconds": round(elapsed, 3),
        },
        "steps": [step],
        "summary": {
            "joins_per_s": step["joins_per_s"],
            "join_p99_ms": round(summary.p99, 3),
            "consistent": consistent,
        },
        "errors": sink.errors,
    }


SCENARIOS: dict[str, Callable[[Context], Awaitable[dict[str, Any]]]] = {
    "fanout": fanout,
    "multichannel": multichannel,
    "connections": connections,
    "rest": rest,
    "client-events": client_events,
    "presence-churn": presence_churn,
}


async def run_scenario(
    name: str, target: Target, options: Options, progress: Progress
) -> dict[str, Any]:
    """Run one scenario against a started target; returns its result dict."""
    ctx = Context(target=target, options=options, progress=progress, scenario=name)
    progress.say(f"== {name} against {target.name} ({target.host}:{target.port})")
    started = time.monotonic()
    result = await SCENARIOS[name](ctx)
    progress.clear()
    return {
        "scenario": name,
        "target": target.describe(),
        "seconds": round(time.monotonic() - started, 3),
        **result,
        "warnings": ctx.warnings,
    }
