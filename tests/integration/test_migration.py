"""Migration in one step: fastrelay started with nothing but a soketi or a Reverb configuration.

Each test starts ``python -m fastrelay`` with no flags and no RELAY_* variable — only what a
soketi deployment (SOKETI_* variables, or ``--config`` with soketi's JSON file and its dotted
keys) or a Laravel Reverb deployment (REVERB_* variables) already has — reads the port from the
"listening on" log line, and runs the same client checks as test_echo.py: Laravel Echo on
pusher-js with a Node-SDK-signed authorization, events published with the Python SDK. Variables
of those families that fastrelay does not read are reported once at start-up, never fatal.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import websockets
from test_echo import NEEDS_NODE, Credentials, check_echo_app, python_sdk, run_echo_app

from conftest import TIMEOUT, ServerProcess, connect, connect_raw

pytestmark = NEEDS_NODE

Launch = Callable[..., ServerProcess]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def launch() -> Iterator[Launch]:
    """``python -m fastrelay [args]`` with exactly ``env`` from the three families (no flags)."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str], args: list[str] | None = None) -> ServerProcess:
        clean = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("RELAY_", "SOKETI_", "REVERB_", "REDIS_"))
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastrelay", *(args or [])],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env={**clean, **env},
        )
        server = ServerProcess(proc)
        started.append(server)
        threading.Thread(target=server._pump, daemon=True).start()
        line = server.wait_for_log("listening on")
        server.port = int(line.rsplit(":", 1)[1])
        return server

    yield start
    for server in started:
        assert server.stop() == 0, "\n".join(server.lines)


def listening_on(server: ServerProcess) -> str:
    """host:port from the "listening on" line (a scheme such as http:// may precede it)."""
    line = server.wait_for_log("listening on")
    return line.split("listening on ", 1)[1].split("://")[-1].strip()


def warnings_for(server: ServerProcess, name: str) -> list[str]:
    return [line for line in server.lines if f"ignoring {name}:" in line]


def assert_reported_once(server: ServerProcess, unknown: list[str], known: list[str]) -> None:
    """Each unknown variable: one warning at start-up (before "listening on"); known ones: none."""
    listening = next(i for i, line in enumerate(server.lines) if "listening on" in line)
    for name in unknown:
        lines = warnings_for(server, name)
        assert len(lines) == 1, (name, server.lines)
        assert " WARNING " in lines[0]
        assert lines[0].endswith(f"ignoring {name}: not a setting fastrelay reads (see --help)")
        assert server.lines.index(lines[0]) < listening
    for name in known:
        assert warnings_for(server, name) == [], (name, server.lines)


async def refused_with_default_key(server: ServerProcess) -> None:
    """The credentials came from the environment: soketi's default app-key is not an app here."""
    sock = await connect_raw(server, key="app-key")
    message = json.loads(await sock.ws.recv())
    assert message["event"] == "pusher:error"
    assert message["data"]["code"] == 4001
    await sock.closed()


# -- webhooks ----------------------------------------------------------------------------------


class WebhookReceiver(ThreadingHTTPServer):
    """Records every webhook POST (headers and body) as it arrives."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _WebhookHandler)
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.changed = threading.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/pusher/webhooks"

    def wait_for(self, found: Callable[[list[tuple[dict[str, str], bytes]]], bool]) -> None:
        deadline = time.monotonic() + TIMEOUT
        with self.changed:
            while not found(self.received):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"webhooks never matched; got {self.received}")
                self.changed.wait(remaining)


class _WebhookHandler(BaseHTTPRequestHandler):
    server: WebhookReceiver

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        with self.server.changed:
            self.server.received.append((dict(self.headers), body))
            self.server.changed.notify_all()


@pytest.fixture
def webhooks() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    yield receiver
    receiver.shutdown()
    receiver.server_close()


# -- from soketi -------------------------------------------------------------------------------

SOKETI = Credentials("4242", "soketi-key", "soketi-secret")


async def test_soketi_environment(launch: Launch, webhooks: WebhookReceiver) -> None:
    port = free_port()
    env = {
        "SOKETI_HOST": "127.0.0.1",
        "SOKETI_PORT": str(port),
        "SOKETI_DEFAULT_APP_ID": SOKETI.app_id,
        "SOKETI_DEFAULT_APP_KEY": SOKETI.key,
        "SOKETI_DEFAULT_APP_SECRET": SOKETI.secret,
        "SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES": "true",
        "SOKETI_DEFAULT_APP_MAX_CONNS": "100",
        "SOKETI_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC": "-1",
        "SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC": "-1",
        "SOKETI_DEFAULT_APP_WEBHOOKS": json.dumps(
            [{"url": webhooks.url, "event_types": ["member_added", "client_event"]}]
        ),
        "SOKETI_DEBUG": "false",
        "SOKETI_ADAPTER_DRIVER": "local",
        "SOKETI_METRICS_ENABLED": "false",
        "SOKETI_PRESENCE_MAX_MEMBERS": "100",
        "SOKETI_EVENT_MAX_SIZE_IN_KB": "100",
        "SOKETI_WEBHOOKS_BATCHING": "false",
        "SOKETI_SHUTDOWN_GRACE_PERIOD": "1000",
        "SOKETI_USER_AUTHENTICATION_TIMEOUT": "30000",
        # A soketi feature fastrelay does not have, and a typo: reported, not fatal.
        "SOKETI_QUEUE_DRIVER": "sync",
        "SOKETI_DEFAULT_APP_MAX_CONECTIONS": "10",
    }
    server = launch(env)
    assert server.port == port
    assert listening_on(server) == f"127.0.0.1:{port}"
    assert any(f"app id={SOKETI.app_id} key={SOKETI.key} " in line for line in server.lines)
    assert_reported_once(
        server,
        ["SOKETI_QUEUE_DRIVER", "SOKETI_DEFAULT_APP_MAX_CONECTIONS"],
        [name for name in env if name not in ("SOKETI_QUEUE_DRIVER",) and "CONECT" not in name],
    )

    observed = await run_echo_app(port, SOKETI)
    check_echo_app(observed, SOKETI)
    await refused_with_default_key(server)

    # SOKETI_DEFAULT_APP_WEBHOOKS: signed with the app's key and secret (the Python SDK checks).
    sdk = python_sdk(port, SOKETI)

    def events(received: list[tuple[dict[str, str], bytes]]) -> list[dict[str, Any]]:
        found = []
        for headers, body in received:
            payload = sdk.validate_webhook(
                headers["X-Pusher-Key"], headers["X-Pusher-Signature"], body
            )
            assert payload is not None, (headers, body)
            found.extend(payload["events"])
        return found

    def whispered(received: list[tuple[dict[str, str], bytes]]) -> bool:
        names = {(e["name"], e.get("event")) for e in events(received)}
        return {("member_added", None), ("client_event", "client-typing")} <= names

    webhooks.wait_for(whispered)
    typing = next(e for e in events(webhooks.received) if e.get("event") == "client-typing")
    assert typing["channel"].startswith("presence-chat.")
    assert typing["user_id"] == 2  # keeps its JSON type from channel_data (Laravel: an int)
    assert json.loads(typing["data"]) == {"name": "Bob"}


async def test_soketi_json_config_file(launch: Launch, tmp_path: Path) -> None:
    port = free_port()
    app = Credentials("777", "config-key", "config-secret")
    config = {
        "debug": False,
        "host": "127.0.0.1",
        "port": port,
        "appManager.driver": "array",
        "appManager.array.apps": [
            {
                "id": app.app_id,
                "key": app.key,
                "secret": app.secret,
                "maxConnections": -1,
                "enableClientMessages": True,
                "enabled": True,
                "maxBackendEventsPerSecond": -1,
                "maxClientEventsPerSecond": -1,
                "maxReadRequestsPerSecond": -1,
                "webhooks": [],
            }
        ],
        "eventLimits.maxPayloadInKb": 100,
        "presence.maxMembersPerChannel": 100,
        "channelLimits": {"maxNameLength": 200},
        "metrics.enabled": False,
        # soketi options with no fastrelay counterpart are skipped.
        "cors.origin": ["*"],
        "queue.driver": "sync",
    }
    path = tmp_path / "soketi.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    server = launch({}, ["--config", str(path)])
    assert server.port == port
    assert any(f"app id={app.app_id} key={app.key} " in line for line in server.lines)
    assert not [line for line in server.lines if "ignoring" in line or "ERROR" in line]
    observed = await run_echo_app(port, app)
    check_echo_app(observed, app)


# -- from Reverb -------------------------------------------------------------------------------

REVERB = Credentials("815", "reverb-key", "reverb-secret")


async def test_reverb_environment(launch: Launch) -> None:
    port = free_port()
    env = {
        "REVERB_APP_ID": REVERB.app_id,
        "REVERB_APP_KEY": REVERB.key,
        "REVERB_APP_SECRET": REVERB.secret,
        "REVERB_SERVER_HOST": "127.0.0.1",
        "REVERB_SERVER_PORT": str(port),
        "REVERB_SERVER_PATH": "",
        # Where the Laravel app and Echo reach the server: read by Laravel, not by fastrelay.
        "REVERB_HOST": "localhost",
        "REVERB_PORT": str(port),
        "REVERB_SCHEME": "http",
        "REVERB_APP_PING_INTERVAL": "60",
        "REVERB_APP_ACTIVITY_TIMEOUT": "45",
        "REVERB_APP_MAX_MESSAGE_SIZE": "10000",
        "REVERB_APP_MAX_CONNECTIONS": "100",
        "REVERB_APP_ACCEPT_CLIENT_EVENTS_FROM": "members",
        "REVERB_APP_RATE_LIMITING_ENABLED": "false",
        "REVERB_MAX_REQUEST_SIZE": "10000",
        "REVERB_SCALING_ENABLED": "false",
        "REVERB_SCALING_CHANNEL": "reverb",
        "REVERB_PULSE_INGEST_INTERVAL": "15",
        "REVERB_TELESCOPE_INGEST_INTERVAL": "15",
        # A typo: reported, not fatal.
        "REVERB_APP_MAX_CONECTIONS": "10",
    }
    server = launch(env)
    assert server.port == port
    assert listening_on(server) == f"127.0.0.1:{port}"
    assert any(f"app id={REVERB.app_id} key={REVERB.key} " in line for line in server.lines)
    assert_reported_once(
        server,
        ["REVERB_APP_MAX_CONECTIONS"],
        [name for name in env if "CONECT" not in name],
    )

    # Echo's `reverb` broadcaster, whispers included (accept_client_events_from: members).
    observed = await run_echo_app(port, REVERB, broadcaster="reverb")
    check_echo_app(observed, REVERB)
    await refused_with_default_key(server)

    # REVERB_APP_ACTIVITY_TIMEOUT is what clients are told; REVERB_APP_MAX_MESSAGE_SIZE caps
    # what they may send (close 1009 above it).
    sock = await connect(server, key=REVERB.key)
    assert sock.socket_id
    big = json.dumps({"event": "pusher:ping", "data": "x" * 10_000})
    await sock.ws.send(big)
    code, _reason = await sock.closed()
    assert code == 1009
    raw = await websockets.connect(server.ws_url(REVERB.key), open_timeout=TIMEOUT)
    established = json.loads(await raw.recv())
    assert json.loads(established["data"])["activity_timeout"] == 45
    await raw.close()
