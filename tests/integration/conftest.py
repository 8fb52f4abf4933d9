"""A real fastrelay server in a subprocess, and real clients to talk to it.

The server is started as users start it (``python -m fastrelay``) on port 0; the harness reads
the port from its "listening on" log line, so there is no race for free ports and no sleeping.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import websockets

TIMEOUT = 10.0 * float(os.environ.get("FASTRELAY_TESTS_TIMEOUT_FACTOR", "1"))
# A numeric app id: pusher-http-python refuses anything else (HTTP_API.md §6).
APP_ID, APP_KEY, APP_SECRET = "1", "app-key", "app-secret"
BASE_ENV = {"RELAY_APP_ID": APP_ID, "RELAY_APP_KEY": APP_KEY, "RELAY_APP_SECRET": APP_SECRET}


@dataclass
class ServerProcess:
    """A running ``python -m fastrelay``; its log lines are kept for assertions."""

    proc: subprocess.Popen[str]
    port: int = 0
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, key: str = APP_KEY, query: str = "protocol=7&client=test&version=1") -> str:
        return f"ws://127.0.0.1:{self.port}/app/{key}" + (f"?{query}" if query else "")

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line)
        self._queue.put(None)

    def wait_for_log(self, needle: str, timeout: float = TIMEOUT) -> str:
        """Block until a log line containing ``needle`` appears (or fail)."""
        for line in self.lines:
            if needle in line:
                return line
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no log line with {needle!r}; got:\n" + "\n".join(self.lines))
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(
                    f"server exited ({self.proc.poll()}) before logging {needle!r}:\n"
                    + "\n".join(self.lines)
                )
            if needle in line:
                return line

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=TIMEOUT)


def start_server(env: dict[str, str] | None = None, args: list[str] | None = None) -> ServerProcess:
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "SOKETI_", "REVERB_"))
    }
    full_env.update(BASE_ENV)
    full_env.update(env or {})
    cmd = [sys.executable, "-m", "fastrelay", "--host", "127.0.0.1", "--port", "0", *(args or [])]
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=full_env
    )
    server = ServerProcess(proc)
    threading.Thread(target=server._pump, daemon=True).start()
    line = server.wait_for_log("listening on")
    server.port = int(line.rsplit(":", 1)[1])
    return server


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProcess]:
    """One shared server with the default app (client events on)."""
    srv = start_server()
    yield srv
    assert srv.stop() == 0, "\n".join(srv.lines)


@pytest.fixture
def make_server() -> Iterator[Any]:
    """Start servers with custom environments; each is stopped (and must exit 0) after the test."""
    started: list[ServerProcess] = []

    def make(env: dict[str, str] | None = None, args: list[str] | None = None) -> ServerProcess:
        srv = start_server(env, args)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        assert srv.stop() == 0, "\n".join(srv.lines)


# -- raw WebSocket clients -----------------------------------------------------------------


class PusherSocket:
    """A raw WebSocket client speaking Pusher JSON, for exact protocol assertions."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.socket_id = ""

    async def send(
        self, event: str, data: Any = None, channel: str | None = None, **extra: Any
    ) -> None:
        message: dict[str, Any] = {"event": event}
        if data is not None:
            message["data"] = data
        if channel is not None:
            message["channel"] = channel
        message.update(extra)
        await self.ws.send(json.dumps(message))

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        return json.loads(raw)

    async def expect(self, event: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Receive messages until one named ``event`` arrives; fail on timeout."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            message = await self.recv(max(0.01, deadline - asyncio.get_running_loop().time()))
            if message.get("event") == event:
                return message

    async def subscribe(self, channel: str, **data: Any) -> dict[str, Any]:
        await self.send("pusher:subscribe", {"channel": channel, **data})
        return await self.recv()

    async def closed(self, timeout: float = TIMEOUT) -> tuple[int | None, str]:
        """Wait for the server to close; return (code, reason)."""
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        except websockets.ConnectionClosed as exc:
            rcvd = exc.rcvd
            return (rcvd.code, rcvd.reason) if rcvd else (None, "")

    async def close(self) -> None:
        await self.ws.close()


async def connect(
    server: ServerProcess, key: str = APP_KEY, query: str = "protocol=7", **kwargs: Any
) -> PusherSocket:
    """Open a WebSocket and read ``pusher:connection_established``."""
    ws = await websockets.connect(
        server.ws_url(key, query), open_timeout=TIMEOUT, max_size=None, **kwargs
    )
    sock = PusherSocket(ws)
    established = await sock.recv()
    assert established["event"] == "pusher:connection_established", established
    sock.socket_id = json.loads(established["data"])["socket_id"]
    return sock


async def connect_raw(
    server: ServerProcess, key: str = APP_KEY, query: str = "protocol=7", **kwargs: Any
) -> PusherSocket:
    """Open a WebSocket without reading anything (for handshake error tests)."""
    ws = await websockets.connect(
        server.ws_url(key, query), open_timeout=TIMEOUT, max_size=None, **kwargs
    )
    return PusherSocket(ws)


# -- tokens and signed HTTP, computed here from the spec's formulas --------------------------


def token(
    socket_id: str,
    channel: str,
    channel_data: str | None = None,
    secret: str = APP_SECRET,
    key: str = APP_KEY,
) -> str:
    message = f"{socket_id}:{channel}" + (f":{channel_data}" if channel_data is not None else "")
    return key + ":" + hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def signin_token(
    socket_id: str, user_data: str, secret: str = APP_SECRET, key: str = APP_KEY
) -> str:
    message = f"{socket_id}::user::{user_data}"
    return key + ":" + hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def signed_url(
    server: ServerProcess,
    method: str,
    path: str,
    body: bytes = b"",
    params: dict[str, str] | None = None,
    *,
    key: str = APP_KEY,
    secret: str = APP_SECRET,
    timestamp: int | None = None,
) -> str:
    query = {
        "auth_key": key,
        "auth_timestamp": str(int(time.time()) if timestamp is None else timestamp),
        "auth_version": "1.0",
        **(params or {}),
    }
    if body:
        query["body_md5"] = hashlib.md5(body).hexdigest()
    canonical = "&".join(f"{k}={query[k]}" for k in sorted(query))
    signature = hmac.new(
        secret.encode(), f"{method}\n{path}\n{canonical}".encode(), hashlib.sha256
    ).hexdigest()
    return f"{server.http}{path}?{urllib.parse.urlencode({**query, 'auth_signature': signature})}"


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """A plain blocking HTTP request; returns (status, headers, body) for any status."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def api(
    server: ServerProcess,
    method: str,
    path: str,
    payload: Any = None,
    params: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """A signed API call; returns (status, parsed JSON body)."""
    body = json.dumps(payload).encode() if payload is not None else b""
    status, _headers, raw = http(
        method,
        signed_url(server, method, path, body, params),
        body or None,
        {"Content-Type": "application/json"} if body else {},
    )
    return status, json.loads(raw) if raw else None
