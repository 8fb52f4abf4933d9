"""The official Python server SDK (pusher-http-python 3.3.x) against a real fastrelay.

Raw WebSocket clients (conftest) observe what the SDK's calls deliver; tokens the SDK builds
(with Python's ``json.dumps`` spacing) must be accepted. HTTP_API.md §3–§4, PROTOCOL.md §5–§7, §10.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pusher
import pytest
from pusher.errors import PusherBadRequest

from conftest import APP_ID, APP_KEY, APP_SECRET, PusherSocket, ServerProcess, connect, token


@pytest.fixture
def sdk(server: ServerProcess) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host="127.0.0.1", port=server.port, ssl=False
    )


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a blocking SDK call off the event loop, so the raw clients keep reading."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def subscribed(server: ServerProcess, *channels: str) -> PusherSocket:
    sock = await connect(server)
    for channel in channels:
        reply = await sock.subscribe(channel)
        assert reply["event"] == "pusher_internal:subscription_succeeded", reply
    return sock


async def presence_member(
    server: ServerProcess, sdk: pusher.Pusher, channel: str, user_id: Any, info: Any
) -> PusherSocket:
    """Join a presence channel with a token the Python SDK built (channel_data as it encoded it)."""
    sock = await connect(server)
    auth = sdk.authenticate(channel, sock.socket_id, {"user_id": user_id, "user_info": info})
    reply = await sock.subscribe(channel, **auth)
    assert reply["event"] == "pusher_internal:subscription_succeeded", reply
    return sock


async def signed_in(server: ServerProcess, sdk: pusher.Pusher, user_id: str) -> PusherSocket:
    sock = await connect(server)
    auth = sdk.authenticate_user(sock.socket_id, {"id": user_id, "name": "Py"})
    await sock.send("pusher:signin", auth)
    reply = await sock.recv()
    assert reply == {"event": "pusher:signin_success", "data": {"user_data": auth["user_data"]}}, (
        reply
    )
    return sock


async def close_all(*socks: PusherSocket) -> None:
    await asyncio.gather(*(s.close() for s in socks))


# -- trigger ---------------------------------------------------------------------------------


async def test_trigger_single_channel_relays_data_verbatim(
    server: ServerProcess, sdk: pusher.Pusher
) -> None:
    channel = unique("py-single-")
    sock = await subscribed(server, channel)
    data = {"msg": "héllo ✓", "nested": {"a": [1, 2]}}
    assert await call(sdk.trigger, channel, "my-event", data) == {}
    assert await call(sdk.trigger, channel, "raw", "not JSON at all") == {}
    # The SDK encodes with json.dumps(ensure_ascii=False): spaces and raw UTF-8, kept byte for byte.
    assert await sock.recv() == {
        "event": "my-event",
        "channel": channel,
        "data": json.dumps(data, ensure_ascii=False),
    }
    assert await sock.recv() == {"event": "raw", "channel": channel, "data": "not JSON at all"}
    await sock.close()


async def test_trigger_multiple_channels_with_socket_id_exclusion(
    server: ServerProcess, sdk: pusher.Pusher
) -> None:
    c1, c2 = unique("py-multi-a-"), unique("py-multi-b-")
    both = await subscribed(server, c1, c2)
    excluded = await subscribed(server, c1, c2)
    only_c2 = await subscribed(server, c2)

    assert await call(sdk.trigger, [c1, c2], "fan", {"n": 1}, socket_id=excluded.socket_id) == {}
    assert await call(sdk.trigger, [c1], "barrier", "b") == {}
    data = json.dumps({"n": 1})

    got = [await both.recv(), await both.recv()]
    assert sorted(m["channel"] for m in got) == sorted([c1, c2])
    assert all(m["event"] == "fan" and m["data"] == data for m in got)
    assert await both.recv() == {"event": "barrier", "channel": c1, "data": "b"}
    assert await only_c2.recv() == {"event": "fan", "channel": c2, "data": data}
    assert await excluded.recv() == {"event": "barrier", "channel": c1, "data": "b"}
    await close_all(both, excluded, only_c2)


async def test_trigger_batch(server: ServerProcess, sdk: pusher.Pusher) -> None:
    c1, c2 = unique("py-batch-a-"), unique("py-batch-b-")
    sock = await subscribed(server, c1, c2)
    batch = [
        {"channel": c1, "name": "one", "data": {"i": 1}},
        {"channel": c2, "name": "two", "data": "2"},
        {"channel": c1, "name": "three", "data": {"i": 3}},
    ]
    assert await call(sdk.trigger_batch, batch) == {}
    assert [await sock.recv() for _ in range(3)] == [
        {"event": "one", "channel": c1, "data": '{"i": 1}'},
        {"event": "two", "channel": c2, "data": "2"},
        {"event": "three", "channel": c1, "data": '{"i": 3}'},
    ]
    await sock.close()


async def test_trigger_batch_over_limit_is_rejected_whole(
    server: ServerProcess, sdk: pusher.Pusher
) -> None:
    channel = unique("py-batch-limit-")
    sock = await subscribed(server, channel)
    batch = [{"channel": channel, "name": f"e{i}", "data": "x"} for i in range(11)]
    with pytest.raises(PusherBadRequest):
        await call(sdk.trigger_batch, batch)
    assert await call(sdk.trigger, channel, "barrier", "b") == {}
    assert await sock.recv() == {"event": "barrier", "channel": channel, "data": "b"}
    await sock.close()


# -- queries ---------------------------------------------------------------------------------


async def test_channels_info_prefix_and_user_count(
    server: ServerProcess, sdk: pusher.Pusher
) -> None:
    tag = uuid.uuid4().hex[:8]
    room = f"presence-py-{tag}"
    public = f"py-public-{tag}"
    socks = [
        await presence_member(server, sdk, room, "user-1", {"name": "Alice"}),
        await presence_member(server, sdk, room, "user-1", {"name": "Alice"}),
        await presence_member(server, sdk, room, "user-2", {"name": "Bob"}),
        await subscribed(server, public),
    ]
    info = await call(
        sdk.channels_info, prefix_filter=f"presence-py-{tag}", attributes=["user_count"]
    )
    assert info == {"channels": {room: {"subscription_count": 3, "user_count": 2}}}
    listing = await call(sdk.channels_info, prefix_filter=f"py-public-{tag}")
    assert listing == {"channels": {public: {"subscription_count": 1}}}
    with pytest.raises(PusherBadRequest):
        await call(sdk.channels_info, prefix_filter="py-public-", attributes=["user_count"])
    await close_all(*socks)


async def test_channel_info(server: ServerProcess, sdk: pusher.Pusher) -> None:
    room = unique("presence-py-info-")
    public = unique("py-info-")
    socks = [
        await presence_member(server, sdk, room, "user-1", {}),
        await presence_member(server, sdk, room, "user-2", {}),
        await subscribed(server, public),
    ]
    assert await call(sdk.channel_info, room, ["user_count", "subscription_count"]) == {
        "occupied": True,
        "user_count": 2,
        "subscription_count": 2,
    }
    assert await call(sdk.channel_info, public) == {"occupied": True, "subscription_count": 1}
    assert await call(sdk.channel_info, unique("py-vacant-")) == {
        "occupied": False,
        "subscription_count": 0,
    }
    with pytest.raises(PusherBadRequest):
        await call(sdk.channel_info, public, ["user_count"])
    await close_all(*socks)


async def test_users_info(server: ServerProcess, sdk: pusher.Pusher) -> None:
    room = unique("presence-py-users-")
    socks = [
        await presence_member(server, sdk, room, "user-1", {"name": "Alice"}),
        await presence_member(server, sdk, room, "user-1", {"name": "Alice"}),
        await presence_member(server, sdk, room, "user-2", {"name": "Bob"}),
    ]
    users = await call(sdk.users_info, room)
    assert sorted(users["users"], key=lambda u: u["id"]) == [{"id": "user-1"}, {"id": "user-2"}]
    await close_all(*socks)
    # Everyone left: the channel is empty again.
    assert await call(sdk.users_info, room) == {"users": []}


# -- users -----------------------------------------------------------------------------------


async def test_terminate_user_connections_short_path(
    server: ServerProcess, sdk: pusher.Pusher
) -> None:
    """pusher-http-python posts to /users/{id}/terminate_connections (no /apps/{id} prefix)."""
    victim_id, other_id = unique("py-victim-"), unique("py-other-")
    victim = await signed_in(server, sdk, victim_id)
    other = await signed_in(server, sdk, other_id)
    assert await call(sdk.terminate_user_connections, victim_id) == {}
    assert await victim.recv() == {
        "event": "pusher:error",
        "data": {"code": 4009, "message": "You got disconnected by the app."},
    }
    code, _reason = await victim.closed()
    assert code == 4009
    await other.send("pusher:ping", {})
    assert await other.recv() == {"event": "pusher:pong", "data": {}}
    await other.close()


async def test_terminate_presence_member_connections(
    server: ServerProcess, sdk: pusher.Pusher
) -> None:
    """PROTOCOL.md §10.5: presence members with that user_id are terminated too."""
    room = unique("presence-py-term-")
    user_id = unique("py-member-")
    member = await presence_member(server, sdk, room, user_id, {})
    watcher = await presence_member(server, sdk, room, "watcher", {})
    assert await call(sdk.terminate_user_connections, user_id) == {}
    # (member first sees the watcher's member_added)
    assert await member.expect("pusher:error") == {
        "event": "pusher:error",
        "data": {"code": 4009, "message": "You got disconnected by the app."},
    }
    assert (await member.closed())[0] == 4009
    removed = await watcher.expect("pusher_internal:member_removed")
    assert removed["channel"] == room
    assert json.loads(removed["data"]) == {"user_id": user_id}
    await watcher.close()


async def test_send_to_user(server: ServerProcess, sdk: pusher.Pusher) -> None:
    user_id, other_id = unique("py-user-"), unique("py-someone-")
    target = await signed_in(server, sdk, user_id)
    other = await signed_in(server, sdk, other_id)
    assert await call(sdk.send_to_user, user_id, "invoice-paid", {"id": 7}) == {}
    assert await call(sdk.send_to_user, other_id, "barrier", "b") == {}
    assert await target.recv() == {
        "event": "invoice-paid",
        "channel": f"#server-to-user-{user_id}",
        "data": '{"id": 7}',
    }
    assert await other.recv() == {
        "event": "barrier",
        "channel": f"#server-to-user-{other_id}",
        "data": "b",
    }
    await close_all(target, other)


# -- tokens built by the SDK -----------------------------------------------------------------


async def test_private_token_from_sdk_is_accepted(
    server: ServerProcess, sdk: pusher.Pusher
) -> None:
    channel = unique("private-py-")
    sock = await connect(server)
    auth = sdk.authenticate(channel, sock.socket_id)
    assert auth == {"auth": token(sock.socket_id, channel)}
    reply = await sock.subscribe(channel, **auth)
    assert reply == {
        "event": "pusher_internal:subscription_succeeded",
        "channel": channel,
        "data": "{}",
    }
    assert await call(sdk.trigger, channel, "hello", "x") == {}
    assert await sock.recv() == {"event": "hello", "channel": channel, "data": "x"}
    await sock.close()


async def test_private_token_with_custom_data_is_accepted(
    server: ServerProcess, sdk: pusher.Pusher
) -> None:
    """With custom_data the SDK signs socket:channel:channel_data (PROTOCOL.md §7.2 rule 3)."""
    channel = unique("private-py-custom-")
    sock = await connect(server)
    auth = sdk.authenticate(channel, sock.socket_id, {"user_id": "u1"})
    assert auth["channel_data"] == '{"user_id": "u1"}'
    reply = await sock.subscribe(channel, **auth)
    assert reply["event"] == "pusher_internal:subscription_succeeded", reply
    await sock.close()


async def test_presence_token_with_python_spacing_is_accepted(
    server: ServerProcess, sdk: pusher.Pusher
) -> None:
    room = unique("presence-py-spacing-")
    first = await presence_member(server, sdk, room, "user-1", {"name": "Alice"})

    second = await connect(server)
    auth = sdk.authenticate(
        room, second.socket_id, {"user_id": "user-2", "user_info": {"name": "Bób"}}
    )
    # Python's json.dumps puts spaces after ':' and ',' and escapes non-ASCII; the server must
    # verify these exact bytes, then read the JSON inside.
    assert auth["channel_data"] == r'{"user_id": "user-2", "user_info": {"name": "B\u00f3b"}}'
    reply = await second.subscribe(room, **auth)
    assert reply["event"] == "pusher_internal:subscription_succeeded", reply
    assert json.loads(reply["data"]) == {
        "presence": {
            "ids": ["user-1", "user-2"],
            "hash": {"user-1": {"name": "Alice"}, "user-2": {"name": "Bób"}},
            "count": 2,
        }
    }
    added = await first.recv()
    assert added["event"] == "pusher_internal:member_added"
    assert json.loads(added["data"]) == {"user_id": "user-2", "user_info": {"name": "Bób"}}
    await close_all(first, second)


async def test_presence_token_for_other_socket_is_refused(
    server: ServerProcess, sdk: pusher.Pusher
) -> None:
    room = unique("presence-py-stolen-")
    victim = await connect(server)
    thief = await connect(server)
    auth = sdk.authenticate(room, victim.socket_id, {"user_id": "user-1"})
    reply = await thief.subscribe(room, **auth)
    assert reply["event"] == "pusher:subscription_error", reply
    assert reply["channel"] == room
    assert reply["data"]["type"] == "AuthError"
    assert reply["data"]["status"] == 401
    await close_all(victim, thief)


async def test_signin_token_from_sdk_is_accepted(server: ServerProcess, sdk: pusher.Pusher) -> None:
    sock = await connect(server)
    auth = sdk.authenticate_user(sock.socket_id, {"id": "py-signin", "name": "Py Thon"})
    assert auth["user_data"] == '{"id": "py-signin", "name": "Py Thon"}'
    await sock.send("pusher:signin", auth)
    assert await sock.recv() == {
        "event": "pusher:signin_success",
        "data": {"user_data": auth["user_data"]},
    }
    await sock.close()


async def test_channel_name_with_every_allowed_character(
    server: ServerProcess, sdk: pusher.Pusher
) -> None:
    """`-_=@,.;` in a name travel unescaped in the SDK's URL path and in the signature."""
    room = unique("presence-py-a_b=c@d,e.f;g-")
    member = await presence_member(server, sdk, room, "user-1", {})
    assert await call(sdk.channel_info, room, ["user_count"]) == {
        "occupied": True,
        "subscription_count": 1,
        "user_count": 1,
    }
    assert await call(sdk.users_info, room) == {"users": [{"id": "user-1"}]}
    assert await call(sdk.trigger, room, "odd-name", "x") == {}
    assert await member.recv() == {"event": "odd-name", "channel": room, "data": "x"}
    await member.close()
