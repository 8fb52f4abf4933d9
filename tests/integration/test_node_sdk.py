"""The official Node server SDK (pusher-http-node 5.x) against a real fastrelay.

tests/js/node_sdk.mjs runs a list of SDK calls and prints each HTTP status and body; raw WebSocket
clients (conftest) observe the deliveries byte for byte. HTTP_API.md §3–§4, PROTOCOL.md §10.
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

import pytest

from conftest import TIMEOUT, PusherSocket, ServerProcess, connect, signin_token, token

JS_DIR = Path(__file__).resolve().parents[1] / "js"
NODE = shutil.which("node")
# node_sdk.mjs drives the Node server SDK and shares lib.mjs (which loads pusher-js too).
MISSING = [
    m
    for m in ("pusher-js", "pusher")
    if not (JS_DIR / "node_modules" / m / "package.json").is_file()
]

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(NODE is None, reason="node is not installed (needs Node.js >= 18)"),
    pytest.mark.skipif(
        NODE is not None and bool(MISSING),
        reason=f"npm packages {MISSING} missing under tests/js/node_modules: "
        "run `cd tests/js && npm install --no-audit --no-fund --no-package-lock`",
    ),
]

MASTER_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


def run_node_sdk(
    port: int, calls: list[dict[str, Any]], env: dict[str, str] | None = None
) -> list[Any]:
    assert NODE is not None
    proc = subprocess.run(
        [NODE, str(JS_DIR / "node_sdk.mjs"), str(port), "-"],
        input=json.dumps(calls),
        cwd=JS_DIR,
        env={**os.environ, **(env or {})},
        capture_output=True,
        encoding="utf-8",
        timeout=4 * TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, f"node_sdk.mjs exited {proc.returncode}:\n{proc.stderr}"
    return json.loads(proc.stdout)["results"]


async def node_sdk(
    port: int, *calls: dict[str, Any], env: dict[str, str] | None = None
) -> list[Any]:
    """Run the calls in order in one Node process (off the event loop) and return their results."""
    return await asyncio.to_thread(run_node_sdk, port, list(calls), env)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


async def subscribed(server: ServerProcess, channel: str) -> PusherSocket:
    sock = await connect(server)
    reply = await sock.subscribe(channel)
    assert reply["event"] == "pusher_internal:subscription_succeeded", reply
    return sock


async def presence_member(
    server: ServerProcess, channel: str, user_id: str, info: Any
) -> PusherSocket:
    sock = await connect(server)
    channel_data = json.dumps({"user_id": user_id, "user_info": info}, separators=(",", ":"))
    reply = await sock.subscribe(
        channel, auth=token(sock.socket_id, channel, channel_data), channel_data=channel_data
    )
    assert reply["event"] == "pusher_internal:subscription_succeeded", reply
    return sock


async def signed_in(server: ServerProcess, user_id: str) -> PusherSocket:
    sock = await connect(server)
    user_data = json.dumps({"id": user_id}, separators=(",", ":"))
    await sock.send(
        "pusher:signin", {"auth": signin_token(sock.socket_id, user_data), "user_data": user_data}
    )
    reply = await sock.recv()
    assert reply == {"event": "pusher:signin_success", "data": {"user_data": user_data}}, reply
    return sock


async def close_all(*socks: PusherSocket) -> None:
    await asyncio.gather(*(s.close() for s in socks))


# -- trigger / triggerBatch ------------------------------------------------------------------


async def test_trigger_multi_channel_with_exclusion_and_info(server: ServerProcess) -> None:
    c1, c2 = unique("node-a-"), unique("node-b-")
    both = await connect(server)
    for ch in (c1, c2):
        assert (await both.subscribe(ch))["event"] == "pusher_internal:subscription_succeeded"
    excluded = await subscribed(server, c1)
    only_c2 = await subscribed(server, c2)

    data = {"msg": "héllo", "list": [1, 2, 3]}
    trigger, barrier = await node_sdk(
        server.port,
        {
            "op": "trigger",
            "channels": [c1, c2],
            "event": "my-event",
            "data": data,
            "params": {"socket_id": excluded.socket_id, "info": "subscription_count"},
        },
        {"op": "trigger", "channels": [c1], "event": "barrier", "data": "b"},
    )
    assert trigger == {
        "status": 200,
        "body": {"channels": {c1: {"subscription_count": 2}, c2: {"subscription_count": 2}}},
    }
    assert barrier == {"status": 200, "body": {}}

    # The Node SDK JSON.stringify()s object data; the server relays that string untouched.
    wire = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    got = [await both.recv(), await both.recv(), await both.recv()]
    assert sorted((m["channel"], m["event"], m["data"]) for m in got[:2]) == sorted(
        [(c1, "my-event", wire), (c2, "my-event", wire)]
    )
    assert got[2] == {"event": "barrier", "channel": c1, "data": "b"}
    assert await only_c2.recv() == {"event": "my-event", "channel": c2, "data": wire}
    # The excluded socket's next frame is the barrier: my-event never reached it.
    assert await excluded.recv() == {"event": "barrier", "channel": c1, "data": "b"}
    await close_all(both, excluded, only_c2)


async def test_trigger_batch_in_order_with_info(server: ServerProcess) -> None:
    public, room = unique("node-batch-"), unique("presence-node-batch-")
    sock = await subscribed(server, public)
    member = await presence_member(server, room, "user-1", {"name": "Alice"})
    (result,) = await node_sdk(
        server.port,
        {
            "op": "triggerBatch",
            "batch": [
                {"channel": public, "name": "first", "data": {"i": 1}},
                {"channel": room, "name": "second", "data": "two", "info": "user_count"},
                {"channel": public, "name": "third", "data": "3", "info": "subscription_count"},
            ],
        },
    )
    assert result == {
        "status": 200,
        "body": {"batch": [{}, {"user_count": 1}, {"subscription_count": 1}]},
    }, result
    assert await sock.recv() == {"event": "first", "channel": public, "data": '{"i":1}'}
    assert await sock.recv() == {"event": "third", "channel": public, "data": "3"}
    assert await member.recv() == {"event": "second", "channel": room, "data": "two"}
    await close_all(sock, member)


# -- channel queries -------------------------------------------------------------------------


async def test_get_channels_with_prefix_and_info(server: ServerProcess) -> None:
    tag = uuid.uuid4().hex[:8]
    room_a, room_b = f"presence-{tag}-a", f"presence-{tag}-b"
    public = f"public-{tag}"
    socks = [
        await presence_member(server, room_a, "user-1", {"name": "Alice"}),
        await presence_member(server, room_a, "user-1", {"name": "Alice (tab 2)"}),
        await presence_member(server, room_a, "user-2", {"name": "Bob"}),
        await presence_member(server, room_b, 7, {}),
        await subscribed(server, public),
    ]
    filtered, everything, bad, empty = await node_sdk(
        server.port,
        {
            "op": "get",
            "path": "/channels",
            "params": {"filter_by_prefix": f"presence-{tag}", "info": "user_count"},
        },
        {"op": "get", "path": "/channels"},
        {
            "op": "get",
            "path": "/channels",
            "params": {"filter_by_prefix": "public-", "info": "user_count"},
        },
        {"op": "get", "path": "/channels", "params": {"filter_by_prefix": f"nothing-{tag}"}},
    )
    assert filtered == {
        "status": 200,
        "body": {
            "channels": {
                room_a: {"subscription_count": 3, "user_count": 2},
                room_b: {"subscription_count": 1, "user_count": 1},
            }
        },
    }, filtered
    assert everything["status"] == 200
    assert everything["body"]["channels"][public] == {"subscription_count": 1}
    assert everything["body"]["channels"][room_a]["subscription_count"] == 3
    # user_count needs a presence- prefix (HTTP_API.md §3.3); the SDK surfaces the 400.
    assert bad["status"] == 400, bad
    assert empty == {"status": 200, "body": {"channels": {}}}
    await close_all(*socks)


async def test_get_channel_with_info(server: ServerProcess) -> None:
    room = unique("presence-node-info-")
    public = unique("node-info-")
    cache = unique("cache-node-info-")
    socks = [
        await presence_member(server, room, "user-1", {}),
        await presence_member(server, room, "user-1", {}),
        await presence_member(server, room, "user-2", {}),
        await subscribed(server, public),
    ]
    presence, plain, vacant, published, cached = await node_sdk(
        server.port,
        {
            "op": "get",
            "path": f"/channels/{room}",
            "params": {"info": "user_count,subscription_count"},
        },
        {"op": "get", "path": f"/channels/{public}", "params": {"info": "subscription_count"}},
        {"op": "get", "path": f"/channels/{unique('node-vacant-')}"},
        {"op": "trigger", "channels": [cache], "event": "price", "data": {"v": 2}},
        {"op": "get", "path": f"/channels/{cache}", "params": {"info": "cache"}},
    )
    assert presence == {
        "status": 200,
        "body": {"occupied": True, "subscription_count": 3, "user_count": 2},
    }, presence
    assert plain == {"status": 200, "body": {"occupied": True, "subscription_count": 1}}, plain
    assert vacant == {"status": 200, "body": {"occupied": False, "subscription_count": 0}}, vacant
    assert published["status"] == 200
    assert cached["status"] == 200, cached
    assert cached["body"]["occupied"] is False
    entry = cached["body"]["cache"]
    assert entry["event"] == "price"
    assert entry["data"] == '{"v":2}'
    assert 0 < entry["ttl"] <= 1800
    await close_all(*socks)


async def test_get_channel_users(server: ServerProcess) -> None:
    room = unique("presence-node-users-")
    public = unique("node-users-")
    socks = [
        await presence_member(server, room, "user-1", {"name": "Alice"}),
        await presence_member(server, room, "user-1", {"name": "Alice"}),
        await presence_member(server, room, 42, {"name": "Numeric"}),
    ]
    users, not_presence = await node_sdk(
        server.port,
        {"op": "get", "path": f"/channels/{room}/users"},
        {"op": "get", "path": f"/channels/{public}/users"},
    )
    assert users["status"] == 200, users
    ids = users["body"]["users"]
    assert len(ids) == 2
    # Each user once; an id keeps the JSON type it had in channel_data (HTTP_API.md §3.5).
    assert sorted(ids, key=lambda u: str(u["id"])) == [{"id": 42}, {"id": "user-1"}]
    assert not_presence["status"] == 400, not_presence
    await close_all(*socks)


# -- users -----------------------------------------------------------------------------------


async def test_terminate_user_connections(server: ServerProcess) -> None:
    victim_id, bystander_id = unique("node-victim-"), unique("node-bystander-")
    victim_a = await signed_in(server, victim_id)
    victim_b = await signed_in(server, victim_id)
    bystander = await signed_in(server, bystander_id)

    (result,) = await node_sdk(
        server.port, {"op": "terminateUserConnections", "user_id": victim_id}
    )
    assert result == {"status": 200, "body": {}}, result
    for sock in (victim_a, victim_b):
        assert await sock.recv() == {
            "event": "pusher:error",
            "data": {"code": 4009, "message": "You got disconnected by the app."},
        }
        code, _reason = await sock.closed()
        assert code == 4009
    # Another user's connection is untouched.
    await bystander.send("pusher:ping", {})
    assert await bystander.recv() == {"event": "pusher:pong", "data": {}}
    await bystander.close()


async def test_send_to_user(server: ServerProcess) -> None:
    user_id, other_id = unique("node-user-"), unique("node-other-")
    listening = await signed_in(server, user_id)
    channel = f"#server-to-user-{user_id}"
    reply = await listening.subscribe(channel, auth="")
    assert reply == {
        "event": "pusher_internal:subscription_succeeded",
        "channel": channel,
        "data": "{}",
    }
    not_subscribed = await signed_in(server, user_id)
    other = await signed_in(server, other_id)

    sent, barrier = await node_sdk(
        server.port,
        {"op": "sendToUser", "user_id": user_id, "event": "invoice-paid", "data": {"id": 7}},
        {"op": "sendToUser", "user_id": other_id, "event": "barrier", "data": "b"},
    )
    assert sent == {"status": 200, "body": {}}
    assert barrier == {"status": 200, "body": {}}
    event = {"event": "invoice-paid", "channel": channel, "data": '{"id":7}'}
    # Every connection signed in as the user gets it once, subscribed or not.
    assert await listening.recv() == event
    assert await not_subscribed.recv() == event
    assert await other.recv() == {
        "event": "barrier",
        "channel": f"#server-to-user-{other_id}",
        "data": "b",
    }
    # Exactly once: the next frame on the subscribed connection is a fresh pong.
    await listening.send("pusher:ping", {})
    assert await listening.recv() == {"event": "pusher:pong", "data": {}}
    await close_all(listening, not_subscribed, other)


# -- tokens (RELAY_EXTRAS.md §3) -------------------------------------------------------------


async def test_auth_endpoint_matches_node_sdk_tokens(make_server: Any) -> None:
    srv = make_server({"RELAY_ENCRYPTION_MASTER_KEY_BASE64": MASTER_KEY})
    socket_id = "123.456"
    presence_data = {"user_id": "user-1", "user_info": {"name": "Alice"}}
    user_data = {"id": "user-1", "name": "Alice"}
    results = await node_sdk(
        srv.port,
        {"op": "authorizeChannel", "socket_id": socket_id, "channel": "private-my-channel"},
        {
            "op": "post",
            "path": "/auth",
            "body": {"socket_id": socket_id, "channel_name": "private-my-channel"},
        },
        {
            "op": "authorizeChannel",
            "socket_id": socket_id,
            "channel": "presence-room",
            "data": presence_data,
        },
        {
            "op": "post",
            "path": "/auth",
            "body": {
                "socket_id": socket_id,
                "channel_name": "presence-room",
                "channel_data": presence_data,
            },
        },
        {"op": "authorizeChannel", "socket_id": socket_id, "channel": "private-encrypted-room"},
        {
            "op": "post",
            "path": "/auth",
            "body": {"socket_id": socket_id, "channel_name": "private-encrypted-room"},
        },
        {"op": "authenticateUser", "socket_id": socket_id, "user_data": user_data},
        {"op": "post", "path": "/auth", "body": {"socket_id": socket_id, "user_data": user_data}},
        env={"NODE_SDK_MASTER_KEY_BASE64": MASTER_KEY},
    )
    for sdk, endpoint in zip(results[::2], results[1::2], strict=True):
        assert endpoint == {"status": 200, "body": sdk["token"]}, (sdk, endpoint)
    # PROTOCOL.md §7.4 F1, F2, F5, F4.
    assert results[0]["token"]["auth"].endswith(
        "90b36578c812ffffc249bb7d38b64d493edd75810fa1a907b632009586ad617e"
    )
    assert results[4]["token"]["shared_secret"] == "jLl7T7Vic8zzeBQOhI8a5zJ4iMwqc2omg0xT37NC5hs="
    assert results[6]["token"]["auth"].endswith(
        "0866df7f6aa363476888d18cde80782982d8a208e54f0f9bf8ac7d86f2c50f3c"
    )


# -- limits ----------------------------------------------------------------------------------


async def test_event_data_limit_counts_utf8_bytes(server: ServerProcess) -> None:
    """HTTP_API.md §3: `data` ≤ 102400 UTF-8 bytes, else 413 and nothing is published."""
    channel = unique("node-limit-")
    sock = await subscribed(server, channel)
    at_limit = "é" * 51_200  # 51 200 characters, 102 400 bytes
    over_limit = "é" * 51_201  # 102 402 bytes, still far fewer than 102 400 characters
    ok, too_big, barrier = await node_sdk(
        server.port,
        {"op": "trigger", "channels": [channel], "event": "big", "data": at_limit},
        {"op": "trigger", "channels": [channel], "event": "too-big", "data": over_limit},
        {"op": "trigger", "channels": [channel], "event": "barrier", "data": "b"},
    )
    assert ok == {"status": 200, "body": {}}
    assert too_big["status"] == 413, too_big
    assert barrier["status"] == 200
    assert await sock.recv() == {"event": "big", "channel": channel, "data": at_limit}
    assert await sock.recv() == {"event": "barrier", "channel": channel, "data": "b"}
    await sock.close()
