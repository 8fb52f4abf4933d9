"""A real browser: headless Chromium (Debian's package) runs a Laravel-style page with Echo.

The page (tests/browser/) loads pusher-js's browser build and laravel-echo's IIFE build straight
from tests/js/node_modules, served here by a tiny HTTP server that also plays Laravel's
``/broadcasting/auth`` (CSRF header, bearer token → user, signed with the Python server SDK).
tests/js/browser_page.mjs drives Chromium through playwright-core and reports what the page
shows; the test publishes with the Python SDK, joins the presence channel with a raw socket,
and restarts fastrelay on the same port: the page must reconnect, re-authorize and resubscribe
on its own and receive what is published after the restart.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pusher
import pytest
from test_echo import MODULES, NEEDS_NODE, SCRIPT_TIMEOUT, NodeScenario, python_sdk

from conftest import APP_KEY, TIMEOUT, ServerProcess, connect

PAGE_DIR = Path(__file__).resolve().parents[1] / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
HAVE_CHROMIUM = os.access(CHROMIUM, os.X_OK)
NO_PLAYWRIGHT = not (MODULES / "playwright-core" / "package.json").is_file()

# pusher-js reconnects at once on 4200, but the port is closed until the new process listens;
# after that refused attempt its ws strategy waits out a fixed 15 s timeout before trying again.
RECONNECT = 15.0 + TIMEOUT
CSRF = "browser-test-csrf-token"  # tests/browser/index.html's <meta name="csrf-token">
USERS = {"alice-token": {"id": 1, "name": "Alice"}}
STATIC = {
    "/": (PAGE_DIR / "index.html", "text/html; charset=utf-8"),
    "/app.js": (PAGE_DIR / "app.js", "text/javascript; charset=utf-8"),
    "/vendor/pusher.min.js": (
        MODULES / "pusher-js" / "dist" / "web" / "pusher.min.js",
        "text/javascript; charset=utf-8",
    ),
    "/vendor/echo.iife.js": (
        MODULES / "laravel-echo" / "dist" / "echo.iife.js",
        "text/javascript; charset=utf-8",
    ),
}


def _chromium_missing() -> str | None:
    if HAVE_CHROMIUM:
        return None
    reason = f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (bash scripts/test does it)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; in CI the browser test must run", pytrace=False)
    return reason


pytestmark = [
    *NEEDS_NODE,
    pytest.mark.skipif(
        NO_PLAYWRIGHT,
        reason="playwright-core missing under tests/js/node_modules: "
        "run `cd tests/js && npm install --no-audit --no-fund --no-package-lock`",
    ),
]


class Site(ThreadingHTTPServer):
    """The Laravel app's web side: the page, its scripts and /auth."""

    daemon_threads = True

    def __init__(self, sdk: pusher.Pusher) -> None:
        super().__init__(("127.0.0.1", 0), SiteHandler)
        self.sdk = sdk
        self.auth_requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class SiteHandler(BaseHTTPRequestHandler):
    server: Site

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == "/favicon.ico":
            self.send_response(204)
            self.end_headers()
            return
        if path not in STATIC:
            self._send(404, b"not found", "text/plain")
            return
        file, content_type = STATIC[path]
        self._send(200, file.read_bytes(), content_type)

    def do_POST(self) -> None:
        """Laravel's /broadcasting/auth: CSRF, the user from the bearer token, then sign."""
        if urllib.parse.urlsplit(self.path).path != "/auth":
            self._send(404, b"not found", "text/plain")
            return
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        socket_id = form.get("socket_id", [""])[0]
        channel = form.get("channel_name", [""])[0]
        bearer = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        user = USERS.get(bearer)
        csrf_ok = self.headers.get("X-CSRF-TOKEN") == CSRF
        with self.server.lock:
            self.server.auth_requests.append(
                {"socket_id": socket_id, "channel": channel, "csrf": csrf_ok, "user": user}
            )
        if not csrf_ok or user is None:
            self._send(403, b'{"message":"Forbidden"}', "application/json")
            return
        if channel.startswith("presence-"):
            auth = self.server.sdk.authenticate(
                channel, socket_id, {"user_id": user["id"], "user_info": user}
            )
        else:
            auth = self.server.sdk.authenticate(channel, socket_id)
        self._send(200, json.dumps(auth).encode(), "application/json")


@pytest.fixture
def site(server_port: int) -> Iterator[Site]:
    httpd = Site(python_sdk(server_port))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def server_port() -> int:
    """A free port chosen up front: fastrelay must come back on the same one after a restart."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Browser:
    """The browser_page.mjs driver: ``until(expression)`` → the page's snapshot."""

    def __init__(self, live: NodeScenario) -> None:
        self.live = live

    async def until(self, expression: str, timeout: float | None = None) -> dict[str, Any]:
        command: dict[str, Any] = {"until": expression}
        if timeout is not None:
            command["timeout_ms"] = int(timeout * 1000)
        await self.live.tell(json.dumps(command))
        return await self.live.ready()


def of_channel(snapshot: dict[str, Any], channel: str) -> list[tuple[str, Any]]:
    return [(e["event"], e["data"]) for e in snapshot["events"] if e["channel"] == channel]


async def test_browser_page_receives_and_survives_a_restart(
    make_server: Any, site: Site, server_port: int
) -> None:
    reason = _chromium_missing()
    if reason:
        pytest.skip(reason)
    port = server_port
    first = make_server({}, ["--port", str(port)])
    assert first.port == port
    sdk = python_sdk(port)
    suffix = uuid.uuid4().hex[:10]
    news, orders, room = f"news.{suffix}", f"private-orders.{suffix}", f"presence-room.{suffix}"
    query = urllib.parse.urlencode(
        {
            "key": APP_KEY,
            "wsHost": "127.0.0.1",
            "wsPort": port,
            "id": suffix,
            "token": "alice-token",
        }
    )
    live = await NodeScenario.start(
        "browser_page.mjs",
        port,
        f"{site.url}/?{query}",
        stdin=True,
        total=SCRIPT_TIMEOUT + RECONNECT,
    )
    browser = Browser(live)
    bob = None
    try:
        # 1. Loaded over HTTP, connected, three subscriptions (two authorized through /auth).
        page = await browser.until(
            "snapshot().subscribed.length >= 3 && snapshot().members.length === 1"
        )
        socket_id = page["socket_id"]
        assert page["state"] == "connected"
        assert sorted(s["channel"] for s in page["subscribed"]) == sorted([news, orders, room])
        assert page["members"] == [{"id": 1, "name": "Alice"}]
        assert sorted(
            (r["channel"], r["socket_id"], r["csrf"], r["user"]["id"]) for r in site.auth_requests
        ) == sorted([(orders, socket_id, True, 1), (room, socket_id, True, 1)])

        # 2. Bob joins (a raw socket with a Python SDK token); the backend publishes.
        bob = await join_presence(first, sdk, room)
        published = [
            sdk.trigger(news, "App\\Events\\NewsPublished", {"title": "Hello, browser ✓"}),
            sdk.trigger(orders, "order.updated", {"id": 7, "total": "12.50"}),
            sdk.trigger(room, "App\\Events\\RoomMessage", {"text": "hi all"}),
        ]
        assert published == [{}, {}, {}]
        page = await browser.until(
            "snapshot().events.length >= 3 && snapshot().members.length === 2"
        )
        assert page["members"] == [{"id": 1, "name": "Alice"}, {"id": 2, "name": "Bob"}]
        assert of_channel(page, news) == [("NewsPublished", {"title": "Hello, browser ✓"})]
        assert of_channel(page, orders) == [(".order.updated", {"id": 7, "total": "12.50"})]
        assert of_channel(page, room) == [("RoomMessage", {"text": "hi all"})]

        # 3. SIGTERM: every client gets 4200 ("reconnect now") and the port closes.
        assert first.stop() == 0
        page = await browser.until("snapshot().errors.some((e) => e.code === 4200)")
        assert {"type": "PusherError", "code": 4200} in page["errors"]

        # 4. fastrelay again on the same port: the page reconnects, re-authorizes, resubscribes.
        second = make_server({}, ["--port", str(port)])
        assert second.port == port
        page = await browser.until(
            f"snapshot().state === 'connected' && snapshot().socket_id !== {json.dumps(socket_id)}"
            " && snapshot().subscribed.length >= 6 && snapshot().members.length === 1",
            timeout=RECONNECT,
        )
        new_socket_id = page["socket_id"]
        assert sorted(s["channel"] for s in page["subscribed"][3:]) == sorted([news, orders, room])
        assert {s["socket_id"] for s in page["subscribed"][3:]} == {new_socket_id}
        assert page["members"] == [{"id": 1, "name": "Alice"}]
        reauthorized = {(r["channel"], r["socket_id"]) for r in site.auth_requests}
        assert {(orders, new_socket_id), (room, new_socket_id)} <= reauthorized
        assert "connecting" in page["states"][page["states"].index("connected") :]

        # 5. Published after the restart: received.
        sdk = python_sdk(port)
        assert sdk.trigger([news, orders, room], "after-restart", {"n": 2}) == {}
        page = await browser.until("snapshot().events.length >= 6")
        for channel in (news, orders, room):
            assert of_channel(page, channel)[-1] == (".after-restart", {"n": 2})
        await live.tell(json.dumps({"quit": True}))
        result = await live.result()
    finally:
        if bob is not None:
            await bob.close()
        await live.close()
    assert result["page_errors"] == []
    # Chromium logs each refused WebSocket attempt while no server listens, nothing else. With
    # enabledTransports ['ws', 'wss'] and forceTLS false, pusher-js also tries wss:// on wssPort
    # 2 s after a failed ws:// attempt.
    refused = re.compile(
        rf"WebSocket connection to 'wss?://127\.0\.0\.1:{port}/app/{APP_KEY}\?protocol=7&"
        r".*' failed: Error in connection establishment: net::ERR_CONNECTION_REFUSED"
    )
    for message in result["console_errors"]:
        assert refused.fullmatch(message), message
    assert result["snapshot"]["events"] == page["events"]


async def join_presence(server: ServerProcess, sdk: pusher.Pusher, channel: str) -> Any:
    sock = await connect(server)
    auth = sdk.authenticate(
        channel, sock.socket_id, {"user_id": 2, "user_info": {"id": 2, "name": "Bob"}}
    )
    reply = await sock.subscribe(channel, **auth)
    assert reply["event"] == "pusher_internal:subscription_succeeded", reply
    return sock
