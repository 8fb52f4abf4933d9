"""A fastrelay node: wires configuration, apps, hub, HTTP API and WebSocket gateway; runs them.

Signals (:func:`run`): SIGTERM/SIGINT drain and exit 0 (PROTOCOL.md §12); SIGHUP reloads the app
list from the configuration sources (:meth:`Node.reload`) without dropping connections.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

from .. import _accel
from .._version import __version__
from ..apps.base import AppManager
from ..apps.static import StaticAppManager
from ..cluster.base import Adapter
from ..cluster.local import LocalAdapter
from ..config import App, Config
from ..errors import AppDisabled, AppNotFound, ConfigError
from ..eventlog import EventLog
from ..history import HistoryStore, MemoryHistoryStore
from ..hub.hub import Hub
from ..webhooks import WebhookSender
from .http import HttpConnection
from .metrics import Metrics, MetricsServer
from .rest import RestApi
from .routes import Request, Response
from .tls import server_context
from .workers import notify_ready
from .ws import Gateway

__all__ = ["Node", "ReloadableAppManager", "run"]

ConfigLoader = Callable[[], Config]
"""Reads the configuration again (same flags, environment and file) for a reload."""

TLS_HANDSHAKE_TIMEOUT = 10.0  # seconds a client gets to finish the TLS handshake

log = logging.getLogger("fastrelay")


def _wall_ms() -> int:
    return int(time.time() * 1000)


class ReloadableAppManager(AppManager):
    """The node's apps: one :class:`StaticAppManager`, replaced whole by :meth:`replace`.

    The gateway and the REST API hold this object; a reload swaps what it points to in one
    assignment, so a lookup sees either the old list or the new one, never a mix.
    """

    def __init__(self, apps: Iterable[App]) -> None:
        self._current = StaticAppManager(apps)

    def replace(self, apps: Iterable[App]) -> None:
        self._current = StaticAppManager(apps)

    def find_by_key(self, key: str) -> App | None:
        return self._current.find_by_key(key)

    def find_by_id(self, app_id: str) -> App | None:
        return self._current.find_by_id(app_id)

    def all(self) -> tuple[App, ...]:
        return self._current.all()


def _make_adapter(config: Config, loop: asyncio.AbstractEventLoop, metrics: Metrics) -> Adapter:
    """The cluster seam: Redis when a URL is configured, else this node alone."""
    if not config.redis_url:
        return LocalAdapter(loop.time)
    from ..cluster.redis_adapter import HistoryLimits, RedisAdapter

    history = (
        HistoryLimits(config.history_max_events, config.history_max_age)
        if config.history_enabled
        else None
    )
    return RedisAdapter(
        config.redis_url,
        loop=loop,
        prefix=config.redis_prefix,
        node_timeout=config.redis_node_timeout,
        history=history,
        observe=metrics.adapter_latency,
    )


class _HubReceiver:
    """What arrives from other nodes, handed to this node's hub."""

    def __init__(self, hub: Hub, apps: AppManager) -> None:
        self._hub = hub
        self._apps = apps
        # Called once per message from another node: the hub's own method, no wrapper frame.
        self.deliver = hub.deliver

    def terminate_user(self, app_id: str, user_id: str) -> int:
        return self._hub.terminate_local_user(app_id, user_id)

    def member_gone(self, app_id: str, channel: str, user_id: Any) -> None:
        app = self._apps.find_by_id(app_id)
        if app is not None:
            self._hub.member_gone(app, channel, user_id)

    def channel_vacated(self, app_id: str, channel: str) -> None:
        app = self._apps.find_by_id(app_id)
        if app is not None:
            self._hub.channel_vacated(app, channel)


class Node:
    """One server process: owns its state, so several nodes can live in one test process."""

    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.config = config
        self.loop = loop or asyncio.get_running_loop()
        # Raises ConfigError for a missing or bad certificate, before anything starts.
        self.ssl_context = (
            server_context(config.ssl_cert, config.ssl_key, config.ssl_passphrase)
            if config.ssl_cert and config.ssl_key
            else None
        )
        self.apps = ReloadableAppManager(config.apps)
        # Counted whether or not the metrics server runs: a few integer increments per message.
        self.metrics = Metrics()
        for app in config.apps:
            self.metrics.add_app(app.id)
        self.draining = False
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
            event_log=self._webhook_attempt,
            wall_clock_ms=_wall_ms,
        )
        self.adapter = _make_adapter(config, self.loop, self.metrics)
        self.hub = Hub(
            adapter=self.adapter,
            clock=self.loop.time,
            call_later=self.loop.call_later,
            cache_ttl=config.cache_ttl,
            emit_webhook=self.webhooks.emit,
            record=self._record,
            history=self.history,
            history_client_events=config.history_client_events,
            wall_clock_ms=_wall_ms,
            count_sent=self.metrics.sent,
        )
        self.gateway = Gateway(config, self.apps, self.hub, self.loop, metrics=self.metrics)
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
        self.metrics_server: MetricsServer | None = None
        if config.metrics_enabled:
            self.metrics_server = MetricsServer(
                self.metrics,
                host=config.metrics_host,
                port=config.metrics_port,
                prefix=config.metrics_prefix,
                server_port=lambda: self.port,
                connected=self.hub.connection_count,
                is_ready=lambda: not self.draining,
            )

    def _record(self, app: App, type_: str, fields: dict[str, Any]) -> None:
        if self.event_log.enabled:
            self.event_log.record(app.id, type_, _wall_ms(), **fields)

    def _webhook_attempt(self, app: App, type_: str, fields: dict[str, Any]) -> None:
        """The webhook sender reports every attempt here: metrics, then the event log."""
        self.metrics.webhook_attempt(app.id, failed=type_ == "webhook_failed")
        self._record(app, type_, fields)

    def _http_answered(self, request: Request, response: Response) -> None:
        """HTTP API metrics, for requests naming an app this node has (bodies only, as soketi)."""
        app_id = request.params.get("app_id")
        if app_id is None:
            return
        app = self.apps.find_by_id(unquote(app_id))
        if app is not None:
            self.metrics.http_call(app.id, len(request.body), len(response.body))

    def _protocol(self) -> HttpConnection:
        return HttpConnection(
            self._router,
            max_body=self.config.max_request_size,
            is_websocket_path=self.gateway.is_websocket_path,
            upgrade=self.gateway.upgrade,
            on_response=self._http_answered,
            request_timeout=self.config.http_request_timeout,
        )

    async def start(self) -> None:
        await self.webhooks.start()
        # Joined to the cluster before the first client can arrive.
        await self.adapter.start(_HubReceiver(self.hub, self.apps))
        config = self.config
        try:
            self._server = await self.loop.create_server(
                self._protocol,
                config.host,
                config.port,
                reuse_address=True,
                reuse_port=config.reuse_port or None,
                backlog=4096,
                ssl=self.ssl_context,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if self.ssl_context else None,
            )
        except OSError as exc:
            await self.adapter.stop()
            await self.webhooks.close(0.0)
            raise ConfigError(
                f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}"
            ) from None
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
        scheme = "https" if self.ssl_context is not None else "http"
        # Keep HOST:PORT at the end: scripts and the test harness read the port from this line.
        log.info("fastrelay listening on %s://%s:%d", scheme, self.config.host, self.port)
        if self.metrics_server is not None:
            # After the line above, so "listening on" first names the main port.
            try:
                await self.metrics_server.start()
            except OSError as exc:
                await self.stop()
                raise ConfigError(
                    f"the metrics server cannot listen on {config.metrics_host}:"
                    f"{config.metrics_port}: {exc.strerror or exc}"
                ) from None

    async def stop(self) -> None:
        """Graceful shutdown: stop accepting, 4200 to every client, wait the grace period.

        The metrics server keeps answering meanwhile, ``/ready`` with 503, and stops last.
        """
        log.info("shutting down")
        self.draining = True
        if self._server is not None:
            self._server.close()
        grace = self.config.shutdown_grace_period
        # The disconnect paths run inside begin_close, so their webhooks are already queued:
        # they flush while the clients finish closing, each within the whole grace period.
        self.gateway.begin_close()
        await asyncio.gather(self.gateway.wait_closed(grace), self.webhooks.close(grace))
        # After the clients: their presence leaves reach the cluster before the node leaves it.
        await self.adapter.stop()
        if self._server is not None:
            await self._server.wait_closed()
        if self.metrics_server is not None:
            await self.metrics_server.stop()

    def reload(self, load: ConfigLoader) -> bool:
        """Replace the app list with a freshly loaded one (SIGHUP); False if it could not load.

        Connections stay up. Apps gone from the list: their connections are closed with 4001
        (the app no longer exists); apps now disabled: 4003. Connections of an app whose
        settings changed keep the settings they connected with; new connections and HTTP calls
        get the new ones. Other settings only take effect on a restart (a warning says which).
        """
        if self.draining:
            log.info("not reloading: shutting down")
            return False
        try:
            config = load()
        except (ConfigError, SystemExit) as exc:
            log.error("reload failed, keeping the %d apps in use: %s", len(self.apps.all()), exc)
            return False
        except Exception:
            log.exception("reload failed, keeping the %d apps in use", len(self.apps.all()))
            return False
        old = {app.id: app for app in self.apps.all()}
        self.apps.replace(config.apps)
        for app in config.apps:
            self.metrics.add_app(app.id)
            before = old.get(app.id)
            if before is None:
                log.info("app added: id=%s key=%s enabled=%s", app.id, app.key, app.enabled)
            elif before != app:
                log.info("app changed: id=%s key=%s enabled=%s", app.id, app.key, app.enabled)
            if before is not None and before.enabled and not app.enabled:
                closed = self.gateway.close_app(app.id, AppDisabled.code, AppDisabled.message)
                log.info("app disabled: id=%s, %d connection(s) closed", app.id, closed)
        for app_id in old.keys() - {app.id for app in config.apps}:
            closed = self.gateway.close_app(
                app_id, AppNotFound.code, f"App {app_id} no longer exists."
            )
            self.metrics.remove_app(app_id)
            log.info("app removed: id=%s, %d connection(s) closed", app_id, closed)
        ignored = [
            field.name
            for field in dataclasses.fields(Config)
            if field.name != "apps"
            and getattr(config, field.name) != getattr(self.config, field.name)
        ]
        if ignored:
            log.warning("reload: only apps are reloaded; restart to apply %s", ", ".join(ignored))
        self.config = dataclasses.replace(self.config, apps=config.apps)
        log.info("reloaded %d apps", len(config.apps))
        return True


async def _serve(config: Config, reload: ConfigLoader | None) -> int:
    loop = asyncio.get_running_loop()
    node = Node(config, loop)
    stop = loop.create_future()

    def request_stop(signum: int) -> None:
        log.info("received %s", signal.Signals(signum).name)
        if not stop.done():
            stop.set_result(None)

    def request_reload() -> None:
        log.info("received SIGHUP")
        if reload is None:
            log.warning("SIGHUP: nothing to reload from")
        else:
            node.reload(reload)

    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, request_stop, signum)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            signal.signal(signum, lambda s, f: loop.call_soon_threadsafe(request_stop, s))
    sighup = getattr(signal, "SIGHUP", None)  # not on Windows
    if sighup is not None:
        loop.add_signal_handler(sighup, request_reload)
    # Handlers first: a signal sent as soon as "listening on" is logged must find them.
    await node.start()
    notify_ready(node.port)
    await stop
    await node.stop()
    # The loop's handlers go with it: a repeated signal now must not kill a clean exit.
    for signum in (signal.SIGINT, signal.SIGTERM) + ((sighup,) if sighup is not None else ()):
        signal.signal(signum, signal.SIG_IGN)
    return 0


def run(config: Config, reload: ConfigLoader | None = None) -> int:
    """Run a node until SIGINT/SIGTERM; returns the process exit code.

    ``reload`` reads the configuration again; SIGHUP calls it and applies the new app list.
    """
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
        return asyncio.run(_serve(config, reload))
    return uvloop.run(_serve(config, reload))
