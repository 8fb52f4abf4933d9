"""Laravel Echo 2 (pusher connector) on the real pusher-js Node build, against a real fastrelay.

The scenarios under tests/js (echo_app.mjs, echo_encrypted.mjs) are what a Laravel page does with
Echo; the test plays the Laravel backend: it publishes with the Python server SDK exactly what
Laravel's Pusher broadcaster sends (namespaced class names as event names, ``broadcastAs`` names,
BroadcastNotificationCreated, ``->toOthers()`` as a socket_id exclusion). The helpers here are
reused by test_migration.py, which runs the same checks against a fastrelay started from
nothing but a soketi or a Reverb environment.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pusher
import pytest

from conftest import APP_ID, APP_KEY, APP_SECRET, TIMEOUT, ServerProcess

JS_DIR = Path(__file__).resolve().parents[1] / "js"
NODE = shutil.which("node")
MODULES = JS_DIR / "node_modules"
PACKAGES = ("pusher-js", "pusher", "laravel-echo")
MISSING = [name for name in PACKAGES if not (MODULES / name / "package.json").is_file()]
SCRIPT_TIMEOUT = 4 * TIMEOUT
# 32 bytes 0..31, base64 (PROTOCOL.md §7.4 F5).
MASTER_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

NEEDS_NODE = [
    pytest.mark.node,
    pytest.mark.skipif(NODE is None, reason="node is not installed (needs Node.js >= 18)"),
    pytest.mark.skipif(
        NODE is not None and bool(MISSING),
        reason=f"npm packages {MISSING} missing under tests/js/node_modules: "
        "run `cd tests/js && npm install --no-audit --no-fund --no-package-lock`",
    ),
]
pytestmark = NEEDS_NODE


@dataclass(frozen=True)
class Credentials:
    app_id: str
    key: str
    secret: str


DEFAULT = Credentials(APP_ID, APP_KEY, APP_SECRET)


def python_sdk(port: int, credentials: Credentials = DEFAULT, **options: Any) -> pusher.Pusher:
    """The Python server SDK, standing in for the Laravel backend."""
    return pusher.Pusher(
        app_id=credentials.app_id,
        key=credentials.key,
        secret=credentials.secret,
        host="127.0.0.1",
        port=port,
        ssl=False,
        **options,
    )


class NodeScenario:
    """A node script under tests/js: ``READY <json>`` lines on stderr, one JSON line on stdout."""

    def __init__(self, proc: asyncio.subprocess.Process, script: str) -> None:
        self.proc = proc
        self.script = script
        self.stderr: list[str] = []

    @classmethod
    async def start(
        cls,
        script: str,
        port: int,
        *args: str,
        credentials: Credentials = DEFAULT,
        stdin: bool = False,
        total: float = SCRIPT_TIMEOUT,
    ) -> NodeScenario:
        """Start ``script``; ``total`` (seconds) bounds the whole run, each wait is TIMEOUT / 2."""
        assert NODE is not None
        env = dict(os.environ)
        env.setdefault("SCENARIO_WAIT_MS", str(int(TIMEOUT * 1000 / 2)))
        env.setdefault("SCENARIO_TOTAL_MS", str(int(total * 1000 - 2000)))
        env.update(
            FASTRELAY_APP_ID=credentials.app_id,
            FASTRELAY_APP_KEY=credentials.key,
            FASTRELAY_APP_SECRET=credentials.secret,
        )
        proc = await asyncio.create_subprocess_exec(
            NODE,
            str(JS_DIR / script),
            str(port),
            *args,
            cwd=JS_DIR,
            env=env,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc, script)

    async def ready(self) -> dict[str, Any]:
        """The next READY payload; fails if the script exits or stalls first."""
        assert self.proc.stderr is not None
        while True:
            try:
                raw = await asyncio.wait_for(self.proc.stderr.readline(), SCRIPT_TIMEOUT)
            except asyncio.TimeoutError:
                await self.close()
                raise AssertionError(f"{self.script} never became ready: {self.stderr}") from None
            if not raw:
                await self.proc.wait()
                raise AssertionError(
                    f"{self.script} exited {self.proc.returncode} before READY:\n"
                    + "".join(self.stderr)
                )
            line = raw.decode()
            if line.startswith("READY "):
                return json.loads(line[len("READY ") :])
            self.stderr.append(line)

    async def tell(self, line: str) -> None:
        """Write one line to the script's stdin (scripts that wait for the test to act)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def result(self) -> dict[str, Any]:
        try:
            out, err = await asyncio.wait_for(self.proc.communicate(), SCRIPT_TIMEOUT)
        except asyncio.TimeoutError:
            await self.close()
            raise AssertionError(f"{self.script} did not finish: {self.stderr}") from None
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


# -- what a Laravel backend broadcasts ---------------------------------------------------------

ORDER_SHIPPED = "App\\Events\\OrderShipped"
DONE = "App\\Events\\Done"
NOTIFICATION = "Illuminate\\Notifications\\Events\\BroadcastNotificationCreated"
# Laravel adds the sender's socket id (or null) under "socket" to every broadcast payload.
PUBLIC_ORDER = {"order": {"id": 1, "status": "shipped ✓"}, "socket": None}
BROADCAST_AS = {"order": {"id": 2}, "socket": None}
PRIVATE_ORDER = {"order": {"id": 3, "total": "12.50"}, "socket": None}
EXCLUDED_ORDER = {"order": {"id": "only for others"}}
NOTICE = {
    "title": "Invoice paid",
    "id": "9c0e8b52-6a3c-4e0b-9f55-2f0d8f2f6a10",
    "type": "App\\Notifications\\InvoicePaid",
}


def publish_laravel_events(sdk: pusher.Pusher, ready: dict[str, Any]) -> list[Any]:
    """Publish, in order, what echo_app.mjs waits for (blocking: run it in a thread)."""
    channels = ready["channels"]
    return [
        sdk.trigger(channels["public"], ORDER_SHIPPED, PUBLIC_ORDER),
        sdk.trigger(channels["public"], "order.shipped", BROADCAST_AS),
        sdk.trigger_batch(
            [
                {"channel": channels["private"], "name": ORDER_SHIPPED, "data": PRIVATE_ORDER},
                {"channel": channels["notifications"], "name": NOTIFICATION, "data": NOTICE},
            ]
        ),
        # broadcast(new OrderShipped(...))->toOthers(): the X-Socket-Id Echo adds to requests.
        sdk.trigger(
            channels["public"],
            ORDER_SHIPPED,
            EXCLUDED_ORDER,
            socket_id=ready["socket_id"],
        ),
        sdk.trigger(channels["public"], DONE, {"socket": None}),
    ]


async def run_echo_app(
    port: int, credentials: Credentials = DEFAULT, broadcaster: str = "pusher"
) -> dict[str, Any]:
    """Run echo_app.mjs against the server on ``port``, publishing with the Python SDK."""
    sdk = python_sdk(port, credentials)
    live = await NodeScenario.start("echo_app.mjs", port, broadcaster, credentials=credentials)
    try:
        ready = await live.ready()
        responses = await asyncio.to_thread(publish_laravel_events, sdk, ready)
        observed = await live.result()
    finally:
        await live.close()
    assert responses == [{}, {}, {}, {}, {}], responses
    assert observed["socket_id"] == ready["socket_id"]
    return observed


def check_echo_app(observed: dict[str, Any], credentials: Credentials = DEFAULT) -> None:
    """What Echo must have handed to the page's callbacks."""
    alice = {"id": 1, "name": "Alice"}
    bob = {"id": 2, "name": "Bob"}
    assert observed["state"] == "connected"
    # A token signed with the wrong secret: the server's pusher:subscription_error reaches .error().
    error = observed["forbidden_error"]
    assert error["type"] == "AuthError"
    assert error["status"] == 401
    assert error["error"].startswith("Invalid signature: Expected HMAC SHA256 hex digest of ")
    assert f"{credentials.key}:" in error["error"]
    assert credentials.secret not in error["error"]
    assert observed["forbidden_subscribed"] is False
    # Presence: here / joining / leaving get the user_info Laravel's channel callback returned,
    # with integer user ids as Laravel sends them.
    assert observed["alice_here"] == [alice]
    assert sorted(observed["bob_here"], key=lambda member: member["id"]) == [alice, bob]
    assert observed["alice_joining"] == bob
    assert observed["alice_leaving"] == bob
    # Whispers (client-typing / client-ack / client-seen), relayed and not echoed.
    assert observed["whisper_typing"] == {"name": "Bob"}
    assert observed["whisper_ack"] == {"order": 1}
    assert observed["whisper_seen"] == {"by": "Alice"}
    assert observed["bob_typing_log"] == []
    # Namespaced listen('OrderShipped') = App\Events\OrderShipped; the toOthers() copy is absent.
    assert observed["public_order_shipped"] == [PUBLIC_ORDER]
    assert observed["public_broadcast_as"] == [BROADCAST_AS]
    assert observed["public_done"] == [{"socket": None}]
    assert observed["public_all"] == ["OrderShipped", ".order.shipped", "Done"]
    assert observed["private_order_shipped"] == [PRIVATE_ORDER]
    assert observed["notification"] == [NOTICE]


async def test_echo_pusher_connector(server: ServerProcess) -> None:
    observed = await run_echo_app(server.port)
    assert observed["broadcaster"] == "pusher"
    check_echo_app(observed)


async def test_echo_reverb_broadcaster(server: ServerProcess) -> None:
    # broadcaster 'reverb' is the pusher connector with cluster '' (no PUSHER_APP_CLUSTER needed).
    observed = await run_echo_app(server.port, broadcaster="reverb")
    assert observed["broadcaster"] == "reverb"
    check_echo_app(observed)


async def test_echo_encrypted_private(make_server: Any) -> None:
    srv = make_server({"RELAY_ENCRYPTION_MASTER_KEY_BASE64": MASTER_KEY})
    sdk = python_sdk(srv.port, encryption_master_key_base64=MASTER_KEY)
    live = await NodeScenario.start("echo_encrypted.mjs", srv.port, MASTER_KEY)
    secret = {"text": "top secret ✓", "n": 42}
    shared = {"secret": {"id": 5}, "socket": None}
    try:
        ready = await live.ready()
        channel = ready["channel"]
        assert channel.startswith("private-encrypted-vault.")

        def publish() -> list[Any]:
            return [
                sdk.trigger(channel, "secret-message", secret),
                sdk.trigger(channel, "App\\Events\\SecretShared", shared),
            ]

        assert await asyncio.to_thread(publish) == [{}, {}]
        observed = await live.result()
    finally:
        await live.close()
    assert observed["secret_message"] == secret
    assert observed["secret_shared"] == shared
    assert observed["errors"] == []
    assert observed["state"] == "connected"
    # pusher-js refuses client events on encrypted channels before anything is sent.
    assert observed["whisper"] == {
        "name": "UnsupportedFeature",
        "message": "Client events are not currently supported for encrypted channels",
    }
