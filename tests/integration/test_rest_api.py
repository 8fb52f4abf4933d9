"""The HTTP API over real sockets (HTTP_API.md §1 to §3, §7; RELAY_EXTRAS.md §2, §3, §6, §7).

Every test talks to a real ``python -m fastrelay`` and asserts the exact status and JSON body the
spec gives. Deliveries are observed on raw WebSocket clients. "Nothing was delivered" is proven
with a barrier: a later marker event on the same connection must be the next frame it sees.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from conftest import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    PusherSocket,
    ServerProcess,
    api,
    connect,
    http,
    signed_url,
    signin_token,
    token,
)

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Origin, Content-Type, X-Auth-Token, X-Requested-With, "
    "Accept, Authorization, X-CSRF-TOKEN, XSRF-TOKEN, X-Socket-Id",
}
MASTER_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="  # RELAY_EXTRAS.md §3.4 R4
EVENTS = f"/apps/{APP_ID}/events"
BATCH = f"/apps/{APP_ID}/batch_events"
CHANNELS = f"/apps/{APP_ID}/channels"
KIB = 1024

Opener = Callable[..., Awaitable[PusherSocket]]


def unique(prefix: str) -> str:
    """A channel or user name no other test (sharing the session server) uses."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def err(status: int, message: str) -> dict[str, Any]:
    return {"error": message, "code": status}


async def call(
    server: ServerProcess,
    method: str,
    path: str,
    payload: Any = None,
    params: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """A signed API call, off the event loop so WebSocket clients keep reading."""
    return await asyncio.to_thread(api, server, method, path, payload, params)


def call_raw(
    server: ServerProcess,
    method: str,
    path: str,
    body: bytes = b"",
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    **signing: Any,
) -> tuple[int, dict[str, str], Any]:
    """A signed call with exact body bytes; returns (status, headers, parsed JSON or text)."""
    url = signed_url(server, method, path, body, params, **signing)
    return send(method, url, body, headers)


def send(
    method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    """A plain request: (status, headers, JSON or text body); ``[::2]`` is (status, body)."""
    status, response_headers, raw = http(method, url, body or None, headers)
    if raw and response_headers.get("Content-Type") == "application/json":
        return status, response_headers, json.loads(raw)
    return status, response_headers, raw.decode()


def with_query(url: str, drop: tuple[str, ...] = (), **changes: str) -> str:
    """``url`` with query parameters dropped or replaced (the signature is left as it was)."""
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    for name in drop:
        del query[name]
    query.update(changes)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def assert_serves(server: ServerProcess) -> None:
    """After a bad request the server still answers a good one."""
    assert api(server, "GET", CHANNELS, params={"filter_by_prefix": unique("alive-")}) == (
        200,
        {"channels": {}},
    )


@pytest.fixture
async def sockets() -> AsyncIterator[Opener]:
    """Open raw Pusher clients; all are closed after the test."""
    opened: list[PusherSocket] = []

    async def open_(server: ServerProcess) -> PusherSocket:
        sock = await connect(server)
        opened.append(sock)
        return sock

    yield open_
    for sock in opened:
        await sock.close()


async def subscribed(open_: Opener, server: ServerProcess, *channels: str) -> PusherSocket:
    sock = await open_(server)
    for channel in channels:
        reply = await sock.subscribe(channel)
        assert reply["event"] == "pusher_internal:subscription_succeeded", reply
    return sock


async def present(
    open_: Opener, server: ServerProcess, channel: str, user_id: Any, user_info: Any = None
) -> PusherSocket:
    sock = await open_(server)
    channel_data = json.dumps({"user_id": user_id, "user_info": user_info or {}})
    reply = await sock.subscribe(
        channel, auth=token(sock.socket_id, channel, channel_data), channel_data=channel_data
    )
    assert reply["event"] == "pusher_internal:subscription_succeeded", reply
    return sock


async def signed_in(open_: Opener, server: ServerProcess, user_id: str) -> PusherSocket:
    sock = await open_(server)
    user_data = json.dumps({"id": user_id})
    auth = signin_token(sock.socket_id, user_data)
    await sock.send("pusher:signin", {"auth": auth, "user_data": user_data})
    reply = await sock.recv()
    assert reply["event"] == "pusher:signin_success", reply
    return sock


async def barrier(server: ServerProcess, sock: PusherSocket, channel: str) -> dict[str, str]:
    """Publish a marker to ``channel``; it must be the next frame ``sock`` receives."""
    marker = channel_event("barrier", channel, uuid.uuid4().hex)
    body = {"name": "barrier", "channel": channel, "data": marker["data"]}
    assert await call(server, "POST", EVENTS, body) == (200, {})
    assert await sock.recv() == marker
    return marker


def channel_event(name: str, channel: str, data: str) -> dict[str, str]:
    return {"event": name, "channel": channel, "data": data}


# -- POST /apps/{id}/events (HTTP_API.md §3.1) ------------------------------------------------


async def test_trigger_delivers_to_a_subscriber(server: ServerProcess, sockets: Opener) -> None:
    channel = unique("ev-")
    sock = await subscribed(sockets, server, channel)
    data = json.dumps({"message": "hello"})
    assert await call(
        server, "POST", EVENTS, {"name": "my-event", "channel": channel, "data": data}
    ) == (200, {})
    assert await sock.recv() == channel_event("my-event", channel, data)


async def test_channels_wins_over_channel(server: ServerProcess, sockets: Opener) -> None:
    ignored, used = unique("ev-"), unique("ev-")
    sock = await subscribed(sockets, server, ignored, used)
    body = {"name": "e", "channel": ignored, "channels": [used], "data": "x"}
    assert await call(server, "POST", EVENTS, body) == (200, {})
    assert await sock.recv() == channel_event("e", used, "x")
    await barrier(server, sock, ignored)


async def test_multi_channel_and_duplicates_collapsed(
    server: ServerProcess, sockets: Opener
) -> None:
    a, b = unique("ev-"), unique("ev-")
    sock = await subscribed(sockets, server, a, b)
    body = {"name": "e", "channels": [a, b, a, a], "data": "d", "info": "subscription_count"}
    assert await call(server, "POST", EVENTS, body) == (
        200,
        {"channels": {a: {"subscription_count": 1}, b: {"subscription_count": 1}}},
    )
    # One frame per channel for a connection in both; the duplicates added nothing.
    assert await sock.recv() == channel_event("e", a, "d")
    assert await sock.recv() == channel_event("e", b, "d")
    await barrier(server, sock, a)


async def test_channel_count_limit(server: ServerProcess) -> None:
    names = [unique("many-") for _ in range(101)]
    assert await call(
        server, "POST", EVENTS, {"name": "e", "channels": names[:100], "data": "x"}
    ) == (200, {})
    assert await call(server, "POST", EVENTS, {"name": "e", "channels": names, "data": "x"}) == (
        400,
        err(400, "Cannot trigger to more than 100 channels at once"),
    )
    # 101 entries collapsing to 100 distinct channels are within the limit.
    repeated = [*names[:100], names[0]]
    assert await call(server, "POST", EVENTS, {"name": "e", "channels": repeated, "data": "x"}) == (
        200,
        {},
    )


@pytest.mark.parametrize(
    ("channels", "message"),
    [
        (["bad name"], "Invalid channel name: bad name"),
        (["a#b"], "Invalid channel name: a#b"),
        (["ok", "sl/ash"], "Invalid channel name: sl/ash"),
        ([""], "Invalid channel name: "),
        (["x" * 201], "Invalid channel name: " + "x" * 201),
        ([7], "Each channel must be a string"),
        ([], "The channels field is required"),
        ("not-a-list", "The channels field is required"),
    ],
)
async def test_invalid_channels(server: ServerProcess, channels: Any, message: str) -> None:
    assert await call(server, "POST", EVENTS, {"name": "e", "channels": channels, "data": "x"}) == (
        400,
        err(400, message),
    )


async def test_channel_name_limits(server: ServerProcess) -> None:
    longest = "x" * 200
    assert await call(server, "POST", EVENTS, {"name": "e", "channel": longest, "data": "x"}) == (
        200,
        {},
    )
    user_channel = "#server-to-user-" + unique("u")
    assert await call(
        server, "POST", EVENTS, {"name": "e", "channel": user_channel, "data": "x"}
    ) == (200, {})
    assert await call(server, "POST", EVENTS, {"name": "e", "data": "x"}) == (
        400,
        err(400, "The channels field is required"),
    )


async def test_encrypted_channels(server: ServerProcess) -> None:
    encrypted = unique("private-encrypted-")
    assert await call(server, "POST", EVENTS, {"name": "e", "channel": encrypted, "data": "c"}) == (
        200,
        {},
    )
    body = {"name": "e", "channels": [encrypted, unique("public-")], "data": "c"}
    assert await call(server, "POST", EVENTS, body) == (
        400,
        err(400, "Cannot trigger to multiple channels when using encrypted channels"),
    )
    # A duplicate of the one encrypted channel is still one channel.
    body = {"name": "e", "channels": [encrypted, encrypted], "data": "c"}
    assert await call(server, "POST", EVENTS, body) == (200, {})


async def test_data_forms(server: ServerProcess, sockets: Opener) -> None:
    channel = unique("data-")
    sock = await subscribed(sockets, server, channel)
    cases: list[tuple[Any, str]] = [
        ('{"spaced": 1,  "kept": true}', '{"spaced": 1,  "kept": true}'),  # a string is verbatim
        ({"a": 1, "b": [1, 2], "c": "é"}, '{"a":1,"b":[1,2],"c":"é"}'),  # compact JSON
        ([1, "two"], '[1,"two"]'),
        (42, "42"),
        (None, "null"),
        ("", ""),  # accepted (HTTP_API.md §8 #13)
    ]
    for data, delivered in cases:
        assert await call(
            server, "POST", EVENTS, {"name": "e", "channel": channel, "data": data}
        ) == (200, {})
        assert await sock.recv() == channel_event("e", channel, delivered)
    assert await call(server, "POST", EVENTS, {"name": "e", "channel": channel}) == (
        400,
        err(400, "The data field is required"),
    )
    await barrier(server, sock, channel)


async def test_data_size_limit(server: ServerProcess, sockets: Opener) -> None:
    channel = unique("size-")
    sock = await subscribed(sockets, server, channel)
    too_big = err(413, "The event data should be less than 100 KB.")
    exact = "x" * (100 * KIB)
    assert await call(server, "POST", EVENTS, {"name": "e", "channel": channel, "data": exact}) == (
        200,
        {},
    )
    assert await sock.recv() == channel_event("e", channel, exact)
    over = exact + "x"
    assert await call(server, "POST", EVENTS, {"name": "e", "channel": channel, "data": over}) == (
        413,
        too_big,
    )
    # The limit is on UTF-8 bytes, not characters.
    wide = "é" * (50 * KIB)
    assert await call(server, "POST", EVENTS, {"name": "e", "channel": channel, "data": wide}) == (
        200,
        {},
    )
    assert await sock.recv() == channel_event("e", channel, wide)
    assert await call(
        server, "POST", EVENTS, {"name": "e", "channel": channel, "data": wide + "x"}
    ) == (
        413,
        too_big,
    )
    # An object is measured as the JSON text delivered.
    obj = {"k": "x" * (100 * KIB)}
    assert await call(server, "POST", EVENTS, {"name": "e", "channel": channel, "data": obj}) == (
        413,
        too_big,
    )
    await barrier(server, sock, channel)


async def test_event_name_rules(server: ServerProcess) -> None:
    channel = unique("name-")
    assert await call(
        server, "POST", EVENTS, {"name": "n" * 200, "channel": channel, "data": "x"}
    ) == (200, {})
    assert await call(
        server, "POST", EVENTS, {"name": "n" * 201, "channel": channel, "data": "x"}
    ) == (
        400,
        err(400, "The event name is too long. Maximum allowed size is 200."),
    )
    for name in (None, "", 5):
        body = (
            {"channel": channel, "data": "x"}
            if name is None
            else {"name": name, "channel": channel, "data": "x"}
        )
        assert await call(server, "POST", EVENTS, body) == (
            400,
            err(400, "The event name is required"),
        )


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[1, 2]", b'"text"', b"{", b"\xff\xfe"],
    ids=["empty", "garbage", "array", "string", "truncated", "binary"],
)
def test_body_must_be_a_json_object(server: ServerProcess, body: bytes) -> None:
    status, _headers, answer = call_raw(server, "POST", EVENTS, body)
    assert (status, answer) == (400, err(400, "The received data is incorrect"))
    assert_serves(server)


async def test_socket_id_exclusion(server: ServerProcess, sockets: Opener) -> None:
    channel = unique("excl-")
    first = await subscribed(sockets, server, channel)
    second = await subscribed(sockets, server, channel)
    body = {"name": "e", "channel": channel, "data": "x", "socket_id": first.socket_id}
    assert await call(server, "POST", EVENTS, body) == (200, {})
    assert await second.recv() == channel_event("e", channel, "x")
    marker = await barrier(server, first, channel)  # the excluded one got nothing before it
    assert await second.recv() == marker


async def test_invalid_socket_id(server: ServerProcess) -> None:
    channel = unique("sid-")
    for socket_id in ("abc", "1.", ".1", "1.2.3", "1-2", 12):
        body = {"name": "e", "channel": channel, "data": "x", "socket_id": socket_id}
        assert await call(server, "POST", EVENTS, body) == (400, err(400, "Invalid socket_id"))


async def test_trigger_info(server: ServerProcess, sockets: Opener) -> None:
    public, room = unique("info-"), unique("presence-info-")
    await subscribed(sockets, server, public)
    await present(sockets, server, room, "u1")
    await present(sockets, server, room, "u1")
    await present(sockets, server, room, "u2")
    body = {
        "name": "e",
        "channels": [public, room],
        "data": "x",
        "info": "user_count,subscription_count,unknown",
    }
    assert await call(server, "POST", EVENTS, body) == (
        200,
        {
            "channels": {
                public: {"subscription_count": 1},
                room: {"user_count": 2, "subscription_count": 3},
            }
        },
    )
    body["info"] = "user_count"
    assert await call(server, "POST", EVENTS, body) == (
        200,
        {"channels": {public: {}, room: {"user_count": 2}}},
    )
    empty = unique("info-")
    body = {"name": "e", "channel": empty, "data": "x", "info": "subscription_count"}
    assert await call(server, "POST", EVENTS, body) == (
        200,
        {"channels": {empty: {"subscription_count": 0}}},
    )


# -- batches (HTTP_API.md §3.2, RELAY_EXTRAS.md §2) -------------------------------------------


@pytest.mark.parametrize("path", [BATCH, f"/apps/{APP_ID}/events/batch"])
async def test_batch_delivers_in_order(server: ServerProcess, sockets: Opener, path: str) -> None:
    a, b = unique("batch-"), unique("batch-")
    sock = await subscribed(sockets, server, a, b)
    batch = [{"name": f"e{i}", "channel": a if i % 2 else b, "data": str(i)} for i in range(9)]
    batch.append({"name": "multi", "channels": [a, b], "data": "m"})  # soketi's form, accepted
    assert await call(server, "POST", path, {"batch": batch}) == (200, {})
    for i in range(9):
        assert await sock.recv() == channel_event(f"e{i}", a if i % 2 else b, str(i))
    assert await sock.recv() == channel_event("multi", a, "m")
    assert await sock.recv() == channel_event("multi", b, "m")


@pytest.mark.parametrize("path", [BATCH, f"/apps/{APP_ID}/events/batch"])
async def test_batch_limits_and_shape(server: ServerProcess, path: str) -> None:
    channel = unique("batch-")
    item = {"name": "e", "channel": channel, "data": "x"}
    assert await call(server, "POST", path, {"batch": [item] * 10}) == (200, {})
    assert await call(server, "POST", path, {"batch": [item] * 11}) == (
        400,
        err(400, "Cannot batch-send more than 10 messages at once"),
    )
    assert await call(server, "POST", path, {"batch": []}) == (200, {})
    for body in ({}, {"batch": item}, {"batch": "x"}):
        assert await call(server, "POST", path, body) == (
            400,
            err(400, "The batch field must be an array"),
        )


@pytest.mark.parametrize(
    ("bad_item", "status", "message"),
    [
        ({"name": "e", "channel": "bad name", "data": "x"}, 400, "Invalid channel name: bad name"),
        ({"name": "e", "channel": "ok"}, 400, "The data field is required"),
        ({"channel": "ok", "data": "x"}, 400, "The event name is required"),
        ("not an object", 400, "The received data is incorrect"),
        (
            {"name": "e", "channel": "ok", "data": "x" * (100 * KIB + 1)},
            413,
            "The event data should be less than 100 KB.",
        ),
    ],
)
async def test_batch_is_atomic(
    server: ServerProcess, sockets: Opener, bad_item: Any, status: int, message: str
) -> None:
    channel = unique("atomic-")
    sock = await subscribed(sockets, server, channel)
    good = {"name": "first", "channel": channel, "data": "x"}
    batch = [good, good, bad_item, good]
    assert await call(server, "POST", BATCH, {"batch": batch}) == (status, err(status, message))
    await barrier(server, sock, channel)  # nothing of the failed batch was delivered


async def test_batch_info(server: ServerProcess, sockets: Opener) -> None:
    public, room = unique("binfo-"), unique("presence-binfo-")
    await subscribed(sockets, server, public)
    await present(sockets, server, room, "u1")
    await present(sockets, server, room, "u2")
    await present(sockets, server, room, "u2")
    batch = [
        {"name": "a", "channel": public, "data": "x"},
        {"name": "b", "channel": room, "data": "x", "info": "user_count,subscription_count"},
        {"name": "c", "channel": public, "data": "x", "info": "subscription_count"},
        {"name": "d", "channels": [room, public], "data": "x", "info": "user_count"},
    ]
    assert await call(server, "POST", BATCH, {"batch": batch}) == (
        200,
        {
            "batch": [
                {},
                {"user_count": 2, "subscription_count": 3},
                {"subscription_count": 1},
                {"user_count": 2},  # a multi-channel item: its first channel
            ]
        },
    )


# -- GET /apps/{id}/channels (HTTP_API.md §3.3) -----------------------------------------------


async def test_list_channels(server: ServerProcess, sockets: Opener) -> None:
    prefix = unique("list-")
    one, two = prefix + "-one", prefix + "-two"
    await subscribed(sockets, server, one)
    await subscribed(sockets, server, one, two)
    assert await call(server, "GET", CHANNELS, params={"filter_by_prefix": prefix}) == (
        200,
        {"channels": {one: {"subscription_count": 2}, two: {"subscription_count": 1}}},
    )
    assert await call(server, "GET", CHANNELS, params={"filter_by_prefix": two}) == (
        200,
        {"channels": {two: {"subscription_count": 1}}},
    )
    assert await call(server, "GET", CHANNELS, params={"filter_by_prefix": unique("none-")}) == (
        200,
        {"channels": {}},
    )
    # A published-to but unsubscribed channel is not occupied.
    await call(server, "POST", EVENTS, {"name": "e", "channel": prefix + "-ghost", "data": "x"})
    status, body = await call(server, "GET", CHANNELS, params={"filter_by_prefix": prefix})
    assert status == 200
    assert sorted(body["channels"]) == [one, two]


async def test_list_channels_user_count(server: ServerProcess, sockets: Opener) -> None:
    prefix = unique("presence-list-")
    room = prefix + "-room"
    await present(sockets, server, room, "u1")
    await present(sockets, server, room, "u1")
    await present(sockets, server, room, 7)
    params = {"filter_by_prefix": prefix, "info": "user_count"}
    assert await call(server, "GET", CHANNELS, params=params) == (
        200,
        {"channels": {room: {"subscription_count": 3, "user_count": 2}}},
    )
    message = err(400, "user_count may only be requested with filter_by_prefix=presence-")
    assert await call(server, "GET", CHANNELS, params={"info": "user_count"}) == (400, message)
    assert await call(
        server, "GET", CHANNELS, params={"filter_by_prefix": "private-", "info": "user_count"}
    ) == (
        400,
        message,
    )
    assert await call(
        server, "GET", CHANNELS, params={"filter_by_prefix": "presence", "info": "user_count"}
    ) == (
        400,
        message,
    )


async def test_list_channels_empty_server(make_server: Callable[..., ServerProcess]) -> None:
    fresh = make_server()
    assert await call(fresh, "GET", CHANNELS) == (200, {"channels": {}})
    assert await call(
        fresh, "GET", CHANNELS, params={"filter_by_prefix": "presence-", "info": "user_count"}
    ) == (
        200,
        {"channels": {}},
    )


# -- GET /apps/{id}/channels/{name} (HTTP_API.md §3.4) ----------------------------------------


async def test_channel_info(server: ServerProcess, sockets: Opener) -> None:
    channel = unique("one-")
    path = f"{CHANNELS}/{channel}"
    assert await call(server, "GET", path) == (200, {"occupied": False, "subscription_count": 0})
    await subscribed(sockets, server, channel)
    await subscribed(sockets, server, channel)
    assert await call(server, "GET", path) == (200, {"occupied": True, "subscription_count": 2})
    assert await call(server, "GET", path, params={"info": "subscription_count"}) == (
        200,
        {"occupied": True, "subscription_count": 2},
    )
    assert await call(server, "GET", path, params={"info": "user_count"}) == (
        400,
        err(400, "user_count may only be requested for presence channels"),
    )
    assert await call(server, "GET", path, params={"info": "cache"}) == (
        400,
        err(400, "cache may only be requested for cache channels"),
    )


async def test_channel_info_presence(server: ServerProcess, sockets: Opener) -> None:
    room = unique("presence-one-")
    path = f"{CHANNELS}/{room}"
    assert await call(server, "GET", path) == (
        200,
        {"occupied": False, "subscription_count": 0, "user_count": 0},
    )
    await present(sockets, server, room, "u1")
    await present(sockets, server, room, "u1")
    await present(sockets, server, room, "u2")
    expected = {"occupied": True, "subscription_count": 3, "user_count": 2}
    assert await call(server, "GET", path) == (200, expected)
    assert await call(server, "GET", path, params={"info": "user_count,subscription_count"}) == (
        200,
        expected,
    )


async def test_channel_info_cache(server: ServerProcess, sockets: Opener) -> None:
    for prefix in ("cache-", "private-cache-", "presence-cache-", "private-encrypted-cache-"):
        channel = unique(prefix)
        path = f"{CHANNELS}/{channel}"
        status, body = await call(server, "GET", path, params={"info": "cache"})
        assert status == 200
        assert body["cache"] is None
        assert body["occupied"] is False
        await call(server, "POST", EVENTS, {"name": "price", "channel": channel, "data": '{"v":1}'})
        await call(server, "POST", EVENTS, {"name": "price", "channel": channel, "data": '{"v":2}'})
        status, body = await call(server, "GET", path, params={"info": "cache"})
        assert status == 200
        cache = body.pop("cache")
        assert body == (
            {"occupied": False, "subscription_count": 0}
            | ({"user_count": 0} if "presence" in prefix else {})
        )
        assert set(cache) == {"event", "data", "ttl"}
        assert (cache["event"], cache["data"]) == ("price", '{"v":2}')
        assert isinstance(cache["ttl"], int)
        assert 1790 <= cache["ttl"] <= 1800
    # Without info=cache there is no cache key; a subscriber gets the cached event.
    channel = unique("cache-")
    await call(server, "POST", EVENTS, {"name": "price", "channel": channel, "data": "p"})
    assert await call(server, "GET", f"{CHANNELS}/{channel}") == (
        200,
        {"occupied": False, "subscription_count": 0},
    )
    sock = await subscribed(sockets, server, channel)
    assert await sock.recv() == channel_event("price", channel, "p")


@pytest.mark.parametrize("name", ["bad%20name", "a%23b", "x" * 201])
async def test_channel_info_invalid_name(server: ServerProcess, name: str) -> None:
    decoded = urllib.parse.unquote(name)
    for suffix in ("", "/users"):
        assert await call(server, "GET", f"{CHANNELS}/{name}{suffix}") == (
            400,
            err(400, f"Invalid channel name: {decoded}"),
        )


# -- GET …/users (HTTP_API.md §3.5) -----------------------------------------------------------


async def test_channel_users(server: ServerProcess, sockets: Opener) -> None:
    room = unique("presence-users-")
    path = f"{CHANNELS}/{room}/users"
    assert await call(server, "GET", path) == (200, {"users": []})
    await present(sockets, server, room, "user-1", {"name": "Alice"})
    await present(sockets, server, room, "user-1", {"name": "Alice again"})
    await present(sockets, server, room, 42, {"name": "Bob"})
    status, body = await call(server, "GET", path)
    assert status == 200
    assert sorted(body["users"], key=str) == sorted([{"id": "user-1"}, {"id": 42}], key=str)
    status, body = await call(server, "GET", path, params={"with_user_info": "1"})
    assert status == 200
    assert sorted(body["users"], key=str) == sorted(
        [
            {"id": "user-1", "user_info": {"name": "Alice"}},
            {"id": 42, "user_info": {"name": "Bob"}},
        ],
        key=str,
    )


@pytest.mark.parametrize("prefix", ["public-", "private-", "cache-", "private-encrypted-"])
async def test_channel_users_needs_presence(server: ServerProcess, prefix: str) -> None:
    assert await call(server, "GET", f"{CHANNELS}/{unique(prefix)}/users") == (
        400,
        err(400, "The channel must be a presence channel."),
    )


# -- terminating users (HTTP_API.md §3.6, PROTOCOL.md §10.5) ---------------------------------


async def expect_terminated(sock: PusherSocket) -> None:
    assert await sock.recv() == {
        "event": "pusher:error",
        "data": {"code": 4009, "message": "You got disconnected by the app."},
    }
    code, _reason = await sock.closed()
    assert code == 4009


@pytest.mark.parametrize("short_path", [False, True], ids=["apps-path", "short-path"])
async def test_terminate_connections(
    server: ServerProcess, sockets: Opener, short_path: bool
) -> None:
    user, other = unique("term-"), unique("keep-")
    room = unique("presence-term-")
    first = await signed_in(sockets, server, user)
    second = await signed_in(sockets, server, user)
    member = await present(sockets, server, room, user)  # presence member, not signed in
    bystander = await signed_in(sockets, server, other)
    watcher = await present(sockets, server, room, other)
    added = await member.recv()
    assert (added["event"], added["channel"]) == ("pusher_internal:member_added", room)
    assert json.loads(added["data"]) == {"user_id": other, "user_info": {}}
    path = (
        f"/users/{user}/terminate_connections"
        if short_path
        else f"/apps/{APP_ID}/users/{user}/terminate_connections"
    )
    assert await call(server, "POST", path, {}) == (200, {})
    for sock in (first, second, member):
        await expect_terminated(sock)
    # The others stay: the watcher sees the member leave, the bystander still receives.
    removed = await watcher.expect("pusher_internal:member_removed")
    assert removed["channel"] == room
    assert await call(server, "GET", f"{CHANNELS}/{room}/users") == (
        200,
        {"users": [{"id": other}]},
    )
    await call(
        server,
        "POST",
        EVENTS,
        {"name": "still", "channel": f"#server-to-user-{other}", "data": "here"},
    )
    assert await bystander.recv() == channel_event("still", f"#server-to-user-{other}", "here")
    # Terminating a user with no connections is fine.
    assert await call(server, "POST", path, {}) == (200, {})


@pytest.mark.parametrize("body", [b"", b"{}", b"not json"])
def test_terminate_ignores_the_body(server: ServerProcess, body: bytes) -> None:
    for path in (
        f"/apps/{APP_ID}/users/nobody/terminate_connections",
        "/users/nobody/terminate_connections",
    ):
        assert call_raw(server, "POST", path, body)[::2] == (200, {})


async def test_terminate_short_path_errors(server: ServerProcess) -> None:
    path = "/users/someone/terminate_connections"
    status, _headers, body = call_raw(server, "POST", path, b"{}", key="nope")
    assert (status, body) == (401, err(401, "Unknown auth_key"))
    url = with_query(signed_url(server, "POST", path, b"{}"), drop=("auth_key",))
    assert send("POST", url, b"{}")[::2] == (401, err(401, "Missing auth parameter: auth_key"))
    assert_serves(server)


# -- sending to users (HTTP_API.md §3.7, RELAY_EXTRAS.md §7) ----------------------------------


async def test_send_to_user(server: ServerProcess, sockets: Opener) -> None:
    user = unique("user-")
    channel = f"#server-to-user-{user}"
    first = await signed_in(sockets, server, user)
    second = await signed_in(sockets, server, user)
    stranger = await signed_in(sockets, server, unique("other-"))
    path = f"/apps/{APP_ID}/users/{user}/events"
    assert await call(server, "POST", path, {"name": "invoice-paid", "data": '{"id":7}'}) == (
        200,
        {},
    )
    for sock in (first, second):
        assert await sock.recv() == channel_event("invoice-paid", channel, '{"id":7}')
    # socket_id exclusion and object data work as on /events.
    body = {"name": "obj", "data": {"id": 8}, "socket_id": first.socket_id, "channel": "ignored"}
    assert await call(server, "POST", path, body) == (200, {})
    assert await second.recv() == channel_event("obj", channel, '{"id":8}')
    # The SDKs' way: /events on #server-to-user-{id}.
    assert await call(server, "POST", EVENTS, {"name": "sdk", "channel": channel, "data": "s"}) == (
        200,
        {},
    )
    for sock in (first, second):
        assert await sock.recv() == channel_event("sdk", channel, "s")
    stranger_channel = "#server-to-user-" + unique("x")
    await call(server, "POST", EVENTS, {"name": "nothing", "channel": stranger_channel, "data": ""})
    # The stranger got none of it: its next frame is its own.
    await stranger.send("pusher:ping", {})
    assert await stranger.recv() == {"event": "pusher:pong", "data": {}}


async def test_send_to_user_validation(server: ServerProcess) -> None:
    base = f"/apps/{APP_ID}/users"
    assert await call(server, "POST", f"{base}/bad%20id/events", {"name": "e", "data": "x"}) == (
        400,
        err(400, "Invalid user id: bad id"),
    )
    assert await call(server, "POST", f"{base}/u1/events", {"data": "x"}) == (
        400,
        err(400, "The event name is required"),
    )
    assert await call(server, "POST", f"{base}/u1/events", {"name": "e"}) == (
        400,
        err(400, "The data field is required"),
    )
    assert await call(
        server, "POST", f"{base}/u1/events", {"name": "e", "data": "x" * (100 * KIB + 1)}
    ) == (
        413,
        err(413, "The event data should be less than 100 KB."),
    )


# -- POST /apps/{id}/auth (RELAY_EXTRAS.md §3) ------------------------------------------------

AUTH = f"/apps/{APP_ID}/auth"
JSON_TYPE = {"Content-Type": "application/json"}


def hmac_hex(message: str) -> str:
    return hmac.new(APP_SECRET.encode(), message.encode(), hashlib.sha256).hexdigest()


def test_auth_vectors(server: ServerProcess) -> None:
    r1 = {"auth": "app-key:90b36578c812ffffc249bb7d38b64d493edd75810fa1a907b632009586ad617e"}
    body = b'{"socket_id":"123.456","channel_name":"private-my-channel"}'
    assert call_raw(server, "POST", AUTH, body, headers=JSON_TYPE)[::2] == (200, r1)
    # R3: the form pusher-js posts.
    form = b"socket_id=123.456&channel_name=private-my-channel"
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    assert call_raw(server, "POST", AUTH, form, headers=form_type)[::2] == (200, r1)
    # R2: an object channel_data is signed and returned as compact JSON.
    body = (
        b'{"socket_id":"123.456","channel_name":"presence-room",'
        b'"channel_data":{"user_id":"user-1","user_info":{"name":"Alice"}}}'
    )
    assert call_raw(server, "POST", AUTH, body, headers=JSON_TYPE)[::2] == (
        200,
        {
            "auth": "app-key:c875d068bfba6a4fb9a8346cc4977bb30fc748e788fc766567cfd5775b1d3fe4",
            "channel_data": '{"user_id":"user-1","user_info":{"name":"Alice"}}',
        },
    )
    # A string channel_data is kept verbatim (spaces and all).
    spaced = '{"user_id": "user-1", "user_info": {"name": "Alice"}}'
    status, answer = api(
        server,
        "POST",
        AUTH,
        {"socket_id": "123.456", "channel_name": "presence-room", "channel_data": spaced},
    )
    assert (status, answer) == (
        200,
        {"auth": f"app-key:{hmac_hex('123.456:presence-room:' + spaced)}", "channel_data": spaced},
    )
    # §3.3 sign-in token.
    status, answer = api(
        server,
        "POST",
        AUTH,
        {"socket_id": "123.456", "user_data": {"id": "user-1", "name": "Alice"}},
    )
    assert (status, answer) == (
        200,
        {
            "auth": "app-key:0866df7f6aa363476888d18cde80782982d8a208e54f0f9bf8ac7d86f2c50f3c",
            "user_data": '{"id":"user-1","name":"Alice"}',
        },
    )


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain"])
def test_auth_json_body_whatever_the_content_type(server: ServerProcess, content_type: str) -> None:
    """HTTP_API.md §1: JSON is parsed from the raw bytes whatever the Content-Type.

    ``curl -d '{...}'`` labels a JSON body as a form; a JSON object body must still be read as
    JSON (a real form body never starts with ``{``).
    """
    body = b'{"socket_id":"123.456","channel_name":"private-my-channel"}'
    assert call_raw(server, "POST", AUTH, body, headers={"Content-Type": content_type})[::2] == (
        200,
        {"auth": "app-key:90b36578c812ffffc249bb7d38b64d493edd75810fa1a907b632009586ad617e"},
    )


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"channel_name": "private-x"}, "The socket_id field is required"),
        ({"socket_id": "abc", "channel_name": "private-x"}, "Invalid socket_id"),
        ({"socket_id": "1.2"}, "The channel_name or user_data field is required"),
        (
            {"socket_id": "1.2", "channel_name": "my-channel"},
            "Channel my-channel does not need authorization",
        ),
        (
            {"socket_id": "1.2", "channel_name": "cache-x"},
            "Channel cache-x does not need authorization",
        ),
        ({"socket_id": "1.2", "channel_name": "bad name"}, "Invalid channel name: bad name"),
        (
            {"socket_id": "1.2", "channel_name": "presence-x"},
            "The channel_data field is required for presence channels",
        ),
        (
            {"socket_id": "1.2", "channel_name": "presence-x", "channel_data": {"user_info": {}}},
            "channel_data needs a user_id: a non-empty string or a number",
        ),
        (
            {"socket_id": "1.2", "channel_name": "private-encrypted-x"},
            "Encrypted channels need an encryption master key",
        ),
        (
            {"socket_id": "1.2", "channel_name": "private-x", "user_data": {"id": "u"}},
            "Send either channel_name or user_data, not both",
        ),
        (
            {"socket_id": "1.2", "user_data": {"name": "no id"}},
            "user_data needs an id: a non-empty string",
        ),
    ],
)
def test_auth_errors(server: ServerProcess, payload: dict[str, Any], message: str) -> None:
    assert api(server, "POST", AUTH, payload) == (400, err(400, message))


def test_auth_requires_a_signature(server: ServerProcess) -> None:
    body = b'{"socket_id":"1.2","channel_name":"private-x"}'
    url = signed_url(server, "POST", AUTH, body)
    assert send("POST", with_query(url, auth_signature="0" * 64), body)[0] == 401
    assert send("POST", f"{server.http}{AUTH}", body)[::2] == (
        401,
        err(401, "Missing auth parameter: auth_key"),
    )


async def test_auth_tokens_subscribe(server: ServerProcess, sockets: Opener) -> None:
    sock = await sockets(server)
    private, room = unique("private-tok-"), unique("presence-tok-")
    status, answer = await call(
        server, "POST", AUTH, {"socket_id": sock.socket_id, "channel_name": private}
    )
    assert status == 200
    assert await sock.subscribe(private, **answer) == {
        "event": "pusher_internal:subscription_succeeded",
        "channel": private,
        "data": "{}",
    }
    channel_data = {"user_id": "tok-user", "user_info": {"name": "T"}}
    status, answer = await call(
        server,
        "POST",
        AUTH,
        {"socket_id": sock.socket_id, "channel_name": room, "channel_data": channel_data},
    )
    assert status == 200
    reply = await sock.subscribe(room, **answer)
    assert reply["event"] == "pusher_internal:subscription_succeeded"
    assert json.loads(reply["data"])["presence"]["hash"] == {"tok-user": {"name": "T"}}
    user_data = {"id": "tok-user"}
    status, answer = await call(
        server, "POST", AUTH, {"socket_id": sock.socket_id, "user_data": user_data}
    )
    assert status == 200
    await sock.send("pusher:signin", answer)
    assert await sock.recv() == {
        "event": "pusher:signin_success",
        "data": {"user_data": '{"id":"tok-user"}'},
    }


async def test_auth_encrypted(make_server: Callable[..., ServerProcess]) -> None:
    srv = make_server({"RELAY_ENCRYPTION_MASTER_KEY_BASE64": MASTER_KEY})
    body = b'{"socket_id":"123.456","channel_name":"private-encrypted-room"}'
    assert call_raw(srv, "POST", AUTH, body, headers=JSON_TYPE)[::2] == (
        200,
        {
            "auth": "app-key:25f93c7ef55bbb8f8f2d33f7f1848f0f3b31d99d77f4363acf12914e5451f553",
            "shared_secret": "jLl7T7Vic8zzeBQOhI8a5zJ4iMwqc2omg0xT37NC5hs=",
        },
    )
    sock = await connect(srv)
    try:
        channel = unique("private-encrypted-cache-")
        status, answer = await call(
            srv, "POST", AUTH, {"socket_id": sock.socket_id, "channel_name": channel}
        )
        assert status == 200
        secret = hashlib.sha256(channel.encode() + base64.b64decode(MASTER_KEY)).digest()
        assert answer["shared_secret"] == base64.b64encode(secret).decode()
        reply = await sock.subscribe(channel, auth=answer["auth"])
        assert reply["event"] == "pusher_internal:subscription_succeeded"
    finally:
        await sock.close()


# -- small endpoints (HTTP_API.md §3.8, RELAY_EXTRAS.md §4, §6) -------------------------------


async def test_connections_and_stats(make_server: Callable[..., ServerProcess]) -> None:
    srv = make_server()
    assert await call(srv, "GET", f"/apps/{APP_ID}/connections") == (200, {"connections": 0})
    assert send("GET", f"{srv.http}/stats")[::2] == (200, {"connections": 0, "channels": 0})
    first, second = await connect(srv), await connect(srv)
    try:
        await first.subscribe("stats-a")
        await second.subscribe("stats-a")
        await second.subscribe("stats-b")
        assert await call(srv, "GET", f"/apps/{APP_ID}/connections") == (200, {"connections": 2})
        status, headers, body = send("GET", f"{srv.http}/stats")
        assert (status, headers["Content-Type"], body) == (
            200,
            "application/json",
            {"connections": 2, "channels": 2},
        )
    finally:
        await first.close()
        await second.close()


@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        ("/", "text/plain", "OK"),
        ("/health", "text/plain", "OK"),
        ("/ready", "text/plain", "OK"),
        ("/up", "application/json", {"health": "OK"}),
    ],
)
def test_probes(server: ServerProcess, path: str, content_type: str, body: Any) -> None:
    status, headers, answer = send("GET", server.http + path)
    assert (status, headers["Content-Type"], answer) == (200, content_type, body)
    # HEAD answers like GET, without a body.
    status, headers, answer = send("HEAD", server.http + path)
    assert (status, headers["Content-Type"], answer) == (200, content_type, "")
    assert headers["Content-Length"] == str(
        len(body if isinstance(body, str) else json.dumps(body, separators=(",", ":")))
    )


async def test_probes_while_shutting_down(make_server: Callable[..., ServerProcess]) -> None:
    """/health and /ready answer 503 once shutdown has begun (RELAY_EXTRAS.md §6)."""
    srv = make_server()
    # A WebSocket client that never answers the close frame keeps the server in its grace period.
    ws_reader, ws_writer = await asyncio.open_connection("127.0.0.1", srv.port)
    ws_writer.write(
        b"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    assert (await asyncio.wait_for(ws_reader.readuntil(b"\r\n\r\n"), 10)).startswith(
        b"HTTP/1.1 101"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    try:
        srv.proc.terminate()
        await asyncio.to_thread(srv.wait_for_log, "shutting down")
        for path in ("/health", "/ready"):
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 503 ")
            assert b"Content-Type: text/plain\r\n" in head
            assert await asyncio.wait_for(reader.readexactly(7), 10) == b"CLOSING"
    finally:
        writer.close()
        ws_writer.close()
    # Let it finish on its own (the harness would otherwise signal it a second time).
    assert await asyncio.to_thread(srv.proc.wait, 10) == 0


def test_history_disabled_by_default(server: ServerProcess) -> None:
    path = f"/apps/{APP_ID}/channels/my-channel/events"
    assert api(server, "GET", path, params={"limit": "10"}) == (
        404,
        err(404, "Event history is disabled"),
    )


# -- signed requests (HTTP_API.md §2, §7) -----------------------------------------------------

BODY = b'{"name":"e","channel":"sig-test","data":"x"}'


@pytest.mark.parametrize(
    "param", ["auth_key", "auth_timestamp", "auth_version", "auth_signature", "body_md5"]
)
def test_missing_auth_parameter(server: ServerProcess, param: str) -> None:
    url = with_query(signed_url(server, "POST", EVENTS, BODY), drop=(param,))
    status, headers, answer = send("POST", url, BODY)
    assert (status, answer) == (401, err(401, f"Missing auth parameter: {param}"))
    assert headers["Content-Type"] == "application/json"
    assert_serves(server)


def test_wrong_key_and_secret(server: ServerProcess) -> None:
    assert call_raw(server, "POST", EVENTS, BODY, key="other-key")[::2] == (
        401,
        err(401, "Unknown auth_key"),
    )
    status, _headers, answer = call_raw(server, "POST", EVENTS, BODY, secret="wrong-secret")
    assert status == 401
    assert answer["code"] == 401
    assert answer["error"].startswith("Invalid signature: ")
    assert_serves(server)


def test_timestamp_window(server: ServerProcess) -> None:
    now = int(time.time())
    for stale in (now - 700, now + 700):
        status, _headers, answer = call_raw(server, "POST", EVENTS, BODY, timestamp=stale)
        assert status == 401
        match = re.fullmatch(
            rf"Timestamp expired: Given timestamp \({stale}\) not within 600s "
            r"of server time \((\d+)\)",
            answer["error"],
        )
        assert match is not None, answer
        assert abs(int(match.group(1)) - time.time()) < 30
        assert answer["code"] == 401
    for fine in (now - 500, now + 500):
        assert call_raw(server, "POST", EVENTS, BODY, timestamp=fine)[::2] == (200, {})
    url = with_query(signed_url(server, "POST", EVENTS, BODY), auth_timestamp="soon")
    assert send("POST", url, BODY)[::2] == (
        401,
        err(401, "Invalid auth_timestamp: expected an integer (Unix seconds)"),
    )
    assert_serves(server)


def test_body_altered_after_signing(server: ServerProcess) -> None:
    url = signed_url(server, "POST", EVENTS, BODY)
    altered = BODY.replace(b'"x"', b'"y"')
    assert send("POST", url, altered)[::2] == (
        401,
        err(401, "body_md5 does not match the request body"),
    )
    # An empty-body GET may carry body_md5 only as md5("") (pusher-http-python does).
    get = signed_url(server, "GET", CHANNELS, params={"body_md5": hashlib.md5(b"").hexdigest()})
    assert send("GET", get)[0] == 200
    get = signed_url(server, "GET", CHANNELS, params={"body_md5": hashlib.md5(b"x").hexdigest()})
    assert send("GET", get)[::2] == (401, err(401, "body_md5 does not match the request body"))
    assert_serves(server)


@pytest.mark.parametrize("signature", ["0" * 64, "not-hex", "", "A" * 63])
def test_bad_signature_message(server: ServerProcess, signature: str) -> None:
    url = signed_url(server, "POST", EVENTS, BODY)
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    status, _headers, answer = send("POST", with_query(url, auth_signature=signature), BODY)
    to_sign = (
        f"POST\\n{EVENTS}\\nauth_key={APP_KEY}&auth_timestamp={query['auth_timestamp']}"
        f"&auth_version=1.0&body_md5={hashlib.md5(BODY).hexdigest()}"
    )
    assert (status, answer) == (
        401,
        err(
            401,
            f'Invalid signature: you should have sent HmacSHA256Hex("{to_sign}", your_secret_key), '
            f'but you sent "{signature}"',
        ),
    )
    assert APP_SECRET not in answer["error"]
    assert_serves(server)


def test_signature_covers_query(server: ServerProcess) -> None:
    url = signed_url(server, "GET", CHANNELS, params={"filter_by_prefix": "presence-"})
    assert send("GET", url)[0] == 200
    status, _headers, answer = send("GET", with_query(url, filter_by_prefix="private-"))
    assert status == 401
    assert answer["error"].startswith("Invalid signature: ")
    assert_serves(server)


def test_query_encoding_rules(server: ServerProcess) -> None:
    """HTTP_API.md §2.2: %XX decoded, "+" literal then retried as space, last repeat wins."""
    base = f"auth_key={APP_KEY}&auth_timestamp={int(time.time())}&auth_version=1.0"

    def url(sent: str, signed: str) -> str:
        signature = hmac_hex(f"GET\n{CHANNELS}\n{base}&{signed}")
        return f"{server.http}{CHANNELS}?{base}&{sent}&auth_signature={signature}"

    empty = (200, {"channels": {}})
    assert send("GET", url("filter_by_prefix=a+b", "filter_by_prefix=a+b"))[::2] == empty
    assert send("GET", url("filter_by_prefix=a+b", "filter_by_prefix=a b"))[::2] == empty
    assert send("GET", url("filter_by_prefix=a%20b", "filter_by_prefix=a b"))[::2] == empty
    assert send("GET", url("filter_by_prefix=%7Ex", "filter_by_prefix=~x"))[::2] == empty
    assert send("GET", url("Filter_By_Prefix=q", "filter_by_prefix=q"))[::2] == empty
    repeated = url("filter_by_prefix=zzz&filter_by_prefix=q", "filter_by_prefix=q")
    assert send("GET", repeated)[::2] == empty
    assert send("GET", url("filter_by_prefix=a%20b", "filter_by_prefix=a%20b"))[0] == 401
    assert_serves(server)


def test_path_prefix(make_server: Callable[..., ServerProcess]) -> None:
    """HTTP_API.md §2.5: routes live under the prefix; either signed path is accepted."""
    srv = make_server({"RELAY_PATH_PREFIX": "/pusher"})
    sdk_style = signed_url(srv, "GET", CHANNELS).replace(CHANNELS, "/pusher" + CHANNELS, 1)
    assert send("GET", sdk_style)[::2] == (200, {"channels": {}})
    assert call_raw(srv, "GET", "/pusher" + CHANNELS)[::2] == (200, {"channels": {}})
    assert call_raw(srv, "GET", CHANNELS)[::2] == (404, err(404, "Not found"))
    body = b'{"name":"e","channel":"prefixed","data":"x"}'
    url = signed_url(srv, "POST", EVENTS, body).replace(EVENTS, "/pusher" + EVENTS, 1)
    assert send("POST", url, body)[::2] == (200, {})


def test_published_signature_vectors(make_server: Callable[..., ServerProcess]) -> None:
    """HTTP_API.md §2.4 S5 (pusher-http-python shapes), sent verbatim with the clock check off."""
    srv = make_server({"RELAY_API_TIMESTAMP_TOLERANCE": "0"})
    common = "auth_key=app-key&auth_timestamp=1700000000&auth_version=1.0"
    vectors = [
        (
            "GET",
            "/apps/1/channels",
            b"",
            "body_md5=d41d8cd98f00b204e9800998ecf8427e",
            "014b0ccda2ea13e4e7ba1aef68970577bc73e3f22909181d87ce2fe149a65f32",
            {"channels": {}},
        ),
        (
            "POST",
            "/users/user-1/terminate_connections",
            b"{}",
            "body_md5=99914b932bd37a50b983c5e7c90ae93b",
            "15119d46af080cd4fd5c2238c33e616346bd7f060d8224ddf6769add535571ee",
            {},
        ),
        (
            "POST",
            "/apps/1/events",
            b'{"name": "my-event", "channels": ["my-channel"], '
            b'"data": "{\\"message\\": \\"hello\\"}"}',
            "body_md5=dd37bf9d3d72758038c67623f0dea8e0",
            "855efc7f257cc55ce182ce881204414cb700235004ae77526d6e58a3c7855dd6",
            {},
        ),
        (
            "POST",
            "/apps/1/batch_events",
            b'{"batch": [{"channel": "my-channel", "name": "my-event", '
            b'"data": "{\\"message\\": \\"hello\\"}"}]}',
            "body_md5=854b23e179730cd905f3047ecd68bf9e",
            "8b6684a9e728fa003ffbd136afa9e052ccc6c648b723a384367c39059edd0955",
            {},
        ),
    ]
    for method, path, body, md5, signature, expected in vectors:
        assert hashlib.md5(body).hexdigest() == md5.split("=")[1]
        url = f"{srv.http}{path}?{common}&{md5}&auth_signature={signature}"
        assert send(method, url, body)[::2] == (200, expected), path


# -- apps, routes, CORS (HTTP_API.md §1, §7) -------------------------------------------------


def test_unknown_app(server: ServerProcess) -> None:
    for path in ("/apps/999/events", "/apps/app-x/channels"):
        method = "POST" if path.endswith("events") else "GET"
        app_id = path.split("/")[2]
        status, _headers, answer = call_raw(server, method, path, BODY if method == "POST" else b"")
        assert (status, answer) == (404, err(404, f"The app {app_id} could not be found."))
    assert_serves(server)


def test_disabled_app(make_server: Callable[..., ServerProcess]) -> None:
    apps = [
        {"id": "1", "key": "app-key", "secret": "app-secret"},
        {"id": "2", "key": "off-key", "secret": "off-secret", "enabled": False},
    ]
    srv = make_server({"RELAY_APPS": json.dumps(apps)})
    disabled = err(403, "The app is not enabled.")
    assert call_raw(srv, "GET", "/apps/2/channels", key="off-key", secret="off-secret")[::2] == (
        403,
        disabled,
    )
    assert call_raw(srv, "POST", "/apps/2/events", BODY, key="off-key", secret="off-secret")[
        ::2
    ] == (403, disabled)
    # The app check comes before the signature check.
    assert send("GET", f"{srv.http}/apps/2/channels")[::2] == (403, disabled)
    assert call_raw(srv, "GET", "/apps/1/channels")[::2] == (200, {"channels": {}})


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", EVENTS, "POST"),
        ("PUT", BATCH, "POST"),
        ("POST", CHANNELS, "GET"),
        ("DELETE", f"{CHANNELS}/x", "GET"),
        ("GET", f"/apps/{APP_ID}/users/u/terminate_connections", "POST"),
        ("POST", "/health", "GET"),
    ],
)
def test_wrong_method(server: ServerProcess, method: str, path: str, allow: str) -> None:
    status, headers, answer = send(method, server.http + path)
    assert (status, answer) == (405, err(405, "Method not allowed"))
    assert headers["Allow"] == allow
    assert_serves(server)


@pytest.mark.parametrize(
    "path", ["/nope", "/apps", f"/apps/{APP_ID}", f"{EVENTS}/extra/x", "/apps//events"]
)
def test_unknown_route(server: ServerProcess, path: str) -> None:
    status, headers, answer = send("GET", server.http + path)
    assert (status, headers["Content-Type"], answer) == (
        404,
        "application/json",
        err(404, "Not found"),
    )
    assert_serves(server)


@pytest.mark.parametrize("path", [EVENTS, CHANNELS, "/health", "/nope", "/app/app-key"])
def test_options_preflight(server: ServerProcess, path: str) -> None:
    status, headers, answer = send("OPTIONS", server.http + path)
    assert (status, answer) == (204, "")
    for name, value in CORS.items():
        assert headers[name] == value


def test_cors_on_every_response(server: ServerProcess) -> None:
    responses = [
        send("GET", f"{server.http}/health"),
        send("GET", f"{server.http}/nope"),
        send("GET", f"{server.http}{EVENTS}"),
        send("GET", f"{server.http}{CHANNELS}"),
        call_raw(server, "GET", CHANNELS),
        call_raw(server, "POST", EVENTS, b"[]"),
        call_raw(
            server,
            "POST",
            EVENTS,
            json.dumps({"name": "e", "channel": "c", "data": "x" * 102401}).encode(),
        ),
    ]
    assert [status for status, _h, _b in responses] == [200, 404, 405, 401, 200, 400, 413]
    for _status, headers, _body in responses:
        for name, value in CORS.items():
            assert headers[name] == value


BAD_REQUESTS: list[tuple[str, str, bytes, dict[str, str] | None]] = [
    ("POST", EVENTS, b"{}", None),
    ("POST", EVENTS, b'{"name":"e","channel":"c"}', None),
    ("POST", BATCH, b'{"batch":{}}', None),
    ("GET", f"{CHANNELS}/bad%20name", b"", None),
    ("GET", f"{CHANNELS}/c/users", b"", None),
    ("GET", CHANNELS, b"", {"info": "user_count"}),
    ("POST", AUTH, b'{"socket_id":"1.2","channel_name":"c"}', None),
    ("POST", f"/apps/{APP_ID}/users/a%20b/events", b'{"name":"e","data":"x"}', None),
]


@pytest.mark.parametrize(("method", "path", "body", "params"), BAD_REQUESTS)
def test_errors_are_json(
    server: ServerProcess, method: str, path: str, body: bytes, params: dict[str, str] | None
) -> None:
    status, headers, answer = call_raw(server, method, path, body, params)
    assert status == 400
    assert headers["Content-Type"] == "application/json"
    assert set(answer) == {"error", "code"}
    assert answer["code"] == status
    assert isinstance(answer["error"], str) and answer["error"]
    assert_serves(server)
