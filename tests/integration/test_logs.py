"""Structured logs: ``--log-format json`` writes one JSON object per line, and no line, at any
level, carries an app secret, an auth token or a signature."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import urllib.parse
import uuid

from conftest import (
    APP_ID,
    APP_KEY,
    TIMEOUT,
    ServerProcess,
    connect,
    connect_raw,
    signed_url,
    signin_token,
    token,
)
from conftest import http as http_request
from fastrelay.cli import JsonFormatter

SECRET = f"s3cret-{uuid.uuid4().hex}"


def start_json_server(args: list[str]) -> ServerProcess:
    """The harness's start_server, reading the port from a JSON "listening on" line."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "SOKETI_", "REVERB_"))
    }
    env.update(RELAY_APP_ID=APP_ID, RELAY_APP_KEY=APP_KEY, RELAY_APP_SECRET=SECRET)
    cmd = [sys.executable, "-m", "fastrelay", "--host", "127.0.0.1", "--port", "0", *args]
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
    )
    server = ServerProcess(proc)
    threading.Thread(target=server._pump, daemon=True).start()
    line = server.wait_for_log("listening on")
    server.port = int(json.loads(line)["message"].rsplit(":", 1)[1])
    return server


def signature_of(url: str) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["auth_signature"][0]


async def test_json_lines_and_no_secrets() -> None:
    srv = start_json_server(["--log-format", "json", "--log-level", "debug"])
    forbidden = [SECRET]
    try:
        sock = await connect(srv)
        # A bad channel signature, then a good one.
        bad = f"{APP_KEY}:{'0' * 64}"
        forbidden.append(bad)
        reply = await sock.subscribe("private-logs", auth=bad)
        assert reply["event"] in ("pusher:subscription_error", "pusher:error"), reply
        good = token(sock.socket_id, "private-logs", secret=SECRET)
        forbidden += [good, good.split(":")[1]]
        await sock.send("pusher:subscribe", {"channel": "private-logs", "auth": good})
        await sock.expect("pusher_internal:subscription_succeeded")
        # A valid sign-in.
        user_data = json.dumps({"id": "user-7", "user_info": {"name": "Seven"}})
        signin = signin_token(sock.socket_id, user_data, secret=SECRET)
        forbidden += [signin, signin.split(":")[1]]
        await sock.send("pusher:signin", {"user_data": user_data, "auth": signin})
        assert (await sock.expect("pusher:signin_success"))["event"] == "pusher:signin_success"

        # The HTTP API: a request signed with the wrong secret, then a good one.
        body = json.dumps({"name": "e", "channel": "private-logs", "data": "{}"}).encode()
        headers = {"Content-Type": "application/json"}
        wrong = signed_url(srv, "POST", f"/apps/{APP_ID}/events", body, secret="not-the-secret")
        right = signed_url(srv, "POST", f"/apps/{APP_ID}/events", body, secret=SECRET)
        forbidden += [signature_of(wrong), signature_of(right)]
        assert http_request("POST", wrong, body, headers)[0] == 401
        assert http_request("POST", right, body, headers)[0] == 200
        await sock.expect("e")

        # Things that are logged: a refused key, a malformed HTTP request.
        refused = await connect_raw(srv, key="no-such-key")
        assert (await refused.recv())["event"] == "pusher:error"
        with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as raw:
            raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            assert raw.recv(1024).startswith(b"HTTP/1.1 400")
        await sock.close()
    finally:
        assert srv.stop() == 0
    srv.wait_for_log("shutting down")

    entries = []
    for line in srv.lines:
        entry = json.loads(line)  # every line is one JSON object
        assert isinstance(entry, dict), line
        assert {"time", "level", "logger", "message"} <= entry.keys(), line
        assert entry["level"] in ("debug", "info", "warning", "error", "critical"), line
        entries.append(entry)
        for secret in forbidden:
            assert secret not in line, (secret, line)
    messages = [entry["message"] for entry in entries]
    assert any("refused connection" in m for m in messages), messages
    assert any("bad HTTP request" in m for m in messages), messages


def test_json_formatter_keeps_extras() -> None:
    record = logging.LogRecord(
        "fastrelay.test", logging.WARNING, __file__, 1, "hi %s", ("x",), None
    )
    record.socket_id = "123.456"
    record.code = 4201
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "hi x"
    assert (entry["level"], entry["logger"]) == ("warning", "fastrelay.test")
    assert (entry["socket_id"], entry["code"]) == ("123.456", 4201)
    assert entry["time"].endswith("+00:00")
    assert not {"args", "msg", "levelno", "pathname", "lineno"} & entry.keys()


def test_text_is_the_default(server: ServerProcess) -> None:
    line = server.wait_for_log("listening on")
    assert not line.startswith("{") and " INFO fastrelay: " in line
