"""Event history and reconnect catch-up over a real server (RELAY_EXTRAS.md §4).

Every test talks to a real ``python -m fastrelay`` with ``RELAY_HISTORY_ENABLED=true`` (unless it
checks the default) through signed HTTP calls, and watches live deliveries on raw WebSocket
clients. "Nothing was delivered" is shown with a barrier event that must be the next frame.
Nothing sleeps: live events are awaited with a timeout; the age-retention test polls the
endpoint with a bound.

The last test runs the reconnect catch-up recipe of the README with the real pusher-js 8 and the
real Node server SDK (tests/js/catchup.mjs).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    APP_ID,
    TIMEOUT,
    PusherSocket,
    ServerProcess,
    api,
    connect,
    signin_token,
    start_server,
    token,
)

HISTORY_ON = {"RELAY_HISTORY_ENABLED": "true"}
FACTOR = float(os.environ.get("FASTRELAY_TESTS_TIMEOUT_FACTOR", "1"))
RECORD_KEYS = {"id", "event", "channel", "data", "time_ms", "source"}
STARTED_MS: list[int] = []  # when the module's history server was launched


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def now_ms() -> int:
    return int(time.time() * 1000)


def history_path(channel: str) -> str:
    return f"/apps/{APP_ID}/channels/{urllib.parse.quote(channel, safe='')}/events"


def history(srv: ServerProcess, channel: str, **params: Any) -> dict[str, Any]:
    """A signed history read that must succeed; returns the body."""
    status, body = api(
        srv, "GET", history_path(channel), params={k: str(v) for k, v in params.items()}
    )
    assert status == 200, body
    return body


def history_status(srv: ServerProcess, channel: str, **params: str) -> tuple[int, Any]:
    return api(srv, "GET", history_path(channel), params=params)


def ids(body: dict[str, Any]) -> list[int]:
    return [record["id"] for record in body["events"]]


def trigger(
    srv: ServerProcess, channels: str | list[str], event: str, data: str, **extra: Any
) -> None:
    key = "channels" if isinstance(channels, list) else "channel"
    payload = {"name": event, key: channels, "data": data, **extra}
    assert api(srv, "POST", f"/apps/{APP_ID}/events", payload) == (200, {})


def trigger_batch(srv: ServerProcess, batch: list[dict[str, Any]]) -> None:
    assert api(srv, "POST", f"/apps/{APP_ID}/batch_events", {"batch": batch}) == (200, {})


def fill(srv: ServerProcess, channel: str, count: int, event: str = "n") -> None:
    """Publish ``count`` events numbered 1..count, ten per batch call."""
    items = [{"name": event, "channel": channel, "data": str(n)} for n in range(1, count + 1)]
    for start in range(0, count, 10):
        trigger_batch(srv, items[start : start + 10])


async def subscribed(srv: ServerProcess, channel: str, **data: Any) -> PusherSocket:
    sock = await connect(srv)
    if channel.startswith(("private-", "presence-")):
        data["auth"] = token(sock.socket_id, channel, data.get("channel_data"))
    reply = await sock.subscribe(channel, **data)
    assert reply["event"] == "pusher_internal:subscription_succeeded", reply
    return sock


async def next_on(sock: PusherSocket, channel: str) -> dict[str, Any]:
    """The next frame, which must be an event on ``channel`` (internal events are skipped)."""
    while True:
        message = await sock.recv()
        if not message["event"].startswith("pusher"):
            assert message["channel"] == channel, message
            return message


@pytest.fixture(scope="module")
def hserver() -> Iterator[ServerProcess]:
    """One server with history on (150 kept per channel, so the 100 limit clamp shows)."""
    STARTED_MS.append(now_ms())
    srv = start_server({**HISTORY_ON, "RELAY_HISTORY_MAX_EVENTS": "150"})
    yield srv
    assert srv.stop() == 0, "\n".join(srv.lines)


# -- off by default ----------------------------------------------------------------------------


async def test_disabled_by_default_404_and_no_id_in_live_events(server: ServerProcess) -> None:
    channel = unique("off-")
    sock = await subscribed(server, channel)
    trigger(server, channel, "e", "x")
    assert await next_on(sock, channel) == {"event": "e", "channel": channel, "data": "x"}
    for params in ({}, {"limit": "10"}, {"after": "0"}):
        assert history_status(server, channel, **params) == (
            404,
            {"error": "Event history is disabled", "code": 404},
        )
    await sock.close()


# -- the response ------------------------------------------------------------------------------


def test_empty_channel(hserver: ServerProcess) -> None:
    channel = unique("empty-")
    body = history(hserver, channel)
    assert body == {
        "channel": channel,
        "epoch": body["epoch"],
        "events": [],
        "has_more": False,
        "oldest_id": None,
        "newest_id": None,
    }
    assert isinstance(body["epoch"], int)
    # The store started with the server: after the test launched it, before this read.
    assert STARTED_MS[-1] <= body["epoch"] <= now_ms()
    assert history(hserver, channel, after=0) == body
    assert history(hserver, channel, before=10, limit=1) == body


def test_record_fields(hserver: ServerProcess) -> None:
    channel = unique("rec-")
    before = now_ms()
    trigger(hserver, channel, "price", '{"v":1}')
    after = now_ms()
    body = history(hserver, channel)
    [record] = body["events"]
    assert record == {
        "id": 1,
        "event": "price",
        "channel": channel,
        "data": '{"v":1}',
        "time_ms": record["time_ms"],
        "source": "api",
    }
    assert before <= record["time_ms"] <= after
    assert (body["has_more"], body["oldest_id"], body["newest_id"]) == (False, 1, 1)


def test_channel_name_with_every_allowed_punctuation(hserver: ServerProcess) -> None:
    channel = unique("odd-_=@,.;")
    trigger(hserver, channel, "e", "x")
    # The name is percent-encoded in the path and decoded by the server.
    assert "%40" in history_path(channel)
    [record] = history(hserver, channel)["events"]
    assert (record["channel"], record["data"]) == (channel, "x")
    assert history(hserver, channel)["channel"] == channel


def test_exactly_limit_then_one_more(hserver: ServerProcess) -> None:
    channel = unique("lim-")
    fill(hserver, channel, 4)
    body = history(hserver, channel, limit=4)
    assert ids(body) == [1, 2, 3, 4]
    assert (body["has_more"], body["oldest_id"], body["newest_id"]) == (False, 1, 4)
    assert [r["data"] for r in body["events"]] == ["1", "2", "3", "4"]

    fill(hserver, channel, 1, event="fifth")
    body = history(hserver, channel, limit=4)
    assert ids(body) == [2, 3, 4, 5]  # the newest `limit`, ascending
    assert (body["has_more"], body["oldest_id"], body["newest_id"]) == (True, 1, 5)
    forward = history(hserver, channel, after=0, limit=4)
    assert ids(forward) == [1, 2, 3, 4]  # the oldest `limit` after the cursor
    assert forward["has_more"] is True
    assert ids(history(hserver, channel, after=1, limit=4)) == [2, 3, 4, 5]
    assert history(hserver, channel, after=1, limit=4)["has_more"] is False


def test_default_limit_and_clamp(hserver: ServerProcess) -> None:
    channel = unique("clamp-")
    fill(hserver, channel, 120)
    default = history(hserver, channel)
    assert ids(default) == list(range(71, 121))
    assert default["has_more"] is True
    clamped = history(hserver, channel, limit=1000)
    assert ids(clamped) == list(range(21, 121))
    assert (clamped["has_more"], clamped["oldest_id"], clamped["newest_id"]) == (True, 1, 120)
    assert ids(history(hserver, channel, limit=100)) == ids(clamped)


def test_paging_backward_and_forward_reconstructs_everything_once(hserver: ServerProcess) -> None:
    channel = unique("page-")
    fill(hserver, channel, 23)
    expected = list(range(1, 24))

    backward: list[int] = []
    body = history(hserver, channel, limit=5)
    pages = 1
    backward[:0] = ids(body)
    while body["has_more"]:
        body = history(hserver, channel, limit=5, before=body["events"][0]["id"])
        backward[:0] = ids(body)
        pages += 1
    assert backward == expected
    assert pages == 5

    forward: list[int] = []
    body = history(hserver, channel, limit=5, after=0)
    forward += ids(body)
    while body["has_more"]:
        body = history(hserver, channel, limit=5, after=body["events"][-1]["id"])
        forward += ids(body)
    assert forward == expected
    assert history(hserver, channel, after=23)["events"] == []

    # Both bounds: the newest `limit` of after < id < before.
    window = history(hserver, channel, after=5, before=10, limit=2)
    assert ids(window) == [8, 9]
    assert window["has_more"] is True
    window = history(hserver, channel, after=5, before=10)
    assert (ids(window), window["has_more"]) == ([6, 7, 8, 9], False)
    assert history(hserver, channel, after=5, before=6)["events"] == []
    assert (window["oldest_id"], window["newest_id"]) == (1, 23)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "-1"},
        {"limit": "abc"},
        {"limit": "1.5"},
        {"limit": ""},
        {"before": "x"},
        {"after": "1e3"},
        {"after": ""},
    ],
)
def test_invalid_query_is_400(hserver: ServerProcess, params: dict[str, str]) -> None:
    status, body = history_status(hserver, unique("bad-"), **params)
    assert status == 400, body
    assert set(body) == {"error", "code"}
    assert body["code"] == 400
    assert next(iter(params)) in body["error"]


@pytest.mark.parametrize("channel", ["bad name", "bad:name", "x" * 201, "#not-a-user-channel"])
def test_invalid_channel_is_400(hserver: ServerProcess, channel: str) -> None:
    status, body = history_status(hserver, channel)
    assert status == 400, body
    assert body["code"] == 400
    assert body["error"].startswith("Invalid channel name")


# -- what is recorded --------------------------------------------------------------------------


async def test_live_event_carries_the_history_id(hserver: ServerProcess) -> None:
    channel = unique("live-")
    sock = await subscribed(hserver, channel)
    for n in range(1, 4):
        trigger(hserver, channel, "tick", f"t{n}")
    live = [await next_on(sock, channel) for _ in range(3)]
    assert live == [
        {"event": "tick", "channel": channel, "data": f"t{n}", "id": n} for n in range(1, 4)
    ]
    records = history(hserver, channel)["events"]
    assert [(r["id"], r["data"]) for r in records] == [(m["id"], m["data"]) for m in live]
    await sock.close()


async def test_recorded_whether_or_not_anyone_is_subscribed(hserver: ServerProcess) -> None:
    channel = unique("nobody-")
    trigger(hserver, channel, "a", "1")
    sock = await subscribed(hserver, channel)
    trigger(hserver, channel, "b", "2")
    assert (await next_on(sock, channel))["id"] == 2
    assert [(r["id"], r["event"]) for r in history(hserver, channel)["events"]] == [
        (1, "a"),
        (2, "b"),
    ]
    await sock.close()


async def test_socket_id_exclusion_is_recorded(hserver: ServerProcess) -> None:
    channel = unique("excl-")
    excluded = await subscribed(hserver, channel)
    other = await subscribed(hserver, channel)
    trigger(hserver, channel, "skip-me", "s", socket_id=excluded.socket_id)
    trigger(hserver, channel, "barrier", "b")
    assert await next_on(other, channel) == {
        "event": "skip-me",
        "channel": channel,
        "data": "s",
        "id": 1,
    }
    # The excluded connection's next frame is the barrier: it never got the event.
    assert (await next_on(excluded, channel))["event"] == "barrier"
    first, second = history(hserver, channel)["events"]
    assert first["socket_id"] == excluded.socket_id
    assert set(first) == RECORD_KEYS | {"socket_id"}
    assert "socket_id" not in second
    await excluded.close()
    await other.close()


async def test_batch_recorded_in_order_one_record_per_event_and_channel(
    hserver: ServerProcess,
) -> None:
    a, b, c = unique("ba-"), unique("bb-"), unique("bc-")
    sock_a = await subscribed(hserver, a)
    sock_b = await subscribed(hserver, b)
    trigger_batch(
        hserver,
        [
            {"name": "e1", "channel": a, "data": "1"},
            {"name": "e2", "channel": b, "data": "2"},
            {"name": "e3", "channel": a, "data": "3"},
            {"name": "e4", "channels": [a, b], "data": "4"},
        ],
    )
    # Multi-channel publish on /events: one record per channel, each with its own sequence.
    trigger(hserver, [a, b, c], "multi", "m")
    assert [(r["id"], r["event"]) for r in history(hserver, a)["events"]] == [
        (1, "e1"),
        (2, "e3"),
        (3, "e4"),
        (4, "multi"),
    ]
    assert [(r["id"], r["event"]) for r in history(hserver, b)["events"]] == [
        (1, "e2"),
        (2, "e4"),
        (3, "multi"),
    ]
    assert [(r["id"], r["event"], r["channel"]) for r in history(hserver, c)["events"]] == [
        (1, "multi", c)
    ]
    assert [(m["event"], m["id"]) for m in [await next_on(sock_a, a) for _ in range(4)]] == [
        ("e1", 1),
        ("e3", 2),
        ("e4", 3),
        ("multi", 4),
    ]
    assert [(m["event"], m["id"]) for m in [await next_on(sock_b, b) for _ in range(3)]] == [
        ("e2", 1),
        ("e4", 2),
        ("multi", 3),
    ]
    # The alias endpoint records too.
    assert api(
        hserver,
        "POST",
        f"/apps/{APP_ID}/events/batch",
        {"batch": [{"name": "e5", "channel": c, "data": "5"}]},
    ) == (200, {})
    assert ids(history(hserver, c)) == [1, 2]
    await sock_a.close()
    await sock_b.close()


async def test_user_channels_and_pusher_events_are_never_recorded(hserver: ServerProcess) -> None:
    user_id = unique("u")
    user_channel = f"#server-to-user-{user_id}"
    sock = await connect(hserver)
    user_data = json.dumps({"id": user_id})
    await sock.send(
        "pusher:signin", {"auth": signin_token(sock.socket_id, user_data), "user_data": user_data}
    )
    assert (await sock.expect("pusher:signin_success"))["data"]["user_data"] == user_data
    assert api(
        hserver, "POST", f"/apps/{APP_ID}/users/{user_id}/events", {"name": "to-user", "data": "u1"}
    ) == (200, {})
    trigger(hserver, user_channel, "direct", "u2")
    assert await sock.recv() == {"event": "to-user", "channel": user_channel, "data": "u1"}
    assert await sock.recv() == {"event": "direct", "channel": user_channel, "data": "u2"}
    assert history(hserver, user_channel)["events"] == []

    channel = unique("internal-")
    public = await subscribed(hserver, channel)
    trigger(hserver, channel, "pusher:custom", "p")
    trigger(hserver, channel, "pusher_internal:custom", "q")
    trigger(hserver, channel, "kept", "k")
    seen = [await public.recv() for _ in range(3)]
    assert seen == [
        {"event": "pusher:custom", "channel": channel, "data": "p"},
        {"event": "pusher_internal:custom", "channel": channel, "data": "q"},
        {"event": "kept", "channel": channel, "data": "k", "id": 1},
    ]
    assert [(r["id"], r["event"]) for r in history(hserver, channel)["events"]] == [(1, "kept")]
    await sock.close()
    await public.close()


def test_encrypted_channel_stored_as_received(hserver: ServerProcess) -> None:
    channel = unique("private-encrypted-")
    ciphertext = json.dumps({"nonce": "bm9uY2U=", "ciphertext": "Y2lwaGVydGV4dA=="})
    trigger(hserver, channel, "secret", ciphertext)
    [record] = history(hserver, channel)["events"]
    assert record["data"] == ciphertext


async def test_client_events_not_recorded_by_default(hserver: ServerProcess) -> None:
    channel = unique("private-ce-")
    alice = await subscribed(hserver, channel)
    bob = await subscribed(hserver, channel)
    await alice.send("client-typing", {"who": "alice"}, channel)
    assert await next_on(bob, channel) == {
        "event": "client-typing",
        "channel": channel,
        "data": {"who": "alice"},
    }
    assert history(hserver, channel)["events"] == []
    await alice.close()
    await bob.close()


async def test_client_events_recorded_when_enabled(make_server: Any) -> None:
    srv = make_server({**HISTORY_ON, "RELAY_HISTORY_CLIENT_EVENTS": "true"})
    channel = unique("private-ce-")
    alice = await subscribed(srv, channel)
    bob = await subscribed(srv, channel)
    trigger(srv, channel, "from-api", "a")
    assert (await next_on(alice, channel))["id"] == 1
    assert (await next_on(bob, channel))["id"] == 1
    await alice.send("client-typing", {"who": "alice", "n": [1, 2]}, channel)
    assert await next_on(bob, channel) == {
        "event": "client-typing",
        "channel": channel,
        "data": {"who": "alice", "n": [1, 2]},
        "id": 2,
    }
    await bob.send("client-text", "plain", channel)
    assert await next_on(alice, channel) == {
        "event": "client-text",
        "channel": channel,
        "data": "plain",
        "id": 3,
    }
    api_record, typing, text = history(srv, channel)["events"]
    assert api_record["source"] == "api"
    assert typing == {
        "id": 2,
        "event": "client-typing",
        "channel": channel,
        "data": {"who": "alice", "n": [1, 2]},  # the value as sent
        "time_ms": typing["time_ms"],
        "source": "client",
        "socket_id": alice.socket_id,
    }
    assert (text["source"], text["socket_id"], text["data"]) == ("client", bob.socket_id, "plain")

    presence = unique("presence-ce-")
    carol = await subscribed(srv, presence, channel_data=json.dumps({"user_id": "carol"}))
    dave = await subscribed(srv, presence, channel_data=json.dumps({"user_id": 42}))
    await carol.send("client-hi", {"x": 1}, presence)
    assert await next_on(dave, presence) == {
        "event": "client-hi",
        "channel": presence,
        "data": {"x": 1},
        "user_id": "carol",
        "id": 1,
    }
    await dave.send("client-hi", {"x": 2}, presence)
    assert (await next_on(carol, presence))["user_id"] == 42
    first, second = history(srv, presence)["events"]
    assert (first["socket_id"], first["user_id"]) == (carol.socket_id, "carol")
    assert (second["socket_id"], second["user_id"]) == (dave.socket_id, 42)
    for sock in (alice, bob, carol, dave):
        await sock.close()


# -- retention ---------------------------------------------------------------------------------


def test_retention_by_count(make_server: Any) -> None:
    srv = make_server({**HISTORY_ON, "RELAY_HISTORY_MAX_EVENTS": "5"})
    channel = unique("count-")
    fill(srv, channel, 8)
    body = history(srv, channel)
    assert ids(body) == [4, 5, 6, 7, 8]
    assert [r["data"] for r in body["events"]] == ["4", "5", "6", "7", "8"]
    assert (body["has_more"], body["oldest_id"], body["newest_id"]) == (False, 4, 8)
    # A cursor older than the retained range gets what is left (the client sees the gap: 4 > 2).
    assert ids(history(srv, channel, after=1)) == [4, 5, 6, 7, 8]
    assert history(srv, channel, before=4)["events"] == []
    assert history(srv, channel, before=4)["has_more"] is False
    # Another channel keeps its own five.
    other = unique("count-")
    fill(srv, other, 2)
    assert ids(history(srv, other)) == [1, 2]


async def test_retention_by_age(make_server: Any) -> None:
    max_age = 1.5 * FACTOR
    srv = make_server({**HISTORY_ON, "RELAY_HISTORY_MAX_AGE": str(max_age)})
    channel = unique("age-")
    sock = await subscribed(srv, channel)
    published = time.monotonic()
    trigger(srv, channel, "old", "o")
    assert (await next_on(sock, channel))["id"] == 1  # it was recorded
    # Poll (bounded) until the record has expired; it must not outlive the max age by much.
    deadline = published + max_age + TIMEOUT
    while True:
        body = history(srv, channel)
        if not body["events"]:
            break
        assert time.monotonic() < deadline, f"record still visible after {max_age}s: {body}"
        assert ids(body) == [1]
        await asyncio.sleep(0.05)  # poll interval of the bounded HTTP poll
    assert time.monotonic() - published >= max_age * 0.9
    assert (body["oldest_id"], body["newest_id"], body["has_more"]) == (None, None, False)
    # Ids are never reused: the next event on the channel is 2, and it alone is visible.
    trigger(srv, channel, "new", "n")
    assert (await next_on(sock, channel))["id"] == 2
    body = history(srv, channel, after=0)
    assert [(r["id"], r["event"]) for r in body["events"]] == [(2, "new")]
    assert (body["oldest_id"], body["newest_id"]) == (2, 2)
    await sock.close()


def test_retention_by_channel_count(make_server: Any) -> None:
    srv = make_server({**HISTORY_ON, "RELAY_HISTORY_MAX_CHANNELS": "2"})
    a, b, c = unique("cha-"), unique("chb-"), unique("chc-")
    trigger(srv, a, "e", "a1")
    trigger(srv, b, "e", "b1")
    assert ids(history(srv, a)) == [1]  # reading does not make `a` recently written
    trigger(srv, c, "e", "c1")  # a third channel: the least recently written (a) goes whole
    assert history(srv, a)["events"] == []
    assert history(srv, a)["oldest_id"] is None
    assert ids(history(srv, b)) == [1]
    assert ids(history(srv, c)) == [1]
    # `a` comes back (dropping b) and continues its sequence: ids are never reused.
    trigger(srv, a, "e", "a2")
    assert [(r["id"], r["data"]) for r in history(srv, a)["events"]] == [(2, "a2")]
    assert history(srv, b)["events"] == []
    assert ids(history(srv, c)) == [1]


def test_restart_changes_epoch_and_ids_start_again(make_server: Any) -> None:
    first = make_server(HISTORY_ON)
    channel = unique("restart-")
    fill(first, channel, 3)
    before = history(first, channel)
    assert first.stop() == 0
    second = make_server(HISTORY_ON)
    assert history(second, channel)["events"] == []
    trigger(second, channel, "again", "x")
    after = history(second, channel)
    assert ids(after) == [1]
    assert after["epoch"] > before["epoch"]


# -- reconnect catch-up with pusher-js ---------------------------------------------------------

JS_DIR = Path(__file__).resolve().parents[1] / "js"
NODE = shutil.which("node")
NODE_MISSING = [
    m
    for m in ("pusher-js", "pusher")
    if not (JS_DIR / "node_modules" / m / "package.json").is_file()
]


class Scenario:
    """A tests/js scenario driven phase by phase: READY lines on stderr, commands on stdin."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stderr: list[str] = []

    @classmethod
    async def start(cls, script: str, *args: str) -> Scenario:
        assert NODE is not None
        env = dict(os.environ)
        env.setdefault("SCENARIO_WAIT_MS", str(int(TIMEOUT * 1000 / 2)))
        env.setdefault("SCENARIO_TOTAL_MS", str(int(TIMEOUT * 4000)))
        proc = await asyncio.create_subprocess_exec(
            NODE,
            str(JS_DIR / script),
            *args,
            cwd=JS_DIR,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def ready(self, phase: str) -> dict[str, Any]:
        assert self.proc.stderr is not None
        while True:
            raw = await asyncio.wait_for(self.proc.stderr.readline(), TIMEOUT * 4)
            if not raw:
                await self.proc.wait()
                raise AssertionError(f"scenario exited before {phase}: {''.join(self.stderr)}")
            line = raw.decode()
            if line.startswith("READY "):
                info = json.loads(line[len("READY ") :])
                assert info["phase"] == phase, (info, self.stderr)
                return info
            self.stderr.append(line)

    async def command(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{line}\n".encode())
        await self.proc.stdin.drain()

    async def result(self) -> dict[str, Any]:
        out, err = await asyncio.wait_for(self.proc.communicate(), TIMEOUT * 4)
        assert self.proc.returncode == 0, "".join(self.stderr) + err.decode()
        lines = out.decode().strip().splitlines()
        assert len(lines) == 1, out
        return json.loads(lines[0])

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.mark.node
@pytest.mark.skipif(NODE is None, reason="node is not installed (needs Node.js >= 18)")
@pytest.mark.skipif(
    NODE is not None and bool(NODE_MISSING),
    reason=f"npm packages {NODE_MISSING} missing: run `cd tests/js && npm install "
    "--no-audit --no-fund --no-package-lock`",
)
async def test_pusher_js_reconnect_catch_up(hserver: ServerProcess) -> None:
    channel = unique("catchup-")
    scenario = await Scenario.start("catchup.mjs", str(hserver.port), channel)

    def publish(numbers: range, event: str = "n") -> None:
        for n in numbers:
            trigger(hserver, channel, event, json.dumps({"n": n}))

    try:
        subscribed_info = await scenario.ready("subscribed")
        await asyncio.to_thread(publish, range(1, 4))  # received live
        await scenario.ready("disconnected")
        await asyncio.to_thread(publish, range(4, 7))  # missed while disconnected
        await scenario.command("reconnect")
        caught_up = await scenario.ready("caught_up")
        await asyncio.to_thread(publish, range(8, 9))  # live again (7 came from the backend)
        await asyncio.to_thread(publish, range(9, 10), "done")
        observed = await scenario.result()
    finally:
        await scenario.close()

    assert caught_up["socket_id"] != subscribed_info["socket_id"]  # a new connection
    delivered = observed["delivered"]
    # Every event exactly once, in order, no gap.
    assert [d["id"] for d in delivered] == list(range(1, 10))
    assert [d["data"]["n"] for d in delivered] == list(range(1, 10))
    assert [d["via"] for d in delivered] == ["live"] * 3 + ["history"] * 4 + ["live"] * 2
    assert delivered[6]["event"] == "during-catchup"
    # First catch-up (after=0) saw an empty channel; the second asked after=3 and got 4..7 (7
    # was published by the backend during the catch-up and also arrived live: applied once).
    assert observed["fetches"] == [
        {"after": 0, "ids": [], "has_more": False},
        {"after": 3, "ids": [4, 5, 6, 7], "has_more": False},
    ]
    assert observed["duplicates_dropped"] == 1
    assert observed["gaps"] == 0
    assert observed["held_left"] == []
    assert observed["states"][-1] == "disconnected"
    assert observed["states"].count("connected") == 2
