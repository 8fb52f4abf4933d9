"""The server event log over a real server (RELAY_EXTRAS.md §5).

A scripted session (connections, a refused one, presence, client events, a publish, bad
signatures, sign-ins, a client leaving, a rejected API call, a termination) runs once against a
server with its own secret; the tests read that server's log through the signed HTTP API and check
the entries, the filters, ``after`` polling and that no secret, auth string, signature,
``channel_data``, ``user_data`` or event payload ever reaches it. Other tests use small servers of
their own (ring capacity, the limit clamp, the log turned off, two apps).
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from conftest import (
    APP_ID,
    APP_KEY,
    ServerProcess,
    connect,
    connect_raw,
    http,
    signed_url,
    signin_token,
    start_server,
    token,
)

SECRET = f"log-secret-{uuid.uuid4().hex}"
LOG = f"/apps/{APP_ID}/events/log"


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Calls:
    """Signed API calls with one app secret; remembers every signature it sent."""

    srv: ServerProcess
    secret: str = SECRET
    app_id: str = APP_ID
    key: str = APP_KEY
    signatures: list[str] = field(default_factory=list)

    def url(self, method: str, path: str, body: bytes, params: dict[str, str], secret: str) -> str:
        url = signed_url(self.srv, method, path, body, params, key=self.key, secret=secret)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        self.signatures.append(query["auth_signature"][0])
        return url

    def __call__(
        self,
        method: str,
        path: str,
        payload: Any = None,
        params: dict[str, str] | None = None,
        *,
        secret: str | None = None,
    ) -> tuple[int, Any]:
        body = json.dumps(payload).encode() if payload is not None else b""
        url = self.url(method, path, body, params or {}, secret or self.secret)
        headers = {"Content-Type": "application/json"} if body else {}
        status, _headers, raw = http(method, url, body or None, headers)
        return status, json.loads(raw) if raw else None

    def log(self, **params: Any) -> dict[str, Any]:
        """A log read that must succeed."""
        path = f"/apps/{self.app_id}/events/log"
        status, body = self(
            "GET", path, params={name: str(value) for name, value in params.items()}
        )
        assert status == 200, body
        return body


@dataclass
class Session:
    """What the scripted session did: who connected, on which channels, and what it sent."""

    calls: Calls
    presence: str = field(default_factory=lambda: unique("presence-room-"))
    other_presence: str = field(default_factory=lambda: unique("presence-other-"))
    private: str = field(default_factory=lambda: unique("private-room-"))
    public: str = field(default_factory=lambda: unique("public-room-"))
    alice_id: str = field(default_factory=lambda: unique("alice-"))
    bob_id: str = field(default_factory=lambda: unique("bob-"))
    alice: str = ""
    bob: str = ""
    carol: str = ""
    client_data: dict[str, Any] = field(default_factory=dict)
    api_data: str = ""
    # Everything the log must never contain.
    never: dict[str, str] = field(default_factory=dict)


def secret_marker(session: Session, what: str) -> str:
    """A unique string placed in a payload, channel_data or user_data, watched for in the log."""
    marker = f"{what}-{uuid.uuid4().hex}"
    session.never[f"marker {what}"] = marker
    return marker


def keep_out(session: Session, what: str, auth: str) -> str:
    """Watch for an auth string and for its signature part alone."""
    session.never[what] = auth
    session.never[f"{what} (signature)"] = auth.split(":", 1)[1]
    return auth


async def run_session(srv: ServerProcess) -> Session:
    calls = Calls(srv)
    s = Session(calls)
    s.never["app secret"] = SECRET

    alice = await connect(srv, query="protocol=7&client=js&version=8.6.0")
    s.alice = alice.socket_id
    alice_cd = compact({"user_id": s.alice_id, "user_info": {"n": secret_marker(s, "cd-alice")}})
    s.never["channel_data alice"] = alice_cd
    auth = keep_out(s, "auth alice", token(s.alice, s.presence, alice_cd, secret=SECRET))
    reply = await alice.subscribe(s.presence, auth=auth, channel_data=alice_cd)
    assert reply["event"] == "pusher_internal:subscription_succeeded", reply

    bob = await connect(srv)
    s.bob = bob.socket_id
    bob_cd = compact({"user_id": s.bob_id, "user_info": {"n": secret_marker(s, "cd-bob")}})
    s.never["channel_data bob"] = bob_cd
    auth = keep_out(s, "auth bob", token(s.bob, s.presence, bob_cd, secret=SECRET))
    reply = await bob.subscribe(s.presence, auth=auth, channel_data=bob_cd)
    assert reply["event"] == "pusher_internal:subscription_succeeded", reply
    await alice.expect("pusher_internal:member_added")

    carol = await connect(srv)
    s.carol = carol.socket_id
    auth = keep_out(s, "auth carol", token(s.carol, s.private, secret=SECRET))
    reply = await carol.subscribe(s.private, auth=auth)
    assert reply["event"] == "pusher_internal:subscription_succeeded", reply

    # A fourth connection is over the app's quota of 3.
    dave = await connect_raw(srv)
    assert (await dave.recv())["data"]["code"] == 4100
    assert (await dave.closed())[0] == 4100

    s.client_data = {"text": secret_marker(s, "client-event")}
    await alice.send("client-msg", s.client_data, s.presence)
    assert (await bob.expect("client-msg"))["data"] == s.client_data
    await alice.send("client-msg", {"text": secret_marker(s, "rejected-event")}, s.public)
    assert (await alice.expect("pusher:error"))["data"]["code"] == 4301

    s.api_data = compact({"news": secret_marker(s, "api-event"), "ü": "✓"})
    publish = {
        "name": "news",
        "channels": [s.presence, s.public],
        "data": s.api_data,
        "socket_id": s.bob,
    }
    assert calls("POST", f"/apps/{APP_ID}/events", publish) == (200, {})
    assert (await alice.expect("news"))["data"] == s.api_data

    # Bad signatures: the errors sent to the client quote the token (and the channel_data).
    bad = keep_out(s, "bad auth private", token(s.alice, s.private, secret="wrong-secret"))
    await alice.send("pusher:subscribe", {"channel": s.private, "auth": bad})
    assert (await alice.expect("pusher:error"))["data"]["message"].endswith(bad)
    bad_cd = compact({"user_id": s.bob_id, "user_info": {"n": secret_marker(s, "cd-bad")}})
    s.never["channel_data bad"] = bad_cd
    bad = keep_out(s, "bad auth presence", token(s.bob, s.other_presence, bad_cd, secret="x"))
    await bob.send(
        "pusher:subscribe", {"channel": s.other_presence, "auth": bad, "channel_data": bad_cd}
    )
    assert bad_cd in (await bob.expect("pusher:error"))["data"]["message"]

    user_data = compact({"id": s.alice_id, "user_info": {"n": secret_marker(s, "user-data")}})
    s.never["user_data alice"] = user_data
    auth = keep_out(s, "signin alice", signin_token(s.alice, user_data, secret=SECRET))
    await alice.send("pusher:signin", {"auth": auth, "user_data": user_data})
    assert (await alice.expect("pusher:signin_success"))["data"]["user_data"] == user_data

    carol_data = compact({"id": "carol", "user_info": {"n": secret_marker(s, "user-data-bad")}})
    s.never["user_data carol"] = carol_data
    bad = keep_out(s, "signin carol", signin_token(s.carol, carol_data, secret="wrong"))
    await carol.send("pusher:signin", {"auth": bad, "user_data": carol_data})
    assert (await carol.closed())[0] == 4009

    await bob.close()
    await alice.expect("pusher_internal:member_removed")

    status, body = calls("GET", f"/apps/{APP_ID}/channels", secret="wrong-secret")
    assert status == 401
    assert calls.signatures[-1] in body["error"]  # the client is told; the log must not keep it

    path = f"/apps/{APP_ID}/users/{s.alice_id}/terminate_connections"
    assert calls("POST", path, {}) == (200, {})
    assert (await alice.closed())[0] == 4009
    for n, signature in enumerate(calls.signatures):
        s.never[f"API signature {n}"] = signature
    return s


@pytest.fixture(scope="module")
def session() -> Iterator[Session]:
    srv = start_server({"RELAY_APP_SECRET": SECRET, "RELAY_APP_MAX_CONNECTIONS": "3"})
    try:
        yield asyncio.run(run_session(srv))
    finally:
        assert srv.stop() == 0, "\n".join(srv.lines)


@pytest.fixture(scope="module")
def full_log(session: Session) -> list[dict[str, Any]]:
    body = session.calls.log(limit=1000)
    assert body["has_more"] is False
    return body["events"]


def shape(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry without its id and time, with the varying values checked and normalised."""
    out = {k: v for k, v in entry.items() if k not in ("id", "time_ms")}
    if "duration_ms" in out:
        assert isinstance(out["duration_ms"], int)
        assert out["duration_ms"] >= 0
        out["duration_ms"] = "≥0"
    if "remote_addr" in out:
        assert out["remote_addr"].startswith("127.0.0.1")
        out["remote_addr"] = "127.0.0.1"
    return out


# -- the entries -------------------------------------------------------------------------------


def test_scripted_session_entries(session: Session, full_log: list[dict[str, Any]]) -> None:
    s = session
    a, b, c = s.alice, s.bob, s.carol
    local = "127.0.0.1"
    cut = "You got disconnected by the app."
    client_events_only = "Client events are only allowed on private and presence channels."
    assert [shape(e) for e in full_log] == [
        {
            "type": "connection_established",
            "socket_id": a,
            "client": "js",
            "version": "8.6.0",
            "protocol": "7",
            "remote_addr": local,
        },
        {"type": "subscribed", "socket_id": a, "channel": s.presence, "user_id": s.alice_id},
        {"type": "member_added", "channel": s.presence, "user_id": s.alice_id},
        {"type": "connection_established", "socket_id": b, "protocol": "7", "remote_addr": local},
        {"type": "subscribed", "socket_id": b, "channel": s.presence, "user_id": s.bob_id},
        {"type": "member_added", "channel": s.presence, "user_id": s.bob_id},
        {"type": "connection_established", "socket_id": c, "protocol": "7", "remote_addr": local},
        {"type": "subscribed", "socket_id": c, "channel": s.private},
        {
            "type": "connection_refused",
            "code": 4100,
            "message": "The current concurrent connections quota has been reached.",
            "remote_addr": local,
        },
        {
            "type": "client_event",
            "socket_id": a,
            "channel": s.presence,
            "event": "client-msg",
            "data_size": len(compact(s.client_data).encode()),
        },
        {
            "type": "client_event_rejected",
            "socket_id": a,
            "channel": s.public,
            "event": "client-msg",
            "message": client_events_only,
        },
        {"type": "error_sent", "socket_id": a, "code": 4301, "message": client_events_only},
        {
            "type": "api_publish",
            "event": "news",
            "channels": [s.presence, s.public],
            "data_size": len(s.api_data.encode()),
            "excluded_socket_id": b,
            "endpoint": f"/apps/{APP_ID}/events",
        },
        {
            "type": "subscription_failed",
            "socket_id": a,
            "channel": s.private,
            "error_type": "AuthError",
            "status": 401,
        },
        {"type": "error_sent", "socket_id": a, "message": "Invalid signature"},
        {
            "type": "subscription_failed",
            "socket_id": b,
            "channel": s.other_presence,
            "error_type": "AuthError",
            "status": 401,
        },
        {"type": "error_sent", "socket_id": b, "message": "Invalid signature"},
        {"type": "signin", "socket_id": a, "user_id": s.alice_id},
        {"type": "signin_failed", "socket_id": c},
        {
            "type": "error_sent",
            "socket_id": c,
            "code": 4009,
            "message": "Connection not authorized.",
        },
        {"type": "unsubscribed", "socket_id": c, "channel": s.private},
        {
            "type": "disconnected",
            "socket_id": c,
            "code": 4009,
            "reason": "Connection not authorized.",
            "duration_ms": "≥0",
        },
        {"type": "unsubscribed", "socket_id": b, "channel": s.presence, "user_id": s.bob_id},
        {"type": "member_removed", "channel": s.presence, "user_id": s.bob_id},
        {"type": "disconnected", "socket_id": b, "code": 1000, "reason": "", "duration_ms": "≥0"},
        {
            "type": "api_rejected",
            "endpoint": f"/apps/{APP_ID}/channels",
            "status": 401,
            "message": "Invalid signature",
        },
        {"type": "error_sent", "socket_id": a, "code": 4009, "message": cut},
        {"type": "unsubscribed", "socket_id": a, "channel": s.presence, "user_id": s.alice_id},
        {"type": "member_removed", "channel": s.presence, "user_id": s.alice_id},
        {"type": "disconnected", "socket_id": a, "code": 4009, "reason": cut, "duration_ms": "≥0"},
        {"type": "terminated", "user_id": s.alice_id, "connections": 1},
    ]


def test_ids_consecutive_and_times_ordered(full_log: list[dict[str, Any]]) -> None:
    ids = [e["id"] for e in full_log]
    assert ids == list(range(1, len(full_log) + 1))
    times = [e["time_ms"] for e in full_log]
    assert all(isinstance(t, int) for t in times)
    assert times == sorted(times)


def test_bounds_and_default_limit(session: Session, full_log: list[dict[str, Any]]) -> None:
    body = session.calls.log()
    assert body == {
        "events": full_log,  # fewer than the default 100: all of them
        "has_more": False,
        "oldest_id": 1,
        "newest_id": len(full_log),
    }


def test_never_stores_secrets_auth_signatures_or_payloads(
    session: Session, full_log: list[dict[str, Any]]
) -> None:
    dump = json.dumps(session.calls.log(limit=1000), ensure_ascii=False)
    assert len(session.never) >= 25
    leaked = {what: value for what, value in session.never.items() if value in dump}
    assert leaked == {}
    # Payloads appear as sizes only; no entry has a field that could carry contents.
    forbidden = {"data", "auth", "channel_data", "user_data", "user_info", "signature", "secret"}
    assert all(not forbidden & set(entry) for entry in full_log)
    sizes = [e["data_size"] for e in full_log if "data_size" in e]
    assert sizes == [len(compact(session.client_data).encode()), len(session.api_data.encode())]


# -- filters -----------------------------------------------------------------------------------


def matching(full_log: list[dict[str, Any]], keep: Any) -> list[dict[str, Any]]:
    return [entry for entry in full_log if keep(entry)]


def test_filter_by_type(session: Session, full_log: list[dict[str, Any]]) -> None:
    body = session.calls.log(type="subscribed,unsubscribed")
    expected = matching(full_log, lambda e: e["type"] in ("subscribed", "unsubscribed"))
    assert body["events"] == expected
    assert [e["type"] for e in expected].count("subscribed") == 3
    assert session.calls.log(type="error_sent")["events"] == matching(
        full_log, lambda e: e["type"] == "error_sent"
    )
    assert session.calls.log(type="webhook_sent")["events"] == []
    # Bounds are those of the whole buffer, not of the matches.
    assert (body["oldest_id"], body["newest_id"]) == (1, len(full_log))


def test_filter_by_channel_matches_api_publish_channels(
    session: Session, full_log: list[dict[str, Any]]
) -> None:
    public = session.calls.log(channel=session.public)["events"]
    assert [e["type"] for e in public] == ["client_event_rejected", "api_publish"]
    presence = session.calls.log(channel=session.presence)["events"]
    assert presence == matching(
        full_log,
        lambda e: e.get("channel") == session.presence or session.presence in e.get("channels", []),
    )
    assert [e["type"] for e in presence] == [
        "subscribed",
        "member_added",
        "subscribed",
        "member_added",
        "client_event",
        "api_publish",
        "unsubscribed",
        "member_removed",
        "unsubscribed",
        "member_removed",
    ]
    assert session.calls.log(channel=unique("nowhere-"))["events"] == []


def test_filter_by_socket_id(session: Session, full_log: list[dict[str, Any]]) -> None:
    for socket_id in (session.alice, session.bob, session.carol):
        body = session.calls.log(socket_id=socket_id)
        assert body["events"] == [e for e in full_log if e.get("socket_id") == socket_id]
    carol = session.calls.log(socket_id=session.carol)["events"]
    assert [e["type"] for e in carol] == [
        "connection_established",
        "subscribed",
        "signin_failed",
        "error_sent",
        "unsubscribed",
        "disconnected",
    ]


def test_filter_by_user_id(session: Session, full_log: list[dict[str, Any]]) -> None:
    alice = session.calls.log(user_id=session.alice_id)["events"]
    assert alice == matching(full_log, lambda e: e.get("user_id") == session.alice_id)
    assert [e["type"] for e in alice] == [
        "subscribed",
        "member_added",
        "signin",
        "unsubscribed",
        "member_removed",
        "terminated",
    ]


def test_filters_combine_and_empty_values_are_ignored(
    session: Session, full_log: list[dict[str, Any]]
) -> None:
    body = session.calls.log(type="member_added,member_removed", user_id=session.bob_id)
    assert [(e["type"], e["user_id"]) for e in body["events"]] == [
        ("member_added", session.bob_id),
        ("member_removed", session.bob_id),
    ]
    both = session.calls.log(socket_id=session.alice, channel=session.presence, type="subscribed")
    assert [e["type"] for e in both["events"]] == ["subscribed"]
    assert session.calls.log(type="", channel="", socket_id="", user_id="")["events"] == full_log


def test_limit_and_has_more(session: Session, full_log: list[dict[str, Any]]) -> None:
    body = session.calls.log(limit=3)
    assert body["events"] == full_log[-3:]  # the newest, ascending
    assert body["has_more"] is True
    filtered = session.calls.log(type="error_sent", limit=2)
    errors = matching(full_log, lambda e: e["type"] == "error_sent")
    assert filtered["events"] == errors[-2:]
    assert filtered["has_more"] is True
    assert session.calls.log(type="error_sent", limit=len(errors))["has_more"] is False


def test_after_polling(session: Session, full_log: list[dict[str, Any]]) -> None:
    polled: list[dict[str, Any]] = []
    cursor = 0
    while True:
        body = session.calls.log(after=cursor, limit=4)
        if not body["events"]:
            break
        assert body["events"] == full_log[len(polled) : len(polled) + 4]  # oldest first
        polled += body["events"]
        cursor = body["events"][-1]["id"]
        assert body["has_more"] is (cursor < len(full_log))
    assert polled == full_log
    assert session.calls.log(after=len(full_log))["events"] == []
    assert session.calls.log(after=10_000)["events"] == []
    assert session.calls.log(after=-5)["events"] == full_log
    # With a filter: the oldest matching after the cursor.
    body = session.calls.log(after=3, type="subscribed", limit=1)
    assert [(e["type"], e["socket_id"]) for e in body["events"]] == [("subscribed", session.bob)]
    assert body["has_more"] is True


# -- query errors, capacity, clamp, off, per app ------------------------------------------------


@pytest.mark.parametrize(
    "params", [{"limit": "0"}, {"limit": "-3"}, {"limit": "ten"}, {"limit": ""}, {"after": "x"}]
)
def test_invalid_query_is_400_and_logged(make_server: Any, params: dict[str, str]) -> None:
    srv = make_server()
    calls = Calls(srv, secret="app-secret")
    status, body = calls("GET", LOG, params=params)
    assert status == 400, body
    assert body["code"] == 400
    assert next(iter(params)) in body["error"]
    [entry] = calls.log()["events"]
    assert shape(entry) == {
        "type": "api_rejected",
        "endpoint": LOG,
        "status": 400,
        "message": body["error"],
    }


def test_ring_capacity(make_server: Any) -> None:
    srv = make_server({"RELAY_EVENT_LOG_SIZE": "5"})
    calls = Calls(srv, secret="app-secret")
    for n in range(1, 9):
        payload = {"name": f"e{n}", "channel": "ring", "data": "x"}
        assert calls("POST", f"/apps/{APP_ID}/events", payload) == (200, {})
    body = calls.log()
    assert [(e["id"], e["event"]) for e in body["events"]] == [(n, f"e{n}") for n in range(4, 9)]
    assert (body["has_more"], body["oldest_id"], body["newest_id"]) == (False, 4, 8)
    assert [e["id"] for e in calls.log(limit=2)["events"]] == [7, 8]
    assert [e["id"] for e in calls.log(after=1)["events"]] == [4, 5, 6, 7, 8]
    assert [e["id"] for e in calls.log(after=6)["events"]] == [7, 8]
    payload = {"name": "e9", "channel": "ring", "data": ""}
    assert calls("POST", f"/apps/{APP_ID}/events", payload) == (200, {})
    body = calls.log()
    assert (body["oldest_id"], body["newest_id"]) == (5, 9)


def test_limit_clamped_to_1000(make_server: Any) -> None:
    srv = make_server({"RELAY_EVENT_LOG_SIZE": "1500"})
    calls = Calls(srv, secret="app-secret")
    total = 1100
    for start in range(0, total, 10):
        batch = [
            {"name": f"e{n}", "channel": "clamp", "data": ""} for n in range(start, start + 10)
        ]
        assert calls("POST", f"/apps/{APP_ID}/batch_events", {"batch": batch}) == (200, {})
    clamped = calls.log(limit=5000)
    assert [e["id"] for e in clamped["events"]] == list(range(101, total + 1))
    assert (clamped["has_more"], clamped["oldest_id"], clamped["newest_id"]) == (True, 1, total)
    assert calls.log(limit=1000) == clamped
    default = calls.log()
    assert [e["id"] for e in default["events"]] == list(range(1001, total + 1))
    assert default["has_more"] is True
    forward = calls.log(after=0, limit=100_000)
    assert [e["id"] for e in forward["events"]] == list(range(1, 1001))
    assert forward["has_more"] is True


async def test_disabled(make_server: Any) -> None:
    srv = make_server({"RELAY_EVENT_LOG_ENABLED": "false"})
    calls = Calls(srv, secret="app-secret")
    sock = await connect(srv)
    await sock.subscribe("public-off")
    assert calls(
        "POST", f"/apps/{APP_ID}/events", {"name": "e", "channel": "public-off", "data": "d"}
    ) == (200, {})
    assert (await sock.expect("e"))["data"] == "d"
    expected = (404, {"error": "Event log is disabled", "code": 404})
    assert calls("GET", LOG) == expected
    assert calls("GET", LOG, params={"limit": "0"}) == expected
    await sock.close()


async def test_per_app_logs(make_server: Any) -> None:
    apps = [
        {"id": "1", "key": "app-key", "secret": "app-secret"},
        {"id": "2", "key": "other-key", "secret": "other-secret"},
    ]
    srv = make_server({"RELAY_APPS": json.dumps(apps)})
    one = Calls(srv, secret="app-secret")
    two = Calls(srv, secret="other-secret", app_id="2", key="other-key")
    sock = await connect(srv, key="other-key")
    channel = "presence-two"
    channel_data = compact({"user_id": 42})
    auth = token(sock.socket_id, channel, channel_data, secret="other-secret", key="other-key")
    reply = await sock.subscribe(channel, auth=auth, channel_data=channel_data)
    assert reply["event"] == "pusher_internal:subscription_succeeded", reply
    assert one.log() == {"events": [], "has_more": False, "oldest_id": None, "newest_id": None}
    log = two.log()["events"]
    assert [(e["id"], e["type"]) for e in log] == [
        (1, "connection_established"),
        (2, "subscribed"),
        (3, "member_added"),
    ]
    # user_id is compared as a string: the presence id 42 matches user_id=42.
    assert [e["type"] for e in two.log(user_id=42)["events"]] == ["subscribed", "member_added"]
    assert log[1]["user_id"] == 42
    await sock.close()
