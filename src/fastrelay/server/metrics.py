"""Prometheus metrics: plain counters on the hot path, read by prometheus-client at scrape time.

The hot path never calls prometheus-client. Each app has one :class:`Counters` object whose
integer attributes the WebSocket and HTTP layers bump (``counters.ws_messages_received += 1``);
a fan-out adds ``frames × len(frame)`` once per delivery, not once per recipient. At scrape time
:class:`MetricsCollector` turns the counters into metric families named after soketi's
(HTTP_API.md §3.8) under a configurable prefix, labelled ``app_id`` and ``port``.

:class:`MetricsServer` serves them on their own port (soketi's metrics server): ``GET /`` →
``OK``, ``/ready`` (503 while draining), ``/usage`` (memory) and ``/metrics`` (Prometheus text,
``?json=1`` → JSON).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector, exposition, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UnknownMetricFamily,
)

from ..hub.state import Client
from ..wire.frames import OP_TEXT, encode_frame

__all__ = [
    "LATENCY_BUCKETS",
    "Counters",
    "CountingClient",
    "Metrics",
    "MetricsCollector",
    "MetricsServer",
    "memory_usage",
]

log = logging.getLogger("fastrelay.metrics")

# prometheus-client's default histogram buckets (seconds).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_CONTENT_TYPE = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", exposition.CONTENT_TYPE_LATEST)


class Counters:
    """One app's counters: plain integers, bumped in place by the I/O layers."""

    __slots__ = (
        "adapter_latency_buckets",
        "adapter_latency_count",
        "adapter_latency_sum",
        "http_calls_received",
        "http_received_bytes",
        "http_transmitted_bytes",
        "new_connections",
        "new_disconnections",
        "socket_received_bytes",
        "socket_transmitted_bytes",
        "webhook_attempts",
        "webhook_failures",
        "ws_messages_received",
        "ws_messages_sent",
    )

    def __init__(self) -> None:
        self.new_connections = 0
        self.new_disconnections = 0
        self.socket_received_bytes = 0
        self.socket_transmitted_bytes = 0
        self.ws_messages_received = 0
        self.ws_messages_sent = 0
        self.http_received_bytes = 0
        self.http_transmitted_bytes = 0
        self.http_calls_received = 0
        self.webhook_attempts = 0
        self.webhook_failures = 0
        # Non-cumulative counts per bucket of LATENCY_BUCKETS, plus one for +Inf.
        self.adapter_latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.adapter_latency_count = 0
        self.adapter_latency_sum = 0.0

    def observe_adapter_latency(self, seconds: float) -> None:
        """Record one adapter round trip (a cluster query: Redis with RELAY_REDIS_URL)."""
        index = 0
        for bound in LATENCY_BUCKETS:
            if seconds <= bound:
                break
            index += 1
        self.adapter_latency_buckets[index] += 1
        self.adapter_latency_count += 1
        self.adapter_latency_sum += seconds


class Metrics:
    """The counters of this node's apps.

    Only apps the app manager knows get counters (:meth:`add_app` at start and on reload; the
    WebSocket layer after its handshake found the app), so a client cannot add label values by
    naming made-up app ids.
    """

    def __init__(self) -> None:
        self.apps: dict[str, Counters] = {}
        # Bytes of connections refused before their app was known: counted, never exposed.
        self.unattributed = Counters()

    def add_app(self, app_id: str) -> None:
        self.for_app(app_id)

    def remove_app(self, app_id: str) -> None:
        """Stop exposing an app's series (a reload removed it)."""
        self.apps.pop(app_id, None)

    def for_app(self, app_id: str) -> Counters:
        counters = self.apps.get(app_id)
        if counters is None:
            counters = self.apps[app_id] = Counters()
        return counters

    def sent(self, app_id: str, frames: int, nbytes: int) -> None:
        """The hub's fan-out hook: ``frames`` copies of one frame, ``nbytes`` in all."""
        counters = self.apps.get(app_id)
        if counters is not None:
            counters.ws_messages_sent += frames
            counters.socket_transmitted_bytes += nbytes

    def adapter_latency(self, app_id: str, seconds: float) -> None:
        """The cluster adapter's hook: one query round trip for the app took ``seconds``."""
        counters = self.apps.get(app_id)
        if counters is not None:
            counters.observe_adapter_latency(seconds)

    def http_call(self, app_id: str, received: int, transmitted: int) -> None:
        counters = self.apps.get(app_id)
        if counters is not None:
            counters.http_calls_received += 1
            counters.http_received_bytes += received
            counters.http_transmitted_bytes += transmitted

    def webhook_attempt(self, app_id: str, failed: bool) -> None:
        counters = self.apps.get(app_id)
        if counters is not None:
            counters.webhook_attempts += 1
            if failed:
                counters.webhook_failures += 1


class CountingClient(Client):
    """A hub :class:`Client` that counts what is sent to this connection alone.

    Fan-out deliveries bypass :meth:`send` (the hub writes to the outlet) and are counted by
    :meth:`Metrics.sent`; this covers the rest: subscription answers, pongs, errors.
    """

    __slots__ = ("counters",)

    def __init__(self, *args: Any, counters: Counters) -> None:
        super().__init__(*args)
        self.counters = counters

    def send(self, message: bytes) -> bool:
        # Client.send's body, inlined: a super() call would cost more than the counting.
        frame = encode_frame(OP_TEXT, message)
        if not self.outlet.send(frame):
            return False
        counters = self.counters
        counters.ws_messages_sent += 1
        counters.socket_transmitted_bytes += len(frame)
        return True


# (attribute of Counters, metric name after the prefix, family class, help)
_COUNTERS: tuple[tuple[str, str, type[Metric], str], ...] = (
    (
        "new_connections",
        "new_connections_total",
        CounterMetricFamily,
        "Total amount of connection requests.",
    ),
    (
        "new_disconnections",
        "new_disconnections_total",
        CounterMetricFamily,
        "Total amount of disconnections.",
    ),
    # soketi's byte counters have no _total suffix, and prometheus-client would add one to a
    # counter: they are exposed untyped to keep the names soketi dashboards query.
    (
        "socket_received_bytes",
        "socket_received_bytes",
        UnknownMetricFamily,
        "Total amount of bytes received over WebSockets.",
    ),
    (
        "socket_transmitted_bytes",
        "socket_transmitted_bytes",
        UnknownMetricFamily,
        "Total amount of bytes sent over WebSockets.",
    ),
    (
        "ws_messages_received",
        "ws_messages_received_total",
        CounterMetricFamily,
        "The total amount of WS messages received from connections by the server.",
    ),
    (
        "ws_messages_sent",
        "ws_messages_sent_total",
        CounterMetricFamily,
        "The total amount of WS messages sent to the connections from the server.",
    ),
    (
        "http_received_bytes",
        "http_received_bytes",
        UnknownMetricFamily,
        "Total amount of bytes the HTTP API received (request bodies).",
    ),
    (
        "http_transmitted_bytes",
        "http_transmitted_bytes",
        UnknownMetricFamily,
        "Total amount of bytes the HTTP API sent back (response bodies).",
    ),
    (
        "http_calls_received",
        "http_calls_received_total",
        CounterMetricFamily,
        "Total amount of received REST API calls.",
    ),
    (
        "webhook_attempts",
        "webhook_attempts_total",
        CounterMetricFamily,
        "Webhook requests sent, retries included.",
    ),
    (
        "webhook_failures",
        "webhook_failures_total",
        CounterMetricFamily,
        "Webhook requests that failed (network error, timeout or a non-2xx status).",
    ),
)
_LABELS = ("app_id", "port")


class MetricsCollector:
    """A prometheus-client collector reading :class:`Metrics` when scraped."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        prefix: str,
        port: Callable[[], int],
        connected: Callable[[str], int],
    ) -> None:
        self._metrics = metrics
        self._prefix = prefix
        self._port = port
        self._connected = connected

    def collect(self) -> Iterator[Metric]:
        prefix = self._prefix
        port = str(self._port())
        rows = sorted(self._metrics.apps.items())
        connected = GaugeMetricFamily(
            prefix + "connected",
            "The number of currently connected sockets.",
            labels=_LABELS,
        )
        for app_id, _counters in rows:
            connected.add_metric((app_id, port), self._connected(app_id))
        yield connected
        for attribute, name, family_class, help_text in _COUNTERS:
            family = family_class(prefix + name, help_text, labels=_LABELS)
            for app_id, counters in rows:
                family.add_metric((app_id, port), getattr(counters, attribute))
            yield family
        latency = HistogramMetricFamily(
            prefix + "adapter_latency_seconds",
            "Time the adapter took to answer a query across nodes (single node: never observed).",
            labels=_LABELS,
        )
        for app_id, counters in rows:
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            bounds = (*(repr(b) for b in LATENCY_BUCKETS), "+Inf")
            for bound, count in zip(bounds, counters.adapter_latency_buckets, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            latency.add_metric((app_id, port), buckets, counters.adapter_latency_sum)
        yield latency


def _as_json(registry: CollectorRegistry) -> list[dict[str, Any]]:
    """The registry as prom-client's ``getMetricsAsJSON()`` shapes it (soketi's ``?json=1``)."""
    result = []
    for family in registry.collect():
        kind = "untyped" if family.type == "unknown" else family.type
        name = family.name + "_total" if family.type == "counter" else family.name
        result.append(
            {
                "name": name,
                "help": family.documentation,
                "type": kind,
                "values": [
                    {"value": sample.value, "labels": sample.labels, "metricName": sample.name}
                    for sample in family.samples
                ],
            }
        )
    return result


def memory_usage() -> dict[str, float]:
    """soketi's ``/usage`` block: this process's resident set against physical memory."""
    used = 0
    total = 0
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total = os.sysconf("SC_PHYS_PAGES") * page
    except (OSError, ValueError, AttributeError):  # pragma: no cover - not POSIX
        pass
    try:
        with open("/proc/self/statm") as statm:
            used = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: the peak resident set instead
        try:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            used = peak if sys.platform == "darwin" else peak * 1024
        except (ImportError, OSError):  # pragma: no cover - Windows
            used = 0
    percent = round(used / total * 100, 2) if total else 0
    return {"free": max(0, total - used), "used": used, "total": total, "percent": percent}


class MetricsServer:
    """The metrics HTTP server, on the node's event loop (aiohttp, no thread)."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        host: str,
        port: int,
        prefix: str,
        server_port: Callable[[], int],
        connected: Callable[[str], int],
        is_ready: Callable[[], bool],
    ) -> None:
        self.host = host
        self.port = port
        self._is_ready = is_ready
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(
            MetricsCollector(metrics, prefix=prefix, port=server_port, connected=connected)
        )
        self.registry.register(ProcessCollector(registry=None))
        self._runner: web.AppRunner | None = None

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._root)
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/usage", self._usage)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def _ready(self, request: web.Request) -> web.Response:
        if self._is_ready():
            return web.Response(text="OK")
        return web.Response(status=503, text="Service Unavailable")

    async def _usage(self, request: web.Request) -> web.Response:
        return web.json_response({"memory": memory_usage()})

    async def _metrics(self, request: web.Request) -> web.Response:
        if request.query.get("json", "").lower() in ("1", "true", "yes"):
            return web.json_response(_as_json(self.registry))
        response = web.Response(body=generate_latest(self.registry))
        response.headers["Content-Type"] = _CONTENT_TYPE
        return response

    async def start(self) -> None:
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        address = runner.addresses[0]
        self.port = address[1]
        log.info("metrics listening on http://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
