"""SIGHUP reloads the app list from the config file; connections stay up.

Decisions under test: an app added to the file accepts connections and API calls at once; an
app removed from it has its connections closed with 4001 and its API answers 404; a file that
does not load is logged as an error and the apps in use stay.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from conftest import ServerProcess, connect, connect_raw, signed_url, token
from conftest import http as http_request

APP_A = {"id": "1", "key": "key-a", "secret": "secret-a"}
APP_B = {"id": "2", "key": "key-b", "secret": "secret-b"}
# The harness sets RELAY_APP_*; empty means unset, so the file alone names the apps.
FILE_ONLY = {"RELAY_APP_ID": "", "RELAY_APP_KEY": "", "RELAY_APP_SECRET": ""}


def write_apps(path: Path, *apps: dict[str, str]) -> None:
    path.write_text(json.dumps({"apps": list(apps)}))


def start(make_server: Any, config: Path) -> ServerProcess:
    return make_server(FILE_ONLY, ["--config", str(config)])


def reload(srv: ServerProcess, needle: str) -> str:
    srv.proc.send_signal(signal.SIGHUP)
    return srv.wait_for_log(needle)


def publish(srv: ServerProcess, app: dict[str, str], channel: str, data: str) -> int:
    body = json.dumps({"name": "news", "channel": channel, "data": data}).encode()
    url = signed_url(
        srv, "POST", f"/apps/{app['id']}/events", body, key=app["key"], secret=app["secret"]
    )
    status, _, _ = http_request("POST", url, body, {"Content-Type": "application/json"})
    return status


async def test_added_app_works_and_old_connections_stay(make_server: Any, tmp_path: Path) -> None:
    config = tmp_path / "apps.json"
    write_apps(config, APP_A)
    srv = start(make_server, config)
    a = await connect(srv, key="key-a")
    assert (await a.subscribe("before"))["event"] == "pusher_internal:subscription_succeeded"

    write_apps(config, APP_A, APP_B)
    reload(srv, "reloaded 2 apps")

    b = await connect(srv, key="key-b")
    assert (await b.subscribe("after"))["event"] == "pusher_internal:subscription_succeeded"
    assert publish(srv, APP_B, "after", "for b") == 200
    assert (await b.expect("news"))["data"] == "for b"

    # A's connection never noticed: still subscribed, still answering.
    await a.send("pusher:ping", {})
    assert (await a.expect("pusher:pong"))["event"] == "pusher:pong"
    assert publish(srv, APP_A, "before", "for a") == 200
    assert (await a.expect("news"))["data"] == "for a"
    await a.close()
    await b.close()


async def test_removed_app_is_closed_with_4001(make_server: Any, tmp_path: Path) -> None:
    config = tmp_path / "apps.json"
    write_apps(config, APP_A, APP_B)
    srv = start(make_server, config)
    a = await connect(srv, key="key-a")
    b = await connect(srv, key="key-b")

    write_apps(config, APP_A)
    reload(srv, "reloaded 1 apps")

    error = await b.expect("pusher:error")
    assert error["data"] == {"code": 4001, "message": "App 2 no longer exists."}
    assert await b.closed() == (4001, "App 2 no longer exists.")
    assert publish(srv, APP_B, "any", "x") == 404
    refused = await connect_refused(srv, "key-b")
    assert refused == 4001

    await a.send("pusher:ping", {})
    assert (await a.expect("pusher:pong"))["event"] == "pusher:pong"
    assert publish(srv, APP_A, "any", "x") == 200
    await a.close()


async def connect_refused(srv: ServerProcess, key: str) -> int | None:
    sock = await connect_raw(srv, key=key)
    error = await sock.recv()
    assert error["event"] == "pusher:error", error
    code, _ = await sock.closed()
    return code


async def test_bad_file_keeps_the_apps_in_use(make_server: Any, tmp_path: Path) -> None:
    config = tmp_path / "apps.json"
    write_apps(config, APP_A)
    srv = start(make_server, config)
    a = await connect(srv, key="key-a")

    config.write_text(json.dumps({"apps": [APP_A]})[:-2])  # cut off mid-write, secret in it
    line = reload(srv, "reload failed")
    assert "ERROR" in line and "keeping the 1 apps in use" in line
    assert "secret-a" not in "\n".join(srv.lines)

    assert publish(srv, APP_A, "x", "still here") == 200
    await a.send("pusher:ping", {})
    assert (await a.expect("pusher:pong"))["event"] == "pusher:pong"
    again = await connect(srv, key="key-a")
    auth = token(again.socket_id, "private-ok", secret="secret-a", key="key-a")
    reply = await again.subscribe("private-ok", auth=auth)
    assert reply["event"] == "pusher_internal:subscription_succeeded"

    # Fixed: the next SIGHUP applies it.
    write_apps(config, APP_A, APP_B)
    reload(srv, "reloaded 2 apps")
    b = await connect(srv, key="key-b")
    await b.close()
    await again.close()
    await a.close()
