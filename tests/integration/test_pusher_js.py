"""pusher-js 8 (the real Node build) against a real fastrelay, no mocks.

Each scenario is a script under tests/js that drives pusher-js (and signs with the official Node
server SDK), prints one JSON line with what it observed and exits 0, or exits non-zero on timeout.
The assertions here are on that observation. Install the clients with
``cd tests/js && npm install --no-audit --no-fund --no-package-lock``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pusher
import pytest

from conftest import APP_ID, APP_KEY, APP_SECRET, TIMEOUT, ServerProcess, connect, token

JS_DIR = Path(__file__).resolve().parents[1] / "js"
NODE = shutil.which("node")
MODULES = JS_DIR / "node_modules"
MISSING = [m for m in ("pusher-js", "pusher") if not (MODULES / m / "package.json").is_file()]

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(NODE is None, reason="node is not installed (needs Node.js >= 18)"),
    pytest.mark.skipif(
        NODE is not None and bool(MISSING),
        reason=f"npm packages {MISSING} missing under tests/js/node_modules: "
        "run `cd tests/js && npm install --no-audit --no-fund --no-package-lock`",
    ),
]

# 32 bytes 0..31, base64 (PROTOCOL.md §7.4 F5).
MASTER_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
SCRIPT_TIMEOUT = 4 * TIMEOUT


def node_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("SCENARIO_WAIT_MS", str(int(TIMEOUT * 1000 / 2)))
    env.setdefault("SCENARIO_TOTAL_MS", str(int(SCRIPT_TIMEOUT * 1000 - 2000)))
    return env


def scenario(script: str, port: int, *args: str) -> dict[str, Any]:
    """Run one scenario script to completion and return its JSON observation."""
    assert NODE is not None
    proc = subprocess.run(
        [NODE, str(JS_DIR / script), str(port), *args],
        cwd=JS_DIR,
        env=node_env(),
        capture_output=True,
        encoding="utf-8",
        timeout=SCRIPT_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stderr}\n{proc.stdout}"
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"{script} must print one JSON line, got: {proc.stdout!r}"
    return json.loads(lines[0])


class LiveScenario:
    """A scenario that waits for the test to act: READY on stderr, then one JSON line on stdout."""

    def __init__(self, proc: asyncio.subprocess.Process, script: str) -> None:
        self.proc = proc
        self.script = script
        self.stderr: list[str] = []

    @classmethod
    async def start(cls, script: str, port: int, *args: str) -> LiveScenario:
        assert NODE is not None
        proc = await asyncio.create_subprocess_exec(
            NODE,
            str(JS_DIR / script),
            str(port),
            *args,
            cwd=JS_DIR,
            env=node_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc, script)

    async def ready(self) -> dict[str, Any]:
        assert self.proc.stderr is not None
        while True:
            try:
                raw = await asyncio.wait_for(self.proc.stderr.readline(), SCRIPT_TIMEOUT)
            except asyncio.TimeoutError:
                self.proc.kill()
                raise AssertionError(f"{self.script} never became ready: {self.stderr}") from None
            if not raw:
                await self.proc.wait()
                raise AssertionError(
                    f"{self.script} exited {self.proc.returncode} before READY: {self.stderr}"
                )
            line = raw.decode()
            if line.startswith("READY "):
                return json.loads(line[len("READY ") :])
            self.stderr.append(line)

    async def result(self) -> dict[str, Any]:
        try:
            out, err = await asyncio.wait_for(self.proc.communicate(), SCRIPT_TIMEOUT)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(f"{self.script} did not finish") from None
        assert self.proc.returncode == 0, (
            f"{self.script} exited {self.proc.returncode}:\n{''.join(self.stderr)}{err.decode()}"
        )
        lines = out.decode().strip().splitlines()
        assert len(lines) == 1, f"{self.script} must print one JSON line, got: {out!r}"
        return json.loads(lines[0])

    async def close(self) -> None:
        """Kill the script if a failed assertion left it running."""
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


def python_sdk(port: int, **options: Any) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=APP_ID,
        key=APP_KEY,
        secret=APP_SECRET,
        host="127.0.0.1",
        port=port,
        ssl=False,
        **options,
    )


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


# -- public channel --------------------------------------------------------------------------


async def test_public_channel_receives_python_sdk_events(server: ServerProcess) -> None:
    channel = unique("public-js-")
    sdk = python_sdk(server.port)
    live = await LiveScenario.start("public.mjs", server.port, channel)
    try:
        ready = await live.ready()
        assert ready["channel"] == channel

        def publish() -> list[Any]:
            return [
                sdk.trigger(channel, "object", {"msg": "héllo", "n": [1, 2]}),
                sdk.trigger(channel, "text", "plain text, not JSON"),
                sdk.trigger(channel, "json-string", '{"emoji":"✓"}'),
                # Excluded by socket_id: the pusher-js client must never see it.
                sdk.trigger(channel, "excluded", {"x": 1}, socket_id=ready["socket_id"]),
                sdk.trigger(channel, "done", {}),
            ]

        responses = await asyncio.to_thread(publish)
        assert responses == [{}] * 5
        observed = await live.result()
    finally:
        await live.close()
    assert observed["socket_id"] == ready["socket_id"]
    # pusher-js parses JSON data and keeps a string that is not JSON, so exact relaying shows.
    assert observed["events"] == [
        {"event": "object", "data": {"msg": "héllo", "n": [1, 2]}},
        {"event": "text", "data": "plain text, not JSON"},
        {"event": "json-string", "data": {"emoji": "✓"}},
    ]


# -- private channel -------------------------------------------------------------------------


def test_private_channel_auth_and_event(server: ServerProcess) -> None:
    observed = scenario("private.mjs", server.port)
    assert observed["trigger_status"] == [200, 200]
    expected = {"n": 2, "text": 'héllo "quoted"'}
    assert observed["received"] == expected
    # The event triggered with this client's socket_id was not delivered (it was sent first).
    assert observed["events"] == [{"event": "delivered", "data": expected}]


# -- presence --------------------------------------------------------------------------------


def test_presence_members_added_removed_and_me(server: ServerProcess) -> None:
    observed = scenario("presence.mjs", server.port)
    alice = {"id": "user-a", "info": {"name": "Alice"}}
    bob = {"id": "user-b", "info": {"name": "Bob", "n": 2}}
    carol = {"id": "user-c", "info": {"name": "Carol"}}

    assert observed["alice_alone"] == {"count": 1, "me": alice, "members": [alice]}
    assert observed["member_added"] == bob
    assert observed["bob"] == {"count": 2, "me": bob, "members": [alice, bob]}
    assert observed["alice_after_add"] == {"count": 2, "me": alice, "members": [alice, bob]}
    # A second connection of user-a is not a new member; `hash` keeps the earliest connection's
    # user_info (PROTOCOL.md §3.5), which pusher-js then reports as that tab's `me`.
    assert observed["alice_tab"] == {"count": 2, "me": alice, "members": [alice, bob]}
    assert observed["carol"] == {"count": 3, "me": carol, "members": [alice, bob, carol]}
    assert observed["bob_added_log"] == ["user-c"]
    # The tab leaving is not a member_removed (user-a is still there); Carol leaving is.
    assert observed["bob_removed_log"] == ["user-c"]
    assert observed["bob_after_leaves"] == {"count": 2, "me": bob, "members": [alice, bob]}
    assert observed["member_removed"]["id"] == "user-b"
    assert observed["alice_after_remove"] == {"count": 1, "me": alice, "members": [alice]}


def test_subscription_count(make_server: Any) -> None:
    srv = make_server({"RELAY_APP_SUBSCRIPTION_COUNT": "true"})
    observed = scenario("subscription_count.mjs", srv.port)
    assert observed["alice_counts"] == [1, 2, 1]
    assert observed["bob_counts"] == [2]
    assert observed["after_join"] == {"alice": 2, "bob": 2}
    assert observed["after_leave"] == 1


# -- client events ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["private", "presence"])
def test_client_events_relayed_not_echoed(server: ServerProcess, kind: str) -> None:
    observed = scenario("client_events.mjs", server.port, kind)
    assert observed["trigger_returned"] == [True, True]
    ping = {"from": "alice", "text": "ünïcode"}
    assert observed["bob_received"]["data"] == ping
    assert observed["alice_received"]["data"] == "plain string"
    if kind == "presence":
        assert observed["bob_received"]["metadata"] == {"user_id": "user-a"}
        assert observed["alice_received"]["metadata"] == {"user_id": "user-b"}
    else:
        assert observed["bob_received"]["metadata"] == {}
        assert observed["alice_received"]["metadata"] == {}
    # No echo: each side saw only the other's event.
    assert observed["alice_log"] == [{"event": "client-ack", "data": "plain string"}]
    assert observed["bob_log"] == [{"event": "client-ping", "data": ping}]


def test_client_event_on_public_channel_is_rejected(server: ServerProcess) -> None:
    observed = scenario("client_events_rejected.mjs", server.port)
    message = "Client events are only allowed on private and presence channels."
    assert observed["trigger_returned"] is True  # pusher-js sends it; the server must refuse
    assert observed["connection_error"] == {
        "type": "PusherError",
        "data": {"code": 4301, "message": message},
    }
    # The error carries `channel`, so pusher-js also emits it on the channel.
    assert observed["channel_error"] == {"code": 4301, "message": message}
    assert observed["alice_state"] == "connected"
    assert observed["bob_log"] == [{"event": "barrier", "data": {}}]


# -- subscription error ----------------------------------------------------------------------


def test_bad_auth_reaches_subscription_error(server: ServerProcess) -> None:
    observed = scenario("subscription_error.mjs", server.port)
    expected_string = f"{observed['socket_id']}:{observed['channel']}"
    error = observed["subscription_error"]
    assert error["type"] == "AuthError"
    assert error["status"] == 401
    assert error["error"].startswith(
        f"Invalid signature: Expected HMAC SHA256 hex digest of {expected_string}, but got app-key:"
    )
    assert "app-secret" not in error["error"]
    assert observed["connection_error"] == {
        "type": "PusherError",
        "data": {"code": None, "message": error["error"]},
    }
    assert observed["bad_channel_subscribed"] is False
    assert observed["good_channel_subscribed"] is True
    assert observed["state_after"] == "connected"


# -- encrypted channels ----------------------------------------------------------------------


async def test_encrypted_channel_node_sdk_to_pusher_js(make_server: Any) -> None:
    srv = make_server({"RELAY_ENCRYPTION_MASTER_KEY_BASE64": MASTER_KEY})
    channel = unique("private-encrypted-js-")
    # A raw subscriber sees what the server relays: ciphertext only.
    raw = await connect(srv)
    reply = await raw.subscribe(channel, auth=token(raw.socket_id, channel))
    assert reply["event"] == "pusher_internal:subscription_succeeded", reply

    observed = await asyncio.to_thread(scenario, "encrypted.mjs", srv.port, MASTER_KEY, channel)
    assert observed["trigger_status"] == 200
    assert observed["decrypted"] == {"text": "top secret ✓", "n": 42}
    # The cached copy on a private-encrypted-cache- channel is ciphertext that still decrypts.
    assert observed["decrypted_cached"] == {"cached": "yes ✓"}

    relayed = await raw.expect("secret-message")
    assert relayed["channel"] == channel
    envelope = json.loads(relayed["data"])
    assert set(envelope) == {"nonce", "ciphertext"}
    assert "top secret" not in relayed["data"]
    await raw.close()


async def test_encrypted_channel_python_sdk_to_pusher_js(make_server: Any) -> None:
    srv = make_server({"RELAY_ENCRYPTION_MASTER_KEY_BASE64": MASTER_KEY})
    channel = unique("private-encrypted-py-")
    sdk = python_sdk(srv.port, encryption_master_key_base64=MASTER_KEY)
    live = await LiveScenario.start("encrypted.mjs", srv.port, MASTER_KEY, channel, "external")
    payload = {"text": "top secret ✓", "n": 42}
    try:
        await live.ready()
        assert await asyncio.to_thread(sdk.trigger, channel, "secret-message", payload) == {}
        observed = await live.result()
    finally:
        await live.close()
    assert observed["decrypted"] == payload


# -- users -----------------------------------------------------------------------------------


def test_signin_and_send_to_user(server: ServerProcess) -> None:
    user_id = unique("js-user-")
    observed = scenario("signin.mjs", server.port, user_id)
    user_data = {"id": user_id, "name": "Signed In", "user_info": {"role": "tester"}}
    # signin_success echoes the user_data string; pusher-js parsed it into pusher.user.user_data.
    assert json.loads(observed["signin_success"]["user_data"]) == user_data
    assert observed["user_data"] == user_data
    assert observed["send_status"] == 200
    assert observed["received"] == {"invoice": 7, "total": "12.50"}
    # Delivered once, and only to the connection signed in as that user.
    assert observed["user_events"] == [
        {"event": "invoice-paid", "data": {"invoice": 7, "total": "12.50"}}
    ]
    assert observed["other_user_events"] == [{"event": "barrier", "data": {}}]


def test_watchlist_online_offline(server: ServerProcess) -> None:
    observed = scenario("watchlist.mjs", server.port)
    watched = observed["watched"]
    assert observed["initial"] == {"name": "offline", "user_ids": [watched]}
    assert observed["online"] == {"name": "online", "user_ids": [watched]}
    assert observed["offline"] == {"name": "offline", "user_ids": [watched]}


def test_terminate_user_connections_stops_pusher_js(server: ServerProcess) -> None:
    observed = scenario("terminate.mjs", server.port)
    assert observed["terminate_status"] == 200
    error = {
        "type": "PusherError",
        "data": {"code": 4009, "message": "You got disconnected by the app."},
    }
    # First the pusher:error event, then the close frame (same code and message).
    assert observed["victim_errors"][0] == error
    assert error in observed["victim_errors"][1:]
    # 4009 is in the 4001-4099 "refused" range: pusher-js disconnects and does not reconnect.
    assert observed["victim_states"] == ["disconnected"]
    assert observed["victim_state"] == "disconnected"
    assert observed["other_state"] == "connected"
    assert observed["other_received"] == {"ok": True}


def test_authorized_connections_cut_idle_pusher_js_client(make_server: Any) -> None:
    srv = make_server(
        {"RELAY_APP_USER_AUTHENTICATION": "true", "RELAY_USER_AUTHENTICATION_TIMEOUT": "1"}
    )
    observed = scenario("authorized_connections.mjs", srv.port)
    error = {
        "type": "PusherError",
        "data": {"code": 4009, "message": "Connection not authorized within timeout."},
    }
    assert observed["idle_errors"][0] == error
    assert observed["idle_state"] == "disconnected"
    assert observed["member_state"] == "connected"
    assert observed["subscriber_state"] == "connected"


# -- cache channels --------------------------------------------------------------------------


def test_cache_channels_last_event_and_cache_miss(server: ServerProcess) -> None:
    observed = scenario("cache.mjs", server.port)
    assert [w["channel"].split("-warm-")[0] for w in observed["warm"]] == [
        "cache",
        "private-cache",
        "presence-cache",
    ]
    for warm in observed["warm"]:
        last = {"v": 2, "on": warm["channel"]}
        assert warm["cached"] == last
        # subscription_succeeded, then the cached event alone, then the live barrier.
        assert [e["event"] for e in warm["log"]] == [
            "pusher:subscription_succeeded",
            "price",
            "live",
        ]
        assert warm["log"][1:] == [
            {"event": "price", "data": last},
            {"event": "live", "data": {"v": 3}},
        ]
    cold = observed["cold"]
    assert cold["cache_miss_data"] is None
    assert cold["log"] == [
        {"event": "pusher:subscription_succeeded", "data": {}},
        {"event": "pusher:cache_miss"},
        {"event": "live", "data": {"v": 3}},
    ]


# -- liveness --------------------------------------------------------------------------------


def test_pusher_js_pings_and_gets_pongs(server: ServerProcess) -> None:
    observed = scenario("liveness.mjs", server.port, "client")
    assert observed["activity_timeout_ms"] == 300
    # pusher-js uses min(its 120 s default, the server's activity_timeout of 30 s).
    assert observed["default_activity_timeout_ms"] == 30_000
    assert observed["state_changes"] == []
    assert observed["same_socket"] is True


def test_server_pings_are_answered_by_pusher_js(make_server: Any) -> None:
    srv = make_server({"RELAY_PING_INTERVAL": "1", "RELAY_PONG_TIMEOUT": "2"})
    observed = scenario("liveness.mjs", srv.port, "server")
    assert observed["rounds_of"] == "pusher:ping"
    assert observed["state_changes"] == []
    assert observed["same_socket"] is True
