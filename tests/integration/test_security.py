"""Security properties as tests: who may publish, read, subscribe and speak, and as whom.

- Signatures are compared in constant time: checked on the code of both signing twins (an
  inspection, not a timing measurement) and on their behaviour at every digit.
- Signed HTTP requests: the timestamp window, ``auth_key`` matching.
- App isolation: app A's key and secret can neither publish to nor read app B, A's channels
  and B's are disjoint even under one name, A's tokens do not open B's channels, and a user
  terminated through A keeps B's connections.
- Tokens are bound to what they sign: presence ``channel_data`` byte for byte, the socket id.
- Clients cannot choose their identity: a client event's ``user_id`` is the server's, and a
  socket cannot subscribe to another user's ``#server-to-user-`` channel.
"""

from __future__ import annotations

import ast
import hmac
import importlib
import inspect
import json
import pathlib
import re
import time
from collections.abc import Iterator
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from rawwire import HttpConn, api_call

import fastrelay.protocol
from conftest import (
    APP_SECRET,
    PusherSocket,
    ServerProcess,
    connect,
    signin_token,
    start_server,
    token,
)

SECRET = b"app-secret"
PYX = pathlib.Path(fastrelay.protocol.__file__).parent / "_signing_c.pyx"


def _twin(name: str) -> ModuleType:
    try:
        return importlib.import_module(f"fastrelay.protocol._signing_{name}")
    except ImportError:
        pytest.skip(f"fastrelay.protocol._signing_{name} is not built")


# -- constant-time comparison: by inspection ---------------------------------------------------


def test_pure_twin_compares_with_hmac_compare_digest() -> None:
    signing = _twin("py")
    assert "hmac.compare_digest(" in inspect.getsource(signing._matches)
    # Nothing secret-derived is ever compared with == / != (which stops at the first
    # difference): the received signature, the expected digest.
    tree = ast.parse(inspect.getsource(signing))
    guarded = {"received", "expected", "signature", "digest"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(
            isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops
        ):
            for operand in (node.left, *node.comparators):
                # The value itself (or a method's result on it) may not be compared; its
                # length, which is public, may.
                if isinstance(operand, ast.Call) and ast.unparse(operand.func) == "len":
                    continue
                names = {n.id for n in ast.walk(operand) if isinstance(n, ast.Name)}
                assert not names & guarded, ast.unparse(node)


def test_pure_twin_routes_every_check_through_compare_digest(monkeypatch) -> None:
    signing = _twin("py")
    calls: list[tuple[str, str]] = []

    def compare_digest(a: str, b: str) -> bool:
        calls.append((a, b))
        return hmac.compare_digest(a, b)

    monkeypatch.setattr(
        signing, "hmac", SimpleNamespace(digest=hmac.digest, compare_digest=compare_digest)
    )
    good = signing.sign(SECRET, "1.2:private-x")
    assert signing.verify_token(SECRET, "k", f"k:{good}", "1.2:private-x")
    assert not signing.verify_token(SECRET, "k", f"k:{good[:-1]}0", "1.2:private-x")
    params = {"auth_key": "k", "auth_timestamp": "1", "auth_version": "1.0"}
    expected = signing.sign(SECRET, signing.string_to_sign("GET", "/p", params))
    assert signing.verify_request(SECRET, "GET", "/p", params, expected.upper())
    assert len(calls) == 3


def _pyx_function(source: str, header: str) -> str:
    start = source.index(header)
    end = source.find("\n\n\n", start)
    return source[start : end if end != -1 else None]


def test_compiled_twin_compares_in_one_branch_free_loop() -> None:
    if not PYX.exists():
        pytest.skip("the .pyx source is not installed")
    source = PYX.read_text()
    body = _pyx_function(source, "cdef bint _hex_equal(")
    start = body.index("for i in range(_HEX):")
    end = body.index("return bad == 0")
    loop = body[start:end].split("\n", 1)[1]
    code = "\n".join(line.split("#")[0] for line in loop.splitlines())
    # All 64 characters are visited; nothing leaves the loop early or branches on the data.
    for word in ("return", "break", "continue", "if", "while", "memcmp"):
        assert not re.search(rf"\b{word}\b", code), word
    assert "==" not in code and "!=" not in code
    assert "bad |=" in code
    assert body.rstrip().endswith("return bad == 0")
    # Both checks end in it; the only memcmp on a token compares the public app key.
    for header in ("def verify_token(", "def verify_request("):
        function = _pyx_function(source, header)
        assert re.search(r"return _hex_equal\(", function), header
        for line in function.splitlines():
            if "memcmp" in line:
                assert "key_data" in line and "digest" not in line, line


@pytest.mark.parametrize("twin", ["py", "c"])
def test_every_wrong_digit_is_refused_and_case_is_ignored(twin: str) -> None:
    signing = _twin(twin)
    message = "123.456:private-x"
    good = signing.sign(SECRET, message)
    assert signing.verify_token(SECRET, "k", f"k:{good.upper()}", message)
    for i in range(64):
        for digit in {"0", "f", "g", "/", ":"} - {good[i]}:
            bad = good[:i] + digit + good[i + 1 :]
            assert not signing.verify_token(SECRET, "k", f"k:{bad}", message), (i, digit)
    assert not signing.verify_token(SECRET, "k", f"k:{good}0", message)
    assert not signing.verify_token(SECRET, "k", f"k:{good[:-1]}", message)
    assert not signing.verify_token(SECRET, "other", f"k:{good}", message)


# -- signed HTTP requests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "status"), [(-700, 401), (-500, 200), (0, 200), (500, 200), (700, 401)]
)
async def test_timestamp_window(server: ServerProcess, offset: int, status: int) -> None:
    conn = await HttpConn.open(server)
    stamp = int(time.time()) + offset
    got, _, body = await api_call(conn, server, "GET", "/apps/1/channels", timestamp=stamp)
    assert got == status, body
    if status == 401:
        assert body["error"].startswith(f"Timestamp expired: Given timestamp ({stamp})")
    conn.close()


async def test_auth_key_must_be_the_apps(server: ServerProcess) -> None:
    conn = await HttpConn.open(server)
    body = json.dumps({"name": "e", "channel": "c", "data": "x"}).encode()
    # Right secret, unknown key.
    status, _, answer = await api_call(conn, server, "POST", "/apps/1/events", body, key="nope")
    assert (status, answer) == (401, {"error": "Unknown auth_key", "code": 401})
    # Right key, wrong secret.
    status, _, answer = await api_call(conn, server, "POST", "/apps/1/events", body, secret="x")
    assert status == 401 and answer["error"].startswith("Invalid signature")
    # The short terminate path finds the app by auth_key: an unknown one finds nothing.
    status, _, answer = await api_call(
        conn, server, "POST", "/users/u/terminate_connections", b"{}", key="nope"
    )
    assert (status, answer) == (401, {"error": "Unknown auth_key", "code": 401})
    conn.close()


# -- app isolation -----------------------------------------------------------------------------

A = {"id": "1", "key": "app-key", "secret": "app-secret"}
B = {"id": "2", "key": "two-key", "secret": "two-secret"}


@pytest.fixture(scope="module")
def two_apps() -> Iterator[ServerProcess]:
    srv = start_server({"RELAY_APPS": json.dumps([A, B])})
    yield srv
    assert srv.stop() == 0, "\n".join(srv.lines)


async def call(
    server: ServerProcess, as_app: dict[str, str], method: str, path: str, body: Any = None
):
    conn = await HttpConn.open(server)
    raw = json.dumps(body).encode() if body is not None else b""
    try:
        return await api_call(
            conn, server, method, path, raw, key=as_app["key"], secret=as_app["secret"]
        )
    finally:
        conn.close()


async def test_app_a_cannot_publish_to_or_read_app_b(two_apps: ServerProcess) -> None:
    event = {"name": "e", "channel": "shared", "data": "x"}
    for method, path, body in [
        ("POST", "/apps/2/events", event),
        ("POST", "/apps/2/batch_events", {"batch": [event]}),
        ("GET", "/apps/2/channels", None),
        ("GET", "/apps/2/channels/shared", None),
        ("GET", "/apps/2/channels/presence-x/users", None),
        ("GET", "/apps/2/connections", None),
        ("POST", "/apps/2/users/u1/terminate_connections", {}),
    ]:
        status, _, answer = await call(two_apps, A, method, path, body)
        assert (status, answer) == (401, {"error": "Unknown auth_key", "code": 401}), path
        # Even with B's key in the query, a signature made with A's secret is refused.
        mixed = {"key": B["key"], "secret": A["secret"]}
        status, _, answer = await call(two_apps, mixed, method, path, body)
        assert status == 401 and answer["error"].startswith("Invalid signature"), path


async def test_same_channel_name_in_two_apps_is_two_channels(two_apps: ServerProcess) -> None:
    in_a = await connect(two_apps, key=A["key"])
    in_b = await connect(two_apps, key=B["key"])
    for sock in (in_a, in_b):
        assert (await sock.subscribe("shared"))["event"].endswith("subscription_succeeded")
    event = {"name": "from-a", "channel": "shared", "data": "a"}
    assert (await call(two_apps, A, "POST", "/apps/1/events", event))[0] == 200
    event = {"name": "from-b", "channel": "shared", "data": "b"}
    assert (await call(two_apps, B, "POST", "/apps/2/events", event))[0] == 200
    assert (await in_a.expect("from-a"))["data"] == "a"
    assert (await in_b.recv())["event"] == "from-b"  # its first message: A's never came
    # A's view of the channels is A's alone.
    _, _, listing = await call(two_apps, A, "GET", "/apps/1/channels")
    assert listing == {"channels": {"shared": {"subscription_count": 1}}}
    await in_a.close()
    await in_b.close()


async def test_app_a_tokens_do_not_open_app_b_channels(two_apps: ServerProcess) -> None:
    sock = await connect(two_apps, key=B["key"])
    sid = sock.socket_id
    data = json.dumps({"user_id": "u1"}, separators=(",", ":"))
    for channel, auth, channel_data in [
        ("private-x", token(sid, "private-x", secret=A["secret"], key=A["key"]), None),
        ("private-x", token(sid, "private-x", secret=A["secret"], key=B["key"]), None),
        ("presence-x", token(sid, "presence-x", data, secret=A["secret"], key=B["key"]), data),
    ]:
        extra = {"channel_data": channel_data} if channel_data else {}
        reply = await sock.subscribe(channel, auth=auth, **extra)
        assert reply["event"] == "pusher:subscription_error", reply
        assert reply["data"]["type"] == "AuthError"
        assert (await sock.recv())["event"] == "pusher:error"  # Pusher's own report of it
    # B's own token works on the same socket.
    reply = await sock.subscribe(
        "private-x", auth=token(sid, "private-x", secret=B["secret"], key=B["key"])
    )
    assert reply["event"] == "pusher_internal:subscription_succeeded"
    await sock.close()


async def test_terminating_a_user_of_a_leaves_b_alone(two_apps: ServerProcess) -> None:
    socks = {}
    for name, app in (("a", A), ("b", B)):
        sock = await connect(two_apps, key=app["key"])
        user_data = json.dumps({"id": "same-user"}, separators=(",", ":"))
        auth = signin_token(sock.socket_id, user_data, secret=app["secret"], key=app["key"])
        await sock.send("pusher:signin", {"auth": auth, "user_data": user_data})
        assert (await sock.recv())["event"] == "pusher:signin_success"
        socks[name] = sock
    status, _, _ = await call(two_apps, A, "POST", "/users/same-user/terminate_connections", {})
    assert status == 200
    assert (await socks["a"].expect("pusher:error"))["data"]["code"] == 4009
    await socks["b"].send("pusher:ping", {})
    assert (await socks["b"].expect("pusher:pong"))["data"] == {}
    for sock in socks.values():
        await sock.close()


# -- tokens are bound to what they sign --------------------------------------------------------


async def test_presence_channel_data_must_be_exactly_what_was_signed(server: ServerProcess) -> None:
    sock = await connect(server)
    sid = sock.socket_id
    signed = '{"user_id":"u1","user_info":{"name":"Ann"}}'
    auth = token(sid, "presence-sec", signed)
    for sent in (
        '{"user_id": "u1", "user_info": {"name": "Ann"}}',  # same JSON, other spacing
        '{"user_info":{"name":"Ann"},"user_id":"u1"}',  # same JSON, other key order
        '{"user_id":"admin","user_info":{"name":"Ann"}}',  # someone else
        signed + " ",
    ):
        reply = await sock.subscribe("presence-sec", auth=auth, channel_data=sent)
        assert reply["event"] == "pusher:subscription_error", sent
        assert reply["data"]["type"] == "AuthError"
        assert (await sock.expect("pusher:error"))["data"]["code"] is None
    reply = await sock.subscribe("presence-sec", auth=auth, channel_data=signed)
    assert reply["event"] == "pusher_internal:subscription_succeeded"
    assert json.loads(reply["data"])["presence"]["ids"] == ["u1"]
    await sock.close()


async def test_tokens_are_bound_to_their_socket(server: ServerProcess) -> None:
    first = await connect(server)
    second = await connect(server)
    stolen = token(first.socket_id, "private-mine")
    reply = await second.subscribe("private-mine", auth=stolen)
    assert reply["event"] == "pusher:subscription_error"
    assert (await second.recv())["data"]["code"] is None  # Pusher's report of it
    user_data = '{"id":"u1"}'
    await second.send(
        "pusher:signin", {"auth": signin_token(first.socket_id, user_data), "user_data": user_data}
    )
    error = await second.expect("pusher:error")
    assert error["data"]["code"] == 4009
    await first.close()
    await second.close()


# -- clients cannot choose who they are ---------------------------------------------------------


async def join(server: ServerProcess, channel: str, user_id: str) -> PusherSocket:
    sock = await connect(server)
    data = json.dumps({"user_id": user_id}, separators=(",", ":"))
    reply = await sock.subscribe(
        channel, auth=token(sock.socket_id, channel, data), channel_data=data
    )
    assert reply["event"] == "pusher_internal:subscription_succeeded"
    return sock


async def test_client_events_cannot_spoof_user_id(server: ServerProcess) -> None:
    sender = await join(server, "presence-spoof", "u1")
    receiver = await join(server, "presence-spoof", "u2")
    await sender.expect("pusher_internal:member_added")
    await sender.send(
        "client-hello",
        {"from": "me"},
        channel="presence-spoof",
        user_id="admin",
        socket_id="1.1",
    )
    got = await receiver.expect("client-hello")
    assert got == {
        "event": "client-hello",
        "channel": "presence-spoof",
        "data": {"from": "me"},
        "user_id": "u1",
    }
    # On a private channel there is no user id to give: a claimed one is dropped.
    for sock in (sender, receiver):
        reply = await sock.subscribe("private-spoof", auth=token(sock.socket_id, "private-spoof"))
        assert reply["event"] == "pusher_internal:subscription_succeeded"
    await sender.send("client-hi", "x", channel="private-spoof", user_id="admin")
    assert await receiver.expect("client-hi") == {
        "event": "client-hi",
        "channel": "private-spoof",
        "data": "x",
    }
    await sender.close()
    await receiver.close()


async def test_no_subscribing_to_another_users_channel(server: ServerProcess) -> None:
    sock = await connect(server)
    # Not signed in: no user channel at all.
    reply = await sock.subscribe("#server-to-user-u1", auth="")
    assert (reply["event"], reply["data"]["type"]) == ("pusher:subscription_error", "AuthError")
    user_data = '{"id":"u1"}'
    await sock.send(
        "pusher:signin", {"auth": signin_token(sock.socket_id, user_data), "user_data": user_data}
    )
    assert (await sock.recv())["event"] == "pusher:signin_success"
    for channel in ("#server-to-user-u2", "#server-to-user-u1x", "#server-to-user-U1"):
        reply = await sock.subscribe(channel, auth="")
        assert reply == {
            "event": "pusher:subscription_error",
            "channel": channel,
            "data": {
                "type": "AuthError",
                "error": f"Not signed in as user {channel.removeprefix('#server-to-user-')}",
                "status": 401,
            },
        }
    # Its own works; what is sent to u2 never reaches it.
    reply = await sock.subscribe("#server-to-user-u1", auth="")
    assert reply["event"] == "pusher_internal:subscription_succeeded"
    for user in ("u2", "u1"):
        body = {"name": f"for-{user}", "channel": f"#server-to-user-{user}", "data": "x"}
        assert (
            await call(
                server, {"key": "app-key", "secret": APP_SECRET}, "POST", "/apps/1/events", body
            )
        )[0] == 200
    assert (await sock.recv())["event"] == "for-u1"
    await sock.close()


async def test_signed_in_user_cannot_be_switched(server: ServerProcess) -> None:
    sock = await connect(server)
    for user in ("u1", "admin"):
        user_data = json.dumps({"id": user}, separators=(",", ":"))
        await sock.send(
            "pusher:signin",
            {"auth": signin_token(sock.socket_id, user_data), "user_data": user_data},
        )
    assert (await sock.recv())["event"] == "pusher:signin_success"
    error = await sock.expect("pusher:error")
    assert error["data"]["message"] == "Connection is already signed in as another user."
    reply = await sock.subscribe("#server-to-user-admin", auth="")
    assert reply["event"] == "pusher:subscription_error"
    await sock.close()
