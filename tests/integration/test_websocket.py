"""The Pusher WebSocket protocol (PROTOCOL.md), checked over real sockets against a real server.

Every exact JSON shape here comes from the spec: ``connection_established``,
``subscription_succeeded``, member events, ``subscription_count`` and watchlist events carry
``data`` as a JSON *string*;
``pusher:error``, ``subscription_error``, ``signin_success`` and ``pong`` carry an *object*.

Nothing sleeps. "Nothing else arrived" is proven with a barrier: a ``pusher:ping`` whose
``pusher:pong`` must be the very next message (the server writes to one socket in order).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import uuid
from typing import Any

import pytest
import websockets

from conftest import (
    APP_ID,
    TIMEOUT,
    PusherSocket,
    ServerProcess,
    api,
    connect,
    connect_raw,
    http,
    signin_token,
    token,
)

SOCKET_ID = re.compile(r"^[0-9]{1,10}\.[0-9]{1,10}$")
PONG = {"event": "pusher:pong", "data": {}}
CLOSING = "Server is closing. Please reconnect shortly."
NOT_AUTHORIZED = "Connection not authorized."


# -- helpers ---------------------------------------------------------------------------------


def unique(prefix: str) -> str:
    """A channel or user name no other test uses (the shared server keeps state)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def compact(value: Any) -> str:
    """JSON the way pusher-js writes it (and signs it): no spaces."""
    return json.dumps(value, separators=(",", ":"))


async def assert_quiet(sock: PusherSocket) -> None:
    """Nothing is waiting for ``sock``: the pong to a fresh ping is the next message."""
    await sock.send("pusher:ping", {})
    assert await sock.recv() == PONG


async def refused(sock: PusherSocket) -> tuple[dict[str, Any], int | None]:
    """Read the handshake error and the close code that follows it."""
    error = await sock.recv()
    code, _reason = await sock.closed()
    return error, code


def error_event(code: int | None, message: str, channel: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"event": "pusher:error", "data": {"code": code, "message": message}}
    if channel is not None:
        event["channel"] = channel
    return event


def succeeded(channel: str, data: str = "{}") -> dict[str, Any]:
    return {"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": data}


async def subscribe_private(sock: PusherSocket, channel: str) -> dict[str, Any]:
    return await sock.subscribe(channel, auth=token(sock.socket_id, channel))


async def join(
    sock: PusherSocket, channel: str, user_id: Any, user_info: Any = None
) -> dict[str, Any]:
    """Subscribe to a presence channel; returns the reply (normally subscription_succeeded)."""
    member: dict[str, Any] = {"user_id": user_id}
    if user_info is not None:
        member["user_info"] = user_info
    channel_data = compact(member)
    return await sock.subscribe(
        channel, auth=token(sock.socket_id, channel, channel_data), channel_data=channel_data
    )


def presence_of(message: dict[str, Any]) -> dict[str, Any]:
    assert message["event"] == "pusher_internal:subscription_succeeded", message
    assert isinstance(message["data"], str)
    return json.loads(message["data"])["presence"]


async def sign_in(sock: PusherSocket, user_id: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    """Send a valid ``pusher:signin``; returns (user_data, first reply)."""
    user_data = compact({"id": user_id, **extra})
    await sock.send(
        "pusher:signin", {"auth": signin_token(sock.socket_id, user_data), "user_data": user_data}
    )
    return user_data, await sock.recv()


async def publish(server: ServerProcess, channel: str, name: str, data: str) -> None:
    status, body = await asyncio.to_thread(
        api,
        server,
        "POST",
        f"/apps/{APP_ID}/events",
        {"name": name, "channel": channel, "data": data},
    )
    assert status == 200, body


def watchlist_data(message: dict[str, Any]) -> dict[str, Any]:
    assert message["event"] == "pusher_internal:watchlist_events", message
    assert "channel" not in message
    assert isinstance(message["data"], str)
    return json.loads(message["data"])


# -- connection_established (§1.3) -----------------------------------------------------------


async def test_connection_established_shape(server: ServerProcess) -> None:
    sock = await connect_raw(server)
    message = await sock.recv()
    assert set(message) == {"event", "data"}
    assert message["event"] == "pusher:connection_established"
    assert isinstance(message["data"], str)  # Pysher json.loads() it
    data = json.loads(message["data"])
    assert set(data) == {"socket_id", "activity_timeout"}
    assert SOCKET_ID.match(data["socket_id"])
    assert not data["socket_id"].startswith("0") and ".0" not in data["socket_id"]
    assert data["activity_timeout"] == 30
    await sock.close()


async def test_socket_ids_are_distinct(server: ServerProcess) -> None:
    socks = [await connect(server) for _ in range(5)]
    assert len({s.socket_id for s in socks}) == 5
    for sock in socks:
        await sock.close()


async def test_activity_timeout_is_configurable(make_server: Any) -> None:
    srv = make_server({"RELAY_ACTIVITY_TIMEOUT": "7"})
    sock = await connect_raw(srv)
    assert json.loads((await sock.recv())["data"])["activity_timeout"] == 7
    await sock.close()


async def test_protocol_6_pysher_is_served(server: ServerProcess) -> None:
    sock = await connect(server, query="protocol=6&client=Pysher&version=1.0.8")
    await assert_quiet(sock)
    await sock.close()


@pytest.mark.parametrize("version", ["4", "5", "7"])
async def test_protocol_versions_4_to_7_are_served(server: ServerProcess, version: str) -> None:
    sock = await connect(server, query=f"protocol={version}")
    await assert_quiet(sock)
    await sock.close()


async def test_missing_protocol_is_served_by_default(server: ServerProcess) -> None:
    sock = await connect(server, query="")
    await assert_quiet(sock)
    await sock.close()


# -- handshake errors, in the order of §1.2 ---------------------------------------------------


async def test_unknown_app_key_4001(server: ServerProcess) -> None:
    error, code = await refused(await connect_raw(server, key="nope"))
    assert error == error_event(4001, "App key nope does not exist.")
    assert code == 4001


async def test_disabled_app_4003(make_server: Any) -> None:
    srv = make_server({"RELAY_APP_ENABLED": "false"})
    error, code = await refused(await connect_raw(srv))
    assert error == error_event(4003, "The app is not enabled.")
    assert code == 4003


@pytest.mark.parametrize("key", ["", "app-key/extra", "app-key/"])
async def test_bad_path_4005(server: ServerProcess, key: str) -> None:
    error, code = await refused(await connect_raw(server, key=key))
    assert error == error_event(4005, "Path not found")
    assert code == 4005


@pytest.mark.parametrize("version", ["abc", "", "7.0", "-7", "%C2%B2", "%D9%A7"])
async def test_protocol_not_an_integer_4006(server: ServerProcess, version: str) -> None:
    error, code = await refused(await connect_raw(server, query=f"protocol={version}"))
    assert error == error_event(4006, "Invalid version string format")
    assert code == 4006


@pytest.mark.parametrize("version", ["3", "8"])
async def test_unsupported_protocol_4007(server: ServerProcess, version: str) -> None:
    error, code = await refused(await connect_raw(server, query=f"protocol={version}"))
    assert error == error_event(4007, f"Unsupported protocol version: {version}")
    assert code == 4007


async def test_missing_protocol_4008_only_in_strict_mode(make_server: Any) -> None:
    srv = make_server({"RELAY_REQUIRE_PROTOCOL": "true"})
    error, code = await refused(await connect_raw(srv, query="client=js"))
    assert error == error_event(4008, "No protocol version supplied")
    assert code == 4008
    sock = await connect(srv, query="protocol=7")
    await assert_quiet(sock)
    await sock.close()


async def test_protocol_is_checked_before_the_app_key(server: ServerProcess) -> None:
    error, code = await refused(await connect_raw(server, key="nope", query="protocol=8"))
    assert (error["data"]["code"], code) == (4007, 4007)


async def test_origin_not_allowed_4009(make_server: Any) -> None:
    srv = make_server({"RELAY_APP_ALLOWED_ORIGINS": "good.example.com,*.trusted.org"})
    for origin in ("https://evil.example.com", "https://trusted.org.evil.com", None):
        sock = await connect_raw(srv, origin=origin)
        error, code = await refused(sock)
        assert error == error_event(4009, "Origin not allowed")
        assert code == 4009
    for origin in (
        "https://good.example.com",
        "http://good.example.com:8080",
        "https://a.trusted.org",
    ):
        allowed = await connect(srv, origin=origin)
        await assert_quiet(allowed)
        await allowed.close()


async def test_connection_quota_4100_then_room_again(make_server: Any) -> None:
    srv = make_server({"RELAY_APP_MAX_CONNECTIONS": "2"})
    first = await connect(srv)
    second = await connect(srv)
    error, code = await refused(await connect_raw(srv))
    assert error == error_event(4100, "The current concurrent connections quota has been reached.")
    assert code == 4100
    await first.close()  # the close handshake ends after the server dropped the connection
    third = await connect(srv)
    await assert_quiet(third)
    await assert_quiet(second)
    await second.close()
    await third.close()


async def test_plain_get_on_the_websocket_path_is_426(server: ServerProcess) -> None:
    status, headers, body = await asyncio.to_thread(
        http, "GET", f"{server.http}/app/app-key?protocol=7"
    )
    assert status == 426
    assert headers.get("Content-Type", "").startswith("application/json")
    assert json.loads(body)


async def test_app_selected_by_key_with_several_apps(make_server: Any) -> None:
    apps = [
        {"id": "1", "key": "app-key", "secret": "app-secret"},
        {"id": "2", "key": "off-key", "secret": "s2", "enabled": False},
    ]
    srv = make_server({"RELAY_APPS": json.dumps(apps)})
    sock = await connect(srv)
    await assert_quiet(sock)
    error, code = await refused(await connect_raw(srv, key="off-key"))
    assert (error["data"]["code"], code) == (4003, 4003)
    await sock.close()


# -- ping / pong and liveness (§3.3, §4) -------------------------------------------------------


@pytest.mark.parametrize("data", [{}, ""])
async def test_pusher_ping_gets_pong(server: ServerProcess, data: Any) -> None:
    sock = await connect(server)
    await sock.send("pusher:ping", data)
    assert await sock.recv() == PONG
    await sock.close()


async def test_pusher_ping_without_data_gets_pong(server: ServerProcess) -> None:
    sock = await connect(server)
    await sock.ws.send('{"event":"pusher:ping"}')
    assert await sock.recv() == PONG
    await sock.close()


async def test_websocket_ping_frame_gets_pong_frame(server: ServerProcess) -> None:
    sock = await connect(server)
    pong = await sock.ws.ping(b"are you there")  # resolves only on a pong with this payload
    await asyncio.wait_for(pong, TIMEOUT)
    await sock.close()


async def test_server_pings_after_silence_then_closes_4201(make_server: Any) -> None:
    srv = make_server({"RELAY_PING_INTERVAL": "0.3", "RELAY_PONG_TIMEOUT": "0.3"})
    sock = await connect(srv, ping_interval=None)
    assert await sock.recv() == {"event": "pusher:ping", "data": {}}
    assert await sock.recv() == error_event(4201, "Pong reply not received in time")
    code, _reason = await sock.closed()
    assert code == 4201


async def test_answered_server_ping_keeps_connection(make_server: Any) -> None:
    srv = make_server({"RELAY_PING_INTERVAL": "0.3", "RELAY_PONG_TIMEOUT": "0.3"})
    sock = await connect(srv, ping_interval=None)
    for _ in range(3):
        assert await sock.recv() == {"event": "pusher:ping", "data": {}}
        await sock.send("pusher:pong", {})
    await sock.close()


async def test_websocket_pong_frame_counts_as_activity(make_server: Any) -> None:
    srv = make_server({"RELAY_PING_INTERVAL": "0.3", "RELAY_PONG_TIMEOUT": "0.3"})
    sock = await connect(srv, ping_interval=None)
    for _ in range(2):
        assert await sock.recv() == {"event": "pusher:ping", "data": {}}
        await sock.ws.pong(b"")
    await sock.close()


async def test_pong_timeout_runs_disconnect_path(make_server: Any) -> None:
    srv = make_server({"RELAY_PING_INTERVAL": "0.4", "RELAY_PONG_TIMEOUT": "0.4"})
    channel = unique("presence-liveness")
    silent = await connect(srv, ping_interval=None)
    await join(silent, channel, "silent")
    alive = await connect(srv, ping_interval=None)
    await join(alive, channel, "alive")
    # `alive` answers every ping until it sees the silent member leave.
    while True:
        message = await alive.recv()
        if message["event"] == "pusher:ping":
            await alive.send("pusher:pong", {})
            continue
        assert message == {
            "event": "pusher_internal:member_removed",
            "channel": channel,
            "data": compact({"user_id": "silent"}),
        }
        break
    assert (await silent.closed())[0] == 4201
    await alive.close()


# -- malformed input (§2.3) --------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["not json", "[1,2]", '"pusher:ping"', "null", '{"data":{}}', '{"event":5}', "{"],
)
async def test_malformed_message_error_code_null_and_stays_open(
    server: ServerProcess, raw: str
) -> None:
    sock = await connect(server)
    await sock.ws.send(raw)
    assert await sock.recv() == error_event(None, "Invalid message format")
    await assert_quiet(sock)
    await sock.close()


@pytest.mark.parametrize("data", [{}, {"channel": 5}, "not an object", None])
async def test_subscribe_without_channel(server: ServerProcess, data: Any) -> None:
    sock = await connect(server)
    await sock.ws.send(compact({"event": "pusher:subscribe", "data": data}))
    assert await sock.recv() == error_event(None, "Invalid subscription request: missing channel")
    await assert_quiet(sock)
    await sock.close()


async def test_unknown_events_are_ignored(server: ServerProcess) -> None:
    sock = await connect(server)
    await sock.send("pusher:whatever", {})
    await sock.send("pusher_internal:subscription_succeeded", "{}", channel="x")
    await sock.send("not-a-client-event", {}, channel="x")
    await assert_quiet(sock)
    await sock.close()


async def test_subscribe_data_as_json_string_is_accepted(server: ServerProcess) -> None:
    sock = await connect(server)
    channel = unique("string-data")
    await sock.send("pusher:subscribe", compact({"channel": channel}))
    assert await sock.recv() == succeeded(channel)
    await sock.close()


# -- subscribing (§3.4-§3.7, §5) ----------------------------------------------------------------


async def test_public_subscribe_with_and_without_auth(server: ServerProcess) -> None:
    sock = await connect(server)
    first, second = unique("public"), unique("public")
    assert await sock.subscribe(first, auth="") == succeeded(first)
    assert await sock.subscribe(second) == succeeded(second)  # Pysher omits auth
    await sock.close()


@pytest.mark.parametrize("prefix", ["private", "private-encrypted"])
async def test_private_and_encrypted_subscribe(server: ServerProcess, prefix: str) -> None:
    sock = await connect(server)
    channel = unique(prefix)
    assert await subscribe_private(sock, channel) == succeeded(channel)
    await sock.close()


async def test_private_signature_over_channel_data_is_accepted(server: ServerProcess) -> None:
    sock = await connect(server)
    channel, extra = unique("private"), compact({"user_id": "x"})
    reply = await sock.subscribe(
        channel, auth=token(sock.socket_id, channel, extra), channel_data=extra
    )
    assert reply == succeeded(channel)
    await sock.close()


@pytest.mark.parametrize(
    "prefix", ["cache", "private-cache", "private-encrypted-cache", "presence-cache"]
)
async def test_cache_variants_subscribe_then_cache_miss(server: ServerProcess, prefix: str) -> None:
    sock = await connect(server)
    channel = unique(prefix)
    if prefix.startswith("presence"):
        reply = await join(sock, channel, "cache-user")
        assert presence_of(reply)["count"] == 1
    elif prefix.startswith("private"):
        assert await subscribe_private(sock, channel) == succeeded(channel)
    else:
        assert await sock.subscribe(channel) == succeeded(channel)
    # cache_miss has no data at all (soketi, Reverb).
    assert await sock.recv() == {"event": "pusher:cache_miss", "channel": channel}
    await assert_quiet(sock)
    await sock.close()


async def test_bad_signature_subscription_error_and_pusher_error(server: ServerProcess) -> None:
    sock = await connect(server)
    channel = unique("private")
    bad = "app-key:" + "0" * 64
    expected = (
        f"Invalid signature: Expected HMAC SHA256 hex digest of {sock.socket_id}:{channel}, "
        f"but got {bad}"
    )
    assert await sock.subscribe(channel, auth=bad) == {
        "event": "pusher:subscription_error",
        "channel": channel,
        "data": {"type": "AuthError", "error": expected, "status": 401},
    }
    assert await sock.recv() == error_event(None, expected)  # no channel, like real Pusher
    # The connection still works, and a correct signature now succeeds.
    await assert_quiet(sock)
    assert await subscribe_private(sock, channel) == succeeded(channel)
    await sock.close()


@pytest.mark.parametrize(
    "auth",
    [
        None,
        "",
        "app-key",
        "other-key:" + "0" * 64,
        "app-key:not-hex",
        "app-key:" + "0" * 63,
    ],
)
async def test_malformed_auth_is_an_auth_error(server: ServerProcess, auth: str | None) -> None:
    sock = await connect(server)
    channel = unique("private")
    data: dict[str, Any] = {} if auth is None else {"auth": auth}
    reply = await sock.subscribe(channel, **data)
    assert reply["event"] == "pusher:subscription_error"
    assert reply["channel"] == channel
    assert reply["data"]["type"] == "AuthError" and reply["data"]["status"] == 401
    error = await sock.recv()
    assert error["event"] == "pusher:error" and error["data"]["code"] is None
    assert "channel" not in error
    await assert_quiet(sock)
    await sock.close()


async def test_signature_hex_is_case_insensitive(server: ServerProcess) -> None:
    sock = await connect(server)
    channel = unique("private")
    key, hex_digest = token(sock.socket_id, channel).split(":")
    assert await sock.subscribe(channel, auth=f"{key}:{hex_digest.upper()}") == succeeded(channel)
    await sock.close()


async def test_wrong_key_signature_for_another_socket(server: ServerProcess) -> None:
    sock = await connect(server)
    channel = unique("private")
    reply = await sock.subscribe(channel, auth=token("1.1", channel))
    assert reply["data"]["type"] == "AuthError"
    await sock.close()


async def test_presence_signature_must_cover_channel_data(server: ServerProcess) -> None:
    sock = await connect(server)
    channel = unique("presence")
    channel_data = compact({"user_id": "u"})
    reply = await sock.subscribe(
        channel, auth=token(sock.socket_id, channel), channel_data=channel_data
    )
    assert reply["event"] == "pusher:subscription_error"
    assert reply["data"]["error"].startswith(
        f"Invalid signature: Expected HMAC SHA256 hex digest of {sock.socket_id}:{channel}:"
        f"{channel_data}, but got "
    )
    await sock.close()


@pytest.mark.parametrize(
    "channel_data",
    [None, "not json", "[1]", '{"user_info":{}}', '{"user_id":""}', '{"user_id":true}'],
)
async def test_presence_bad_channel_data_is_auth_error(
    server: ServerProcess, channel_data: str | None
) -> None:
    sock = await connect(server)
    channel = unique("presence")
    data: dict[str, Any] = {"auth": token(sock.socket_id, channel, channel_data)}
    if channel_data is not None:
        data["channel_data"] = channel_data
    reply = await sock.subscribe(channel, **data)
    assert reply["event"] == "pusher:subscription_error"
    assert reply["data"]["type"] == "AuthError" and reply["data"]["status"] == 401
    await assert_quiet(sock)  # no pusher:error for these (§5.4)
    await sock.close()


async def test_channel_name_too_long(server: ServerProcess) -> None:
    sock = await connect(server)
    name = "a" * 201
    reply = await sock.subscribe(name)
    assert reply["event"] == "pusher:subscription_error"
    assert reply["channel"] == name
    assert reply["data"]["type"] == "LimitReached" and reply["data"]["status"] == 4009
    ok = "b" * 200
    assert await sock.subscribe(ok) == succeeded(ok)
    await sock.close()


@pytest.mark.parametrize(
    "name", ["has space", "bang!", "#hash", "#server-to-user-", "ünïcode", "a/b", "private-a#b"]
)
async def test_channel_name_invalid_characters(server: ServerProcess, name: str) -> None:
    sock = await connect(server)
    reply = await sock.subscribe(name)
    assert reply["event"] == "pusher:subscription_error"
    assert reply["channel"] == name
    assert reply["data"]["type"] == "InvalidChannel" and reply["data"]["status"] == 4009
    await assert_quiet(sock)
    await sock.close()


async def test_all_allowed_characters(server: ServerProcess) -> None:
    sock = await connect(server)
    name = "-azAZ09_=@,.;" + unique("x")
    assert await sock.subscribe(name) == succeeded(name)
    await sock.close()


async def test_double_subscribe_repeats_success_without_member_added(
    server: ServerProcess,
) -> None:
    channel = unique("presence-double")
    watcher = await connect(server)
    await join(watcher, channel, "watcher")
    sock = await connect(server)
    first = await join(sock, channel, "double", {"n": 1})
    member_added = await watcher.recv()
    assert member_added["event"] == "pusher_internal:member_added"
    again = await join(sock, channel, "double", {"n": 1})
    assert presence_of(again) == presence_of(first)
    await assert_quiet(watcher)
    await assert_quiet(sock)
    public = unique("public")
    assert await sock.subscribe(public) == succeeded(public)
    assert await sock.subscribe(public) == succeeded(public)
    await sock.close()
    await watcher.close()


async def test_unsubscribe_is_silent_and_stops_delivery(server: ServerProcess) -> None:
    sock = await connect(server)
    channel = unique("public")
    await sock.subscribe(channel)
    await sock.send("pusher:unsubscribe", {"channel": channel})
    await sock.send("pusher:unsubscribe", {"channel": unique("never-subscribed")})
    await assert_quiet(sock)
    await publish(server, channel, "after", "{}")
    await assert_quiet(sock)
    await sock.close()


async def test_published_event_shape(server: ServerProcess) -> None:
    sock = await connect(server)
    channel = unique("public")
    await sock.subscribe(channel)
    data = '{"price": 10, "text":"é\\n"}'
    await publish(server, channel, "price-updated", data)
    assert await sock.recv() == {"event": "price-updated", "channel": channel, "data": data}
    await sock.close()


# -- presence (§3.5, §3.8, §6) ------------------------------------------------------------------


async def test_presence_subscription_succeeded_payload(server: ServerProcess) -> None:
    channel = unique("presence-room")
    alice = await connect(server)
    assert presence_of(await join(alice, channel, 42, {"name": "Alice"})) == {
        "ids": [42],
        "hash": {"42": {"name": "Alice"}},
        "count": 1,
    }
    bob = await connect(server)
    payload = presence_of(await join(bob, channel, "user-2"))
    assert payload == {
        "ids": [42, "user-2"],  # ids keep their JSON type
        "hash": {"42": {"name": "Alice"}, "user-2": {}},  # no user_info → {}
        "count": 2,
    }
    assert await alice.recv() == {
        "event": "pusher_internal:member_added",
        "channel": channel,
        "data": compact({"user_id": "user-2", "user_info": {}}),
    }
    await assert_quiet(bob)  # never told about itself
    await alice.close()
    await bob.close()


async def test_member_added_once_per_user(server: ServerProcess) -> None:
    channel = unique("presence-tabs")
    observer = await connect(server)
    await join(observer, channel, "observer")
    tab1, tab2 = await connect(server), await connect(server)
    await join(tab1, channel, "multi", {"tab": 1})
    assert (await observer.recv())["event"] == "pusher_internal:member_added"
    payload = presence_of(await join(tab2, channel, "multi", {"tab": 2}))
    assert payload["count"] == 2
    assert payload["hash"]["multi"] == {"tab": 1}  # earliest connection's user_info
    await assert_quiet(observer)
    await assert_quiet(tab1)
    # 1 and "1" are one user.
    one_a, one_b = await connect(server), await connect(server)
    await join(one_a, channel, 1)
    assert json.loads((await observer.recv())["data"])["user_id"] == 1
    assert presence_of(await join(one_b, channel, "1"))["count"] == 3
    await assert_quiet(observer)
    for sock in (observer, tab1, tab2, one_a, one_b):
        await sock.close()


async def test_member_removed_after_last_connection_leaves(server: ServerProcess) -> None:
    channel = unique("presence-leave")
    observer = await connect(server)
    await join(observer, channel, "observer")
    tab1, tab2 = await connect(server), await connect(server)
    await join(tab1, channel, "leaver", {"tab": 1})
    await observer.expect("pusher_internal:member_added")
    await join(tab2, channel, "leaver", {"tab": 2})
    await tab1.send("pusher:unsubscribe", {"channel": channel})
    await assert_quiet(tab1)
    await assert_quiet(observer)  # one connection of the user is still there
    # The hash now carries the remaining connection's user_info.
    late = await connect(server)
    assert presence_of(await join(late, channel, "late"))["hash"]["leaver"] == {"tab": 2}
    await observer.expect("pusher_internal:member_added")
    await late.close()
    await observer.expect("pusher_internal:member_removed")
    await tab2.close()  # disconnect, not unsubscribe
    assert await observer.recv() == {
        "event": "pusher_internal:member_removed",
        "channel": channel,
        "data": compact({"user_id": "leaver"}),
    }
    await tab1.close()
    await observer.close()


async def test_unsubscribe_of_last_connection_sends_member_removed(server: ServerProcess) -> None:
    channel = unique("presence-unsub")
    observer, leaver = await connect(server), await connect(server)
    await join(observer, channel, "observer")
    await join(leaver, channel, 7)
    await observer.expect("pusher_internal:member_added")
    await leaver.send("pusher:unsubscribe", {"channel": channel})
    assert await observer.recv() == {
        "event": "pusher_internal:member_removed",
        "channel": channel,
        "data": compact({"user_id": 7}),
    }
    await assert_quiet(leaver)
    await observer.close()
    await leaver.close()


async def test_disconnect_of_presence_member_notifies_others(server: ServerProcess) -> None:
    channel = unique("presence-gone")
    stays, goes = await connect(server), await connect(server)
    await join(stays, channel, "stays")
    await join(goes, channel, "goes", {"x": 1})
    await stays.expect("pusher_internal:member_added")
    await goes.ws.close()
    assert await stays.recv() == {
        "event": "pusher_internal:member_removed",
        "channel": channel,
        "data": compact({"user_id": "goes"}),
    }
    again = await connect(server)
    assert presence_of(await join(again, channel, "again"))["ids"] == ["stays", "again"]
    await stays.close()
    await again.close()


async def test_presence_member_limit(make_server: Any) -> None:
    srv = make_server({"RELAY_PRESENCE_MAX_MEMBERS": "2"})
    channel = unique("presence-full")
    a, b, c, a2 = [await connect(srv) for _ in range(4)]
    await join(a, channel, "a")
    await join(b, channel, "b")
    reply = await join(c, channel, "c")
    assert reply["event"] == "pusher:subscription_error"
    assert reply["channel"] == channel
    assert reply["data"]["type"] == "LimitReached" and reply["data"]["status"] == 4100
    await assert_quiet(c)  # no pusher:error, still connected
    assert presence_of(await join(a2, channel, "a"))["count"] == 2  # not a new user
    await b.send("pusher:unsubscribe", {"channel": channel})
    await a.expect("pusher_internal:member_removed")
    assert presence_of(await join(c, channel, "c"))["count"] == 2
    for sock in (a, b, c, a2):
        await sock.close()


async def test_presence_user_info_too_large(server: ServerProcess) -> None:
    sock = await connect(server)
    channel = unique("presence-big")
    reply = await join(sock, channel, "big", {"blob": "x" * 2100})
    assert reply["event"] == "pusher:subscription_error"
    assert reply["data"]["type"] == "LimitReached" and reply["data"]["status"] == 4301
    await assert_quiet(sock)
    fits = await join(sock, channel, "small", {"blob": "x" * 1000})
    assert presence_of(fits)["count"] == 1
    await sock.close()


async def test_presence_user_id_too_long(server: ServerProcess) -> None:
    sock = await connect(server)
    reply = await join(sock, unique("presence-long-id"), "u" * 129)
    assert reply["event"] == "pusher:subscription_error"
    assert reply["data"]["type"] == "AuthError"
    await sock.close()


# -- client events (§3.12, §8) ------------------------------------------------------------------


async def test_client_event_relayed_to_others_not_sender(server: ServerProcess) -> None:
    channel = unique("private-chat")
    sender, receiver = await connect(server), await connect(server)
    await subscribe_private(sender, channel)
    await subscribe_private(receiver, channel)
    await sender.send("client-typing", {"who": "a"}, channel=channel)
    assert await receiver.recv() == {
        "event": "client-typing",
        "channel": channel,
        "data": {"who": "a"},  # object stays object
    }
    await sender.send("client-typing", '{"who":"b"}', channel=channel)
    assert await receiver.recv() == {
        "event": "client-typing",
        "channel": channel,
        "data": '{"who":"b"}',  # string stays string
    }
    await assert_quiet(sender)
    await sender.close()
    await receiver.close()


async def test_client_event_on_presence_carries_user_id(server: ServerProcess) -> None:
    channel = unique("presence-chat")
    sender, receiver = await connect(server), await connect(server)
    await join(sender, channel, "user-1")
    await join(receiver, channel, "user-2")
    await sender.expect("pusher_internal:member_added")
    await sender.send("client-typing", {"on": True}, channel=channel)
    assert await receiver.recv() == {
        "event": "client-typing",
        "channel": channel,
        "data": {"on": True},
        "user_id": "user-1",
    }
    await assert_quiet(sender)
    await sender.close()
    await receiver.close()


async def test_client_event_on_private_cache_is_relayed_never_cached(
    server: ServerProcess,
) -> None:
    channel = unique("private-cache-chat")
    sender, receiver = await connect(server), await connect(server)
    await subscribe_private(sender, channel)
    await sender.expect("pusher:cache_miss")
    await subscribe_private(receiver, channel)
    await receiver.expect("pusher:cache_miss")
    await sender.send("client-note", {"n": 1}, channel=channel)
    assert (await receiver.recv())["event"] == "client-note"
    late = await connect(server)
    assert await subscribe_private(late, channel) == succeeded(channel)
    assert await late.recv() == {"event": "pusher:cache_miss", "channel": channel}
    for sock in (sender, receiver, late):
        await sock.close()


ONLY_PRIVATE = "Client events are only allowed on private and presence channels."


@pytest.mark.parametrize(
    "prefix", ["public", "cache", "private-encrypted", "private-encrypted-cache"]
)
async def test_client_event_rejected_on_channel_type(server: ServerProcess, prefix: str) -> None:
    channel = unique(prefix)
    sender, other = await connect(server), await connect(server)
    for sock in (sender, other):
        if prefix.startswith("private"):
            assert await subscribe_private(sock, channel) == succeeded(channel)
        else:
            assert await sock.subscribe(channel) == succeeded(channel)
        if "cache" in prefix:
            await sock.expect("pusher:cache_miss")
    await sender.send("client-x", {}, channel=channel)
    assert await sender.recv() == error_event(4301, ONLY_PRIVATE, channel)
    await assert_quiet(sender)
    await assert_quiet(other)  # not relayed
    await sender.close()
    await other.close()


async def test_client_event_rejected_on_user_channel(server: ServerProcess) -> None:
    sock = await connect(server)
    user = unique("ce-user")
    await sign_in(sock, user)
    channel = f"#server-to-user-{user}"
    assert await sock.subscribe(channel) == succeeded(channel)
    await sock.send("client-x", {}, channel=channel)
    assert await sock.recv() == error_event(4301, ONLY_PRIVATE, channel)
    await sock.close()


async def test_client_event_rejected_when_not_subscribed(server: ServerProcess) -> None:
    channel = unique("private-closed")
    member, outsider = await connect(server), await connect(server)
    await subscribe_private(member, channel)
    await outsider.send("client-x", {}, channel=channel)
    assert await outsider.recv() == error_event(
        4301, "The client is not a member of the specified channel.", channel
    )
    await assert_quiet(member)
    await assert_quiet(outsider)
    await member.close()
    await outsider.close()


async def test_client_event_name_too_long(server: ServerProcess) -> None:
    channel = unique("private-names")
    sender, other = await connect(server), await connect(server)
    await subscribe_private(sender, channel)
    await subscribe_private(other, channel)
    name = "client-" + "x" * 194  # 201 characters
    await sender.send(name, {}, channel=channel)
    assert await sender.recv() == error_event(
        4301, "Event name is too long. Maximum allowed size is 200.", channel
    )
    await sender.send(name[:200], {}, channel=channel)
    assert (await other.recv())["event"] == name[:200]
    await sender.close()
    await other.close()


async def test_client_event_data_too_large(server: ServerProcess) -> None:
    channel = unique("private-big")
    sender, other = await connect(server), await connect(server)
    await subscribe_private(sender, channel)
    await subscribe_private(other, channel)
    await sender.send("client-big", "x" * (100 * 1024 + 1), channel=channel)
    assert await sender.recv() == error_event(
        4301, "The event data should be less than 100 KB.", channel
    )
    await assert_quiet(other)
    await sender.send("client-big", "x" * (100 * 1024), channel=channel)
    assert len((await other.recv())["data"]) == 100 * 1024
    await sender.close()
    await other.close()


async def test_client_event_without_channel_is_malformed(server: ServerProcess) -> None:
    sock = await connect(server)
    await sock.send("client-x", {})
    assert await sock.recv() == error_event(None, "Invalid message format")
    await sock.close()


async def test_client_events_disabled(make_server: Any) -> None:
    srv = make_server({"RELAY_APP_ENABLE_CLIENT_MESSAGES": "false"})
    channel = unique("private-off")
    sender, other = await connect(srv), await connect(srv)
    await subscribe_private(sender, channel)
    await subscribe_private(other, channel)
    await sender.send("client-x", {}, channel=channel)
    assert await sender.recv() == error_event(
        4301, "The app does not have client messaging enabled.", channel
    )
    await assert_quiet(other)
    await sender.close()
    await other.close()


async def test_client_event_rate_limit(make_server: Any) -> None:
    srv = make_server({"RELAY_APP_MAX_CLIENT_EVENTS_PER_SEC": "2"})
    channel = unique("private-rate")
    sender, other = await connect(srv), await connect(srv)
    await subscribe_private(sender, channel)
    await subscribe_private(other, channel)
    for n in range(3):
        await sender.send("client-n", {"n": n}, channel=channel)
    assert await sender.recv() == error_event(
        4301, "The rate limit for sending client events exceeded the quota.", channel
    )
    assert [(await other.recv())["data"]["n"] for _ in range(2)] == [0, 1]
    await assert_quiet(other)
    await assert_quiet(sender)  # still open
    await sender.close()
    await other.close()


async def test_client_event_rate_limit_terminate(make_server: Any) -> None:
    srv = make_server(
        {"RELAY_APP_MAX_CLIENT_EVENTS_PER_SEC": "1", "RELAY_APP_RATE_LIMIT_TERMINATE": "true"}
    )
    channel = unique("private-rate")
    sender = await connect(srv)
    await subscribe_private(sender, channel)
    await sender.send("client-n", {}, channel=channel)
    await sender.send("client-n", {}, channel=channel)
    assert await sender.recv() == error_event(
        4301, "The rate limit for sending client events exceeded the quota."
    )
    assert (await sender.closed())[0] == 4301


# -- cache channels (§11) ------------------------------------------------------------------------


async def test_cache_replays_last_published_event(server: ServerProcess) -> None:
    channel = unique("cache-prices")
    await publish(server, channel, "price", '{"v":1}')
    await publish(server, channel, "price", '{"v":2}')
    sock = await connect(server)
    assert await sock.subscribe(channel) == succeeded(channel)
    assert await sock.recv() == {"event": "price", "channel": channel, "data": '{"v":2}'}
    await assert_quiet(sock)
    await sock.close()


async def test_private_cache_replay(server: ServerProcess) -> None:
    channel = unique("private-cache-orders")
    await publish(server, channel, "order", "o-1")
    sock = await connect(server)
    assert await subscribe_private(sock, channel) == succeeded(channel)
    assert await sock.recv() == {"event": "order", "channel": channel, "data": "o-1"}
    await sock.close()


async def test_presence_cache_replay_follows_presence_success(server: ServerProcess) -> None:
    channel = unique("presence-cache-room")
    await publish(server, channel, "state", "{}")
    sock = await connect(server)
    assert presence_of(await join(sock, channel, "p"))["count"] == 1
    assert await sock.recv() == {"event": "state", "channel": channel, "data": "{}"}
    await sock.close()


# -- sign-in, watchlist, user channel, termination (§3.13-§3.15, §10) ---------------------------


async def test_signin_success_echoes_user_data(server: ServerProcess) -> None:
    sock = await connect(server)
    user_data, reply = await sign_in(sock, unique("user"), name="Alice")
    assert reply == {"event": "pusher:signin_success", "data": {"user_data": user_data}}
    await assert_quiet(sock)  # no watchlist: no watchlist event
    await sock.close()


async def test_signin_numeric_id_is_accepted(server: ServerProcess) -> None:
    sock = await connect(server)
    user_data = compact({"id": 12345})
    await sock.send(
        "pusher:signin", {"auth": signin_token(sock.socket_id, user_data), "user_data": user_data}
    )
    assert await sock.recv() == {"event": "pusher:signin_success", "data": {"user_data": user_data}}
    channel = "#server-to-user-12345"
    assert await sock.subscribe(channel) == succeeded(channel)
    await sock.close()


@pytest.mark.parametrize("case", ["bad-auth", "no-auth", "no-id", "not-json", "no-data"])
async def test_signin_failure_4009_and_close(server: ServerProcess, case: str) -> None:
    sock = await connect(server)
    user_data = compact({"id": "u"})
    data: Any = {"auth": "app-key:" + "0" * 64, "user_data": user_data}
    if case == "no-auth":
        data = {"user_data": user_data}
    elif case == "no-id":
        data = {"auth": signin_token(sock.socket_id, '{"name":"x"}'), "user_data": '{"name":"x"}'}
    elif case == "not-json":
        data = {"auth": signin_token(sock.socket_id, "nope"), "user_data": "nope"}
    elif case == "no-data":
        data = None
    await sock.send("pusher:signin", data)
    assert await sock.recv() == error_event(4009, NOT_AUTHORIZED)
    assert (await sock.closed())[0] == 4009


async def test_second_signin_as_other_user_is_refused_softly(server: ServerProcess) -> None:
    sock = await connect(server)
    first = unique("first")
    await sign_in(sock, first)
    _data, reply = await sign_in(sock, unique("second"))
    assert reply == error_event(None, "Connection is already signed in as another user.")
    await assert_quiet(sock)
    user_data, again = await sign_in(sock, first)  # same user again: success
    assert again == {"event": "pusher:signin_success", "data": {"user_data": user_data}}
    channel = f"#server-to-user-{first}"  # still the first identity
    assert await sock.subscribe(channel) == succeeded(channel)
    await sock.close()


async def test_watchlist_initial_state_then_online_offline(server: ServerProcess) -> None:
    online_user, later_user = unique("wa"), unique("wb")
    present = await connect(server)
    await sign_in(present, online_user)
    watcher = await connect(server)
    _data, reply = await sign_in(watcher, unique("watcher"), watchlist=[online_user, later_user])
    assert reply["event"] == "pusher:signin_success"
    assert watchlist_data(await watcher.recv()) == {
        "events": [
            {"name": "online", "user_ids": [online_user]},
            {"name": "offline", "user_ids": [later_user]},
        ]
    }
    await assert_quiet(watcher)
    later = await connect(server)
    await sign_in(later, later_user)
    assert watchlist_data(await watcher.recv()) == {
        "events": [{"name": "online", "user_ids": [later_user]}]
    }
    # A second connection of an online user changes nothing.
    later2 = await connect(server)
    await sign_in(later2, later_user)
    await assert_quiet(watcher)
    await later.close()
    await assert_quiet(later2)
    await assert_quiet(watcher)
    await later2.close()
    assert watchlist_data(await watcher.recv()) == {
        "events": [{"name": "offline", "user_ids": [later_user]}]
    }
    await present.close()
    assert watchlist_data(await watcher.recv()) == {
        "events": [{"name": "offline", "user_ids": [online_user]}]
    }
    await watcher.close()


async def test_watchlist_all_offline_has_no_online_entry(server: ServerProcess) -> None:
    watcher = await connect(server)
    nobody = unique("nobody")
    await sign_in(watcher, unique("w"), watchlist=[nobody])
    assert watchlist_data(await watcher.recv()) == {
        "events": [{"name": "offline", "user_ids": [nobody]}]
    }
    await watcher.close()


async def test_watchlist_over_100_keeps_first_100(server: ServerProcess) -> None:
    sock = await connect(server)
    ids = [unique(f"w{n}") for n in range(101)]
    _data, reply = await sign_in(sock, unique("big-watcher"), watchlist=ids)
    assert reply["event"] == "pusher:signin_success"
    events = watchlist_data(await sock.recv())["events"]
    assert events == [{"name": "offline", "user_ids": ids[:100]}]
    assert await sock.recv() == error_event(
        4302, "Watchlist limit exceeded. Only the first 100 user IDs are accepted."
    )
    await assert_quiet(sock)  # not closed
    # The 101st id is not watched.
    extra = await connect(server)
    await sign_in(extra, ids[100])
    await assert_quiet(sock)
    await extra.close()
    await sock.close()


async def test_user_channel_needs_matching_signin(server: ServerProcess) -> None:
    user = unique("owner")
    channel = f"#server-to-user-{user}"
    sock = await connect(server)
    error = {
        "event": "pusher:subscription_error",
        "channel": channel,
        "data": {"type": "AuthError", "error": f"Not signed in as user {user}", "status": 401},
    }
    assert await sock.subscribe(channel, auth="") == error
    await assert_quiet(sock)
    await sign_in(sock, unique("someone-else"))
    assert await sock.subscribe(channel, auth="") == error
    other = await connect(server)
    await sign_in(other, user)
    assert await other.subscribe(channel, auth="") == succeeded(channel)
    await sock.close()
    await other.close()


async def test_user_channel_event_reaches_every_connection_of_the_user(
    server: ServerProcess,
) -> None:
    user = unique("recipient")
    channel = f"#server-to-user-{user}"
    subscribed, unsubscribed, stranger = [await connect(server) for _ in range(3)]
    await sign_in(subscribed, user)
    await sign_in(unsubscribed, user)
    await sign_in(stranger, unique("stranger"))
    assert await subscribed.subscribe(channel) == succeeded(channel)
    await publish(server, channel, "invoice-paid", '{"id":7}')
    expected = {"event": "invoice-paid", "channel": channel, "data": '{"id":7}'}
    assert await subscribed.recv() == expected
    assert await unsubscribed.recv() == expected
    for sock in (subscribed, unsubscribed, stranger):
        await assert_quiet(sock)  # exactly once, and only to the user
        await sock.close()


async def test_send_to_user_endpoint(server: ServerProcess) -> None:
    user = unique("u")
    sock = await connect(server)
    await sign_in(sock, user)
    status, _body = await asyncio.to_thread(
        api, server, "POST", f"/apps/{APP_ID}/users/{user}/events", {"name": "hi", "data": "x"}
    )
    assert status == 200
    assert await sock.recv() == {
        "event": "hi",
        "channel": f"#server-to-user-{user}",
        "data": "x",
    }
    await sock.close()


async def test_terminate_user_connections(server: ServerProcess) -> None:
    user = unique("doomed")
    signed, present, bystander = [await connect(server) for _ in range(3)]
    await sign_in(signed, user)
    channel = unique("presence-doom")
    await join(present, channel, user)  # presence members with that id go too (§10.5)
    await join(bystander, channel, "bystander")
    status, _body = await asyncio.to_thread(
        api, server, "POST", f"/apps/{APP_ID}/users/{user}/terminate_connections", {}
    )
    assert status == 200
    for sock in (signed, present):
        assert await sock.expect("pusher:error") == error_event(
            4009, "You got disconnected by the app."
        )
        assert (await sock.closed())[0] == 4009
    assert await bystander.recv() == {
        "event": "pusher_internal:member_removed",
        "channel": channel,
        "data": compact({"user_id": user}),
    }
    await assert_quiet(bystander)
    await bystander.close()


# -- authorized connections (§10.3) ------------------------------------------------------------


async def test_authorized_connections(make_server: Any) -> None:
    srv = make_server(
        {"RELAY_APP_USER_AUTHENTICATION": "true", "RELAY_USER_AUTHENTICATION_TIMEOUT": "0.5"}
    )
    signed = await connect(srv)
    await sign_in(signed, "signed")
    private = await connect(srv)
    await subscribe_private(private, unique("private-auth"))
    public_only = await connect(srv)
    await public_only.subscribe(unique("public"))
    # Connected last: once it is dropped, the others' deadlines have passed too.
    idle = await connect(srv)
    for sock in (public_only, idle):
        assert await sock.recv() == error_event(4009, "Connection not authorized within timeout.")
        assert (await sock.closed())[0] == 4009
    await assert_quiet(signed)
    await assert_quiet(private)
    await signed.close()
    await private.close()


async def test_failed_private_subscribe_does_not_authorize(make_server: Any) -> None:
    srv = make_server(
        {"RELAY_APP_USER_AUTHENTICATION": "true", "RELAY_USER_AUTHENTICATION_TIMEOUT": "0.5"}
    )
    sock = await connect(srv)
    reply = await sock.subscribe(unique("private"), auth="app-key:" + "0" * 64)
    assert reply["event"] == "pusher:subscription_error"
    await sock.expect("pusher:error")
    assert await sock.recv() == error_event(4009, "Connection not authorized within timeout.")
    assert (await sock.closed())[0] == 4009


# -- subscription_count (§3.9) ----------------------------------------------------------------


def count_event(channel: str, count: int) -> dict[str, Any]:
    return {
        "event": "pusher_internal:subscription_count",
        "channel": channel,
        "data": compact({"subscription_count": count}),
    }


async def test_subscription_count_events(make_server: Any) -> None:
    srv = make_server({"RELAY_APP_SUBSCRIPTION_COUNT": "true"})
    channel = unique("counted")
    a, b = await connect(srv), await connect(srv)
    assert await a.subscribe(channel) == succeeded(channel)
    assert await a.recv() == count_event(channel, 1)
    assert await b.subscribe(channel) == succeeded(channel)
    assert await b.recv() == count_event(channel, 2)
    assert await a.recv() == count_event(channel, 2)
    await b.send("pusher:unsubscribe", {"channel": channel})
    assert await a.recv() == count_event(channel, 1)
    await assert_quiet(b)
    await b.close()
    await assert_quiet(a)
    await a.close()


async def test_subscription_count_private_and_disconnect(make_server: Any) -> None:
    srv = make_server({"RELAY_APP_SUBSCRIPTION_COUNT": "true"})
    channel = unique("private-counted")
    a, b = await connect(srv), await connect(srv)
    await subscribe_private(a, channel)
    assert await a.recv() == count_event(channel, 1)
    await subscribe_private(b, channel)
    assert await b.recv() == count_event(channel, 2)
    assert await a.recv() == count_event(channel, 2)
    await b.close()
    assert await a.recv() == count_event(channel, 1)
    await a.close()


async def test_no_subscription_count_on_presence(make_server: Any) -> None:
    srv = make_server({"RELAY_APP_SUBSCRIPTION_COUNT": "true"})
    channel = unique("presence-uncounted")
    a, b = await connect(srv), await connect(srv)
    await join(a, channel, "a")
    await join(b, channel, "b")
    assert (await a.recv())["event"] == "pusher_internal:member_added"
    await assert_quiet(a)
    await assert_quiet(b)
    await a.close()
    await b.close()


async def test_no_subscription_count_by_default(server: ServerProcess) -> None:
    sock = await connect(server)
    channel = unique("uncounted")
    await sock.subscribe(channel)
    await assert_quiet(sock)
    await sock.close()


# -- shutdown (§12) ---------------------------------------------------------------------------


async def test_sigterm_sends_4200_to_everyone_and_exits_0(make_server: Any) -> None:
    srv = make_server()
    socks = [await connect(srv) for _ in range(3)]
    await join(socks[0], unique("presence-shutdown"), "p")
    srv.proc.send_signal(signal.SIGTERM)
    for sock in socks:
        assert await sock.recv() == error_event(4200, CLOSING)
        code, reason = await sock.closed()
        assert code == 4200
        assert reason == CLOSING
    assert await asyncio.to_thread(srv.proc.wait, TIMEOUT) == 0
    with pytest.raises((OSError, websockets.InvalidHandshake, asyncio.TimeoutError)):
        await websockets.connect(srv.ws_url(), open_timeout=1)
