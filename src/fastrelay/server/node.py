"""A fastrelay node: wires configuration, apps, hub, HTTP API and WebSocket gateway; runs them."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from typing import Any

from .. import _accel
from .._version import __version__
from ..apps.static import StaticAppManager
from ..config import App, Config
from ..eventlog import EventLog
from ..history import HistoryStore, MemoryHistoryStore
from ..hub.hub import Hub
from ..webhooks import WebhookSender
from .http import HttpConnection
from .rest import RestApi
from .ws import Gateway

__all__ = ["Node", "run"]

log = logging.getLogger("fastrelay")


def _wall_ms() -> int:
    return int(time.time() * 1000)


class Node:
    """One server process: owns its state, so several nodes can live in one test process."""

    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.config = config
        self.loop = loop or asyncio.get_running_loop()
        self.apps = StaticAppManager(config.apps)
        self.event_log = EventLog(config.event_log_size, enabled=config.event_log_enabled)
        self.history: HistoryStore | None = None
        if config.history_enabled:
            self.history = MemoryHistoryStore(
                max_events=config.history_max_events,
                max_age=config.history_max_age,
                max_channels=config.history_max_channels,
                epoch_ms=_wall_ms(),
            )
        self.webhooks = WebhookSender(
            loop=self.loop,
            batching=config.webhook_batching,
            batching_ms=config.webhook_batching_duration_ms,
            grace_period=config.webhook_grace_period,
            event_log=self._record,
            wall_clock_ms=_wall_ms,
        )
        self.hub = Hub(
            clock=self.loop.time,
            call_later=self.loop.call_later,
            cache_ttl=config.cache_ttl,
            emit_webhook=self.webhooks.emit,
            record=self._record,
            history=self.history,
            history_client_events=config.history_client_events,
            wall_clock_ms=_wall_ms,
        )
        self.gateway = Gateway(config, self.apps, self.hub, self.loop)
        self.rest = RestApi(
            config,
            self.apps,
            self.hub,
            is_closing=lambda: self.gateway.closing,
            event_log=self.event_log,
            history=self.history,
        )
        self._router = self.rest.router()
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    def _record(self, app: App, type_: str, fields: dict[str, Any]) -> None:
        if self.event_log.enabled:
            self.event_log.record(app.id, type_, _wall_ms(), **fields)

    def _protocol(self) -> HttpConnection:
        return HttpConnection(
            self._router,
            max_body=self.config.max_request_size,
            is_websocket_path=self.gateway.is_websocket_path,
            upgrade=self.gateway.upgrade,
        )

    async def start(self) -> None:
        await self.webhooks.start()
        self._server = await self.loop.create_server(
            self._protocol, self.config.host, self.config.port, reuse_address=True, backlog=4096
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self.gateway.start()
        accelerated = " ".join(
            f"{name}={impl}" for name, impl in sorted(_accel.implementations().items())
        )
        log.info(
            "fastrelay %s, accelerated: %s, loop: %s",
            __version__,
            accelerated,
            type(self.loop).__module__,
        )
        for app in self.config.apps:
            log.info("app id=%s key=%s enabled=%s", app.id, app.key, app.enabled)
        log.info("fastrelay listening on %s:%d", self.config.host, self.port)

    async def stop(self) -> None:
        """Graceful shutdown: stop accepting, 4200 to every client, wait the grace period."""
        log.info("shutting down")
        if self._server is not None:
            self._server.close()
        started = self.loop.time()
        grace = self.config.shutdown_grace_period
        await self.gateway.close_all(grace)
        if self._server is not None:
            await self._server.wait_closed()
        # Webhooks fired by the disconnects above get what is left of the grace period.
        await self.webhooks.close(max(0.0, grace - (self.loop.time() - started)))


async def _serve(config: Config) -> int:
    loop = asyncio.get_running_loop()
    node = Node(config, loop)
    await node.start()
    stop = loop.create_future()

    def request_stop(signum: int) -> None:
        log.info("received %s", signal.Signals(signum).name)
        if not stop.done():
            stop.set_result(None)

    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, request_stop, signum)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            signal.signal(signum, lambda s, f: loop.call_soon_threadsafe(request_stop, s))
    await stop
    await node.stop()
    # The loop's handlers go with it: a repeated signal now must not kill a clean exit.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    return 0


def run(config: Config) -> int:
    """Run a node until SIGINT/SIGTERM; returns the process exit code."""
    try:
        # FASTRELAY_REQUIRE_EXTENSIONS=1: refuse to serve on a pure-Python twin.
        _accel.check_required()
    except RuntimeError as exc:
        print(f"fastrelay: error: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows has no uvloop
        log.warning("uvloop is not available on %s; using the standard asyncio loop", sys.platform)
        return asyncio.run(_serve(config))
    return uvloop.run(_serve(config))
