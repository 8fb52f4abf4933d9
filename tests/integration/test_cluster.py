"""Several real fastrelay nodes sharing one real redis-server (issue: scale out on Redis).

Each node is ``python -m fastrelay`` with ``RELAY_REDIS_URL``; clients are raw WebSockets and
signed HTTP calls, exactly as in the single-node tests. Nothing here is mocked.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from typing import Any

import pusher
import pytest
from aiohttp import web
from redisserver import RedisServer, redis_server

from conftest import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    TIMEOUT,
    PusherSocket,
    ServerProcess,
    api,
    connect,
    http,
    signin_token,
    start_server,
    token,
)

__all__ = ["redis_server"]  # the fixture comes with the import

pytestmark = pytest.mark.timeout(120)

NODE_TIMEOUT = 1.0  # seconds; short, so the dead-node test is quick
# member_removed for a dead node's users must come within the timeout plus one heartbeat
# (timeout / 5), with margin for a busy machine.
CLEANUP_BOUND = NODE_TIMEOUT + NODE_TIMEOUT / 5 + 3.0


@pytest.fixture
def nodes(redis_server: RedisServer, make_server: Any) -> Callable[..., list[ServerProcess]]:
    """Start ``count`` nodes on the test's Redis."""

    def start(count: int = 2, **env: str) -> list[ServerProcess]:
        base = {
            "RELAY_REDIS_URL": redis_server.url,
            "RELAY_REDIS_NODE_TIMEOUT": str(NODE_TIMEOUT),
            # Clients left open by a test need not hold up the node's exit.
            "RELAY_SHUTDOWN_GRACE_PERIOD": "0.2",
            **env,
        }
        return [make_server(base) for _ in range(count)]

    return start


def publish(node: ServerProcess, channel: str, name: str, data: str, **extra: Any) -> None:
    status, body = api(
        node,
        "POST",
        f"/apps/{APP_ID}/events",
        {"name": name, "channel": channel, "data": data, **extra},
    )
    assert status == 200, body


async def join(sock: PusherSocket, channel: str, user_id: Any, **info: Any) -> dict[str, Any]:
    """Subscribe to a presence channel; returns the roster of ``subscription_succeeded``."""
    channel_data = json.dumps({"user_id": user_id, "user_info": info})
    reply = await sock.subscribe(
        channel, auth=token(sock.socket_id, channel, channel_data), channel_data=channel_data
    )
    assert reply["event"] == "pusher_internal:subscription_succeeded", reply
    return json.loads(reply["data"])["presence"]


async def subscribed(sock: PusherSocket, channel: str) -> None:
    reply = await sock.subscribe(channel)
    assert reply["event"] == "pusher_internal:subscription_succeeded", reply


async def nothing_more(sock: PusherSocket, marker_node: ServerProcess, channel: str) -> None:
    """Assert ``sock`` gets no message before a marker published after everything else."""
    publish(marker_node, channel, "marker", "end")
    message = await sock.recv()
    assert (message["event"], message["data"]) == ("marker", "end"), message


# -- messages ---------------------------------------------------------------------------------


async def test_publish_on_one_node_reaches_every_node_once_in_order(nodes: Any) -> None:
    a, b, c = nodes(3)
    sockets = [await connect(node) for node in (a, b, c, c)]
    for sock in sockets:
        await subscribed(sock, "orders")
    for i in range(50):
        publish(a if i % 2 else b, "orders", "e", str(i))
    for sock in sockets:
        got = [(await sock.recv())["data"] for _ in range(50)]
        assert got == [str(i) for i in range(50)]
        await nothing_more(sock, c, "orders")


async def test_publish_excludes_socket_id_on_its_own_node(nodes: Any) -> None:
    a, b = nodes(2)
    on_a, on_b = await connect(a), await connect(b)
    await subscribed(on_a, "x")
    await subscribed(on_b, "x")
    publish(b, "x", "e", "1", socket_id=on_a.socket_id)
    assert (await on_b.recv())["data"] == "1"
    await nothing_more(on_a, b, "x")


async def test_client_events_cross_nodes(nodes: Any) -> None:
    a, b = nodes(2)
    sender, receiver = await connect(a), await connect(b)
    for sock in (sender, receiver):
        reply = await sock.subscribe("private-chat", auth=token(sock.socket_id, "private-chat"))
        assert reply["event"] == "pusher_internal:subscription_succeeded"
    await sender.send("client-typing", {"who": "a"}, channel="private-chat")
    message = await receiver.recv()
    assert message == {
        "event": "client-typing",
        "channel": "private-chat",
        "data": {"who": "a"},
    }
    await nothing_more(sender, b, "private-chat")


async def test_server_to_user_and_terminate_reach_other_nodes(nodes: Any) -> None:
    a, b = nodes(2)
    user = await connect(b)
    user_data = json.dumps({"id": "alice"})
    await user.send(
        "pusher:signin", {"auth": signin_token(user.socket_id, user_data), "user_data": user_data}
    )
    assert (await user.recv())["event"] == "pusher:signin_success"
    # Signed in on B: B now listens for the user's topic. Publish through A.
    deadline = time.monotonic() + TIMEOUT
    publish(a, "#server-to-user-alice", "invoice", "paid")
    message = await user.recv(timeout=max(0.1, deadline - time.monotonic()))
    assert (message["event"], message["channel"], message["data"]) == (
        "invoice",
        "#server-to-user-alice",
        "paid",
    )
    status, _ = api(a, "POST", f"/apps/{APP_ID}/users/alice/terminate_connections", {})
    assert status == 200
    error = await user.expect("pusher:error")
    assert error["data"]["code"] == 4009
    assert (await user.closed())[0] == 4009


async def test_nodes_subscribe_only_to_channels_they_have_subscribers_for(
    nodes: Any, redis_server: RedisServer
) -> None:
    a, b = nodes(2)
    redis = redis_server.client()
    key = f"fastrelay:t:{APP_ID}:interest"

    def subscribers() -> int:
        _, count = redis("PUBSUB", "NUMSUB", key).split()
        return int(count)

    assert subscribers() == 0
    sock = await connect(a)
    await subscribed(sock, "interest")
    assert subscribers() == 1  # A only: B has nobody on the channel
    other = await connect(b)
    await subscribed(other, "interest")
    assert subscribers() == 2
    await other.send("pusher:unsubscribe", {"channel": "interest"})
    await wait_until(lambda: subscribers() == 1)
    await sock.close()
    await wait_until(lambda: subscribers() == 0)


async def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll an external observable (Redis, a node's HTTP API) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# -- presence ---------------------------------------------------------------------------------


async def test_presence_roster_and_member_events_across_nodes(nodes: Any) -> None:
    a, b, c = nodes(3)
    alice_a = await connect(a)
    roster = await join(alice_a, "presence-room", "alice", name="Alice")
    assert roster == {"ids": ["alice"], "hash": {"alice": {"name": "Alice"}}, "count": 1}

    bob_b = await connect(b)
    roster = await join(bob_b, "presence-room", "bob", name="Bob")
    assert sorted(roster["ids"]) == ["alice", "bob"]
    assert roster["hash"] == {"alice": {"name": "Alice"}, "bob": {"name": "Bob"}}
    added = await alice_a.expect("pusher_internal:member_added")
    assert json.loads(added["data"]) == {"user_id": "bob", "user_info": {"name": "Bob"}}

    # Alice again, on C: one user, no member_added anywhere, counted once.
    alice_c = await connect(c)
    roster = await join(alice_c, "presence-room", "alice", name="Alice")
    assert roster["count"] == 2
    status, users = api(b, "GET", f"/apps/{APP_ID}/channels/presence-room/users")
    assert status == 200
    assert sorted(u["id"] for u in users["users"]) == ["alice", "bob"]
    status, info = api(
        c, "GET", f"/apps/{APP_ID}/channels/presence-room", params={"info": "user_count"}
    )
    assert info == {"occupied": True, "subscription_count": 3, "user_count": 2}

    # Alice leaves A but stays on C: nobody hears of it.
    await alice_a.close()
    await nothing_more(bob_b, a, "presence-room")
    # Her last connection goes: everyone left hears member_removed once.
    await alice_c.close()
    removed = await bob_b.expect("pusher_internal:member_removed")
    assert json.loads(removed["data"]) == {"user_id": "alice"}
    await nothing_more(bob_b, c, "presence-room")


async def test_presence_member_limit_is_cluster_wide(nodes: Any) -> None:
    a, b = nodes(2, RELAY_PRESENCE_MAX_MEMBERS="1")
    first = await connect(a)
    await join(first, "presence-full", "one")
    second = await connect(b)
    channel_data = json.dumps({"user_id": "two"})
    reply = await second.subscribe(
        "presence-full",
        auth=token(second.socket_id, "presence-full", channel_data),
        channel_data=channel_data,
    )
    assert reply["event"] == "pusher:subscription_error"
    assert reply["data"]["type"] == "LimitReached"
    assert reply["data"]["status"] == 4100
    # The same user on another node is not a new member.
    again = await connect(b)
    roster = await join(again, "presence-full", "one")
    assert roster["ids"] == ["one"]


async def test_killed_node_has_its_members_removed_within_the_bound(
    nodes: Any, redis_server: RedisServer
) -> None:
    (b,) = nodes(1)
    # Started outside make_server: this one is meant to die, not to exit 0.
    a = start_server(
        {"RELAY_REDIS_URL": redis_server.url, "RELAY_REDIS_NODE_TIMEOUT": str(NODE_TIMEOUT)}
    )
    watcher = await connect(b)
    await join(watcher, "presence-ops", "watcher")
    doomed = await connect(a)
    await join(doomed, "presence-ops", "ghost")
    await watcher.expect("pusher_internal:member_added")

    a.proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    removed = await watcher.expect("pusher_internal:member_removed", timeout=CLEANUP_BOUND + 5)
    elapsed = time.monotonic() - killed_at
    assert json.loads(removed["data"]) == {"user_id": "ghost"}
    print(f"presence cleanup after SIGKILL: {elapsed:.2f} s (node timeout {NODE_TIMEOUT} s)")
    assert elapsed <= CLEANUP_BOUND
    status, users = api(b, "GET", f"/apps/{APP_ID}/channels/presence-ops/users")
    assert users == {"users": [{"id": "watcher"}]}
    status, info = api(b, "GET", f"/apps/{APP_ID}/channels/presence-ops")
    assert status == 200
    assert info["subscription_count"] == 1
    assert a.proc.wait(TIMEOUT) == -signal.SIGKILL


async def test_stopped_node_withdraws_its_members_at_once(
    nodes: Any, redis_server: RedisServer
) -> None:
    (b,) = nodes(1, RELAY_REDIS_NODE_TIMEOUT="60")  # a long timeout: only a goodbye is quick
    a = start_server({"RELAY_REDIS_URL": redis_server.url, "RELAY_REDIS_NODE_TIMEOUT": "60"})
    watcher = await connect(b)
    await join(watcher, "presence-bye", "watcher")
    leaving = await connect(a)
    await join(leaving, "presence-bye", "leaver")
    await watcher.expect("pusher_internal:member_added")
    assert a.stop() == 0
    removed = await watcher.expect("pusher_internal:member_removed")
    assert json.loads(removed["data"]) == {"user_id": "leaver"}
    status, listing = api(b, "GET", f"/apps/{APP_ID}/channels")
    assert listing == {"channels": {"presence-bye": {"subscription_count": 1}}}
    status, connections = api(b, "GET", f"/apps/{APP_ID}/connections")
    assert status == 200
    assert connections == {"connections": 1}


async def test_python_sdk_publishes_and_queries_across_nodes(nodes: Any) -> None:
    a, b = nodes(2)
    listener = await connect(b)
    await join(listener, "presence-sdk", "listener", role="ops")
    sdk_a = pusher.Pusher(
        app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host="127.0.0.1", port=a.port, ssl=False
    )
    sdk_a.trigger(["presence-sdk"], "deploy", {"version": 7})
    message = await listener.expect("deploy")
    assert json.loads(message["data"]) == {"version": 7}
    assert sdk_a.channel_info("presence-sdk", ["user_count", "subscription_count"]) == {
        "occupied": True,
        "subscription_count": 1,
        "user_count": 1,
    }
    assert sdk_a.users_info("presence-sdk") == {"users": [{"id": "listener"}]}


# -- queries ----------------------------------------------------------------------------------


async def test_channel_queries_sum_over_nodes(nodes: Any) -> None:
    a, b, c = nodes(3)
    sockets = [await connect(a), await connect(a), await connect(b)]
    for sock in sockets:
        await subscribed(sock, "summed")
    await subscribed(sockets[0], "only-a")
    for node in (a, b, c):
        status, info = api(node, "GET", f"/apps/{APP_ID}/channels/summed")
        assert (status, info) == (200, {"occupied": True, "subscription_count": 3})
        status, listing = api(
            node, "GET", f"/apps/{APP_ID}/channels", params={"info": "subscription_count"}
        )
        assert listing == {
            "channels": {"summed": {"subscription_count": 3}, "only-a": {"subscription_count": 1}}
        }
        status, connections = api(node, "GET", f"/apps/{APP_ID}/connections")
        assert connections == {"connections": 3}
    # /stats stays this node's own (RELAY_EXTRAS.md §6).
    status, _, raw = http("GET", f"{c.http}/stats")
    assert json.loads(raw) == {"connections": 0, "channels": 0}


async def test_cluster_queries_feed_the_adapter_latency_metric(nodes: Any) -> None:
    (node,) = nodes(1, RELAY_METRICS_ENABLED="true", RELAY_METRICS_PORT="0")
    metrics_port = int(node.wait_for_log("metrics listening on").rsplit(":", 1)[1])
    for _ in range(3):
        status, _ = api(node, "GET", f"/apps/{APP_ID}/channels")
        assert status == 200
    status, _, raw = http("GET", f"http://127.0.0.1:{metrics_port}/metrics")
    counts = [
        line
        for line in raw.decode().splitlines()
        if line.startswith("fastrelay_adapter_latency_seconds_count")
        and f'app_id="{APP_ID}"' in line
    ]
    assert len(counts) == 1 and float(counts[0].rsplit(" ", 1)[1]) == 3.0, counts


async def test_publish_info_counts_are_cluster_wide(nodes: Any) -> None:
    a, b = nodes(2)
    for node in (a, b):
        await subscribed(await connect(node), "counted")
    status, body = api(
        a,
        "POST",
        f"/apps/{APP_ID}/events",
        {"name": "e", "channel": "counted", "data": "x", "info": "subscription_count"},
    )
    assert status == 200
    assert body == {"channels": {"counted": {"subscription_count": 2}}}


async def test_cache_channel_last_event_is_shared(nodes: Any) -> None:
    a, b = nodes(2)
    publish(a, "cache-prices", "price", "42")
    sock = await connect(b)
    await subscribed(sock, "cache-prices")
    cached = await sock.recv()
    assert (cached["event"], cached["data"]) == ("price", "42")
    status, info = api(b, "GET", f"/apps/{APP_ID}/channels/cache-prices", params={"info": "cache"})
    assert status == 200
    assert info["cache"]["event"] == "price" and info["cache"]["data"] == "42"


async def test_connection_quota_counts_other_nodes(nodes: Any) -> None:
    a, b = nodes(2, RELAY_APP_MAX_CONNECTIONS="2")
    await connect(a)
    await connect(a)
    # B learns A's count with its next heartbeat (every NODE_TIMEOUT / 5 s).
    deadline = time.monotonic() + TIMEOUT
    while True:
        sock = await connect_or_refused(b)
        if sock is None:
            break
        await sock.close()
        assert time.monotonic() < deadline, "B never saw A's connections"


async def connect_or_refused(node: ServerProcess) -> PusherSocket | None:
    """Connect; None when the server refuses with 4100 (over quota)."""
    import websockets

    ws = await websockets.connect(node.ws_url(), open_timeout=TIMEOUT)
    sock = PusherSocket(ws)
    first = await sock.recv()
    if first["event"] == "pusher:error":
        assert first["data"]["code"] == 4100, first
        await ws.close()
        return None
    return sock


# -- Redis outage -----------------------------------------------------------------------------


async def test_redis_restart_keeps_clients_and_resumes_publishing(
    nodes: Any, redis_server: RedisServer
) -> None:
    a, b = nodes(2)
    on_a, on_b = await connect(a), await connect(b)
    await subscribed(on_a, "ticks")
    await subscribed(on_b, "ticks")
    roster = await join(on_a, "presence-live", "kept")
    assert roster["count"] == 1

    redis_server.kill()
    for node in (a, b):
        await wait_until(lambda node=node: http("GET", f"{node.http}/health")[2] == b"DEGRADED")
    # Local clients are still served meanwhile.
    publish(a, "ticks", "during", "local")
    assert (await on_a.recv())["data"] == "local"
    # Cluster queries say plainly that they cannot be answered.
    status, body = api(a, "GET", f"/apps/{APP_ID}/channels")
    assert status == 503 and "Redis" in body["error"]

    redis_server.restart()
    recovered_at = time.monotonic()
    for node in (a, b):
        await wait_until(lambda node=node: http("GET", f"{node.http}/health")[2] == b"OK")
    # Publishing from A reaches B again: probe until the first probe arrives.
    resumed = None
    probe = 0
    while resumed is None:
        probe += 1
        publish(a, "ticks", "probe", str(probe))
        assert (await on_a.recv())["data"] == str(probe)
        try:
            message = await on_b.recv(timeout=0.2)
        except asyncio.TimeoutError:
            assert time.monotonic() - recovered_at < 10, "publishing did not resume"
            continue
        assert message["event"] == "probe"
        resumed = time.monotonic() - recovered_at
    print(f"publishing resumed {resumed:.2f} s after Redis came back")
    assert resumed < 5.0
    # Nothing published after recovery is lost, and order holds.
    for i in range(100):
        publish(b if i % 2 else a, "ticks", "after", str(i))
    got = []
    while len(got) < 100:
        message = await on_b.recv()
        if message["event"] == "after":
            got.append(message["data"])
    assert got == [str(i) for i in range(100)]
    # Presence was registered again in the fresh Redis.
    status, users = api(b, "GET", f"/apps/{APP_ID}/channels/presence-live/users")
    assert users == {"users": [{"id": "kept"}]}
    for node in (a, b):
        assert node.proc.poll() is None


async def test_node_starts_while_redis_is_down_and_joins_later(
    redis_server: RedisServer, make_server: Any
) -> None:
    redis_server.stop()
    node = make_server(
        {"RELAY_REDIS_URL": redis_server.url, "RELAY_REDIS_NODE_TIMEOUT": str(NODE_TIMEOUT)}
    )
    assert http("GET", f"{node.http}/health")[2] == b"DEGRADED"
    sock = await connect(node)
    await subscribed(sock, "early")
    redis_server.restart()
    await wait_until(lambda: http("GET", f"{node.http}/health")[2] == b"OK")
    status, info = api(node, "GET", f"/apps/{APP_ID}/channels/early")
    assert status == 200
    assert info == {"occupied": True, "subscription_count": 1}


# -- shared history ---------------------------------------------------------------------------


async def test_history_ids_are_cluster_wide_and_any_node_answers(nodes: Any) -> None:
    a, b = nodes(
        2,
        RELAY_HISTORY_ENABLED="true",
        RELAY_HISTORY_CLIENT_EVENTS="true",
        RELAY_MAX_EVENT_DATA_KB="100",
    )
    on_a, on_b = await connect(a), await connect(b)
    for sock in (on_a, on_b):
        reply = await sock.subscribe("private-log", auth=token(sock.socket_id, "private-log"))
        assert reply["event"] == "pusher_internal:subscription_succeeded"
    # Sizes that take each WebSocket length encoding (7-bit, 16-bit, 64-bit).
    payloads = ["s", "m" * 300, "l" * 70_000] + [str(i) for i in range(20)]
    for i, data in enumerate(payloads):
        publish(a if i % 2 else b, "private-log", "e", data)
    for sock in (on_a, on_b):
        got = [await sock.recv() for _ in payloads]
        assert [m["data"] for m in got] == payloads
        assert [m["id"] for m in got] == list(range(1, len(payloads) + 1))
    # A client event from B gets the next id; the sender does not get it back.
    await on_b.send("client-note", {"n": 1}, channel="private-log")
    note = await on_a.recv()
    assert (note["event"], note["id"]) == ("client-note", len(payloads) + 1)
    await nothing_more(on_b, a, "private-log")
    for node in (a, b):
        status, page = api(
            node, "GET", f"/apps/{APP_ID}/channels/private-log/events", params={"limit": "100"}
        )
        assert status == 200
        assert [e["id"] for e in page["events"]] == list(range(1, len(payloads) + 3))
        assert [e["data"] for e in page["events"][:3]] == payloads[:3]
        assert page["events"][len(payloads)]["source"] == "client"
        assert page["newest_id"] == len(payloads) + 2  # the marker of nothing_more
    _, page_a = api(a, "GET", f"/apps/{APP_ID}/channels/private-log/events")
    _, page_b = api(b, "GET", f"/apps/{APP_ID}/channels/private-log/events")
    assert page_a["epoch"] == page_b["epoch"] > 0


# -- webhooks ---------------------------------------------------------------------------------


class HookSink:
    """A webhook receiver: every event of every accepted POST, in arrival order."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> HookSink:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        for event in (await request.json())["events"]:
            self.events.put_nowait(event)
        return web.Response(text="ok")

    async def take(self, count: int) -> list[dict[str, Any]]:
        return [await asyncio.wait_for(self.events.get(), TIMEOUT) for _ in range(count)]


def hooks_env(url: str) -> dict[str, str]:
    types = ["channel_occupied", "channel_vacated", "member_added", "member_removed"]
    return {
        "RELAY_APP_WEBHOOKS": json.dumps([{"url": url, "event_types": types}]),
        "RELAY_WEBHOOK_GRACE_PERIOD": "0",
    }


def brief(events: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    return [(e["name"], e["channel"], *([e["user_id"]] if "user_id" in e else [])) for e in events]


async def test_webhooks_fire_once_per_cluster(nodes: Any, redis_server: RedisServer) -> None:
    async with HookSink() as sink:
        env = hooks_env(sink.url)
        (b,) = nodes(1, **env)
        a = start_server(
            {
                "RELAY_REDIS_URL": redis_server.url,
                "RELAY_REDIS_NODE_TIMEOUT": str(NODE_TIMEOUT),
                **env,
            }
        )
        on_a = await connect(a)
        await join(on_a, "presence-hooks", "ann")
        assert sorted(brief(await sink.take(2))) == [
            ("channel_occupied", "presence-hooks"),
            ("member_added", "presence-hooks", "ann"),
        ]
        # The same user and a second one on B: the channel is occupied already, ann is known.
        on_b = await connect(b)
        await join(on_b, "presence-hooks", "ann")
        on_b2 = await connect(b)
        await join(on_b2, "presence-hooks", "bob")
        assert brief(await sink.take(1)) == [("member_added", "presence-hooks", "bob")]
        # B's subscribers leave; A still holds ann: only bob's departure is news.
        await on_b.close()
        await on_b2.close()
        assert brief(await sink.take(1)) == [("member_removed", "presence-hooks", "bob")]
        # A dies: B's heartbeat removes ann and vacates the channel, once.
        a.proc.send_signal(signal.SIGKILL)
        assert sorted(brief(await sink.take(2))) == [
            ("channel_vacated", "presence-hooks"),
            ("member_removed", "presence-hooks", "ann"),
        ]
        assert a.proc.wait(TIMEOUT) == -signal.SIGKILL
        assert sink.events.empty()
