"""The Pusher session and hub, driven by plain function calls: no loop, no socket, no sleep."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from typing import Any

import pytest

from fastrelay.config import App
from fastrelay.errors import ClientEventRejected, Unauthorized


def sign(message: str, secret: str = "app-secret") -> str:
    return "app-key:" + hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def presence_data(user_id: Any, **info: Any) -> str:
    return json.dumps({"user_id": user_id, "user_info": info}, separators=(",", ":"))


def join_presence(p: Any, channel: str, user_id: Any, **info: Any) -> None:
    data = presence_data(user_id, **info)
    p.send(
        "pusher:subscribe",
        {"channel": channel, "auth": sign(f"{p.socket_id}:{channel}:{data}"), "channel_data": data},
    )


def join_private(p: Any, channel: str) -> None:
    p.send("pusher:subscribe", {"channel": channel, "auth": sign(f"{p.socket_id}:{channel}")})


def events(messages: list[dict[str, Any]]) -> list[str]:
    return [m["event"] for m in messages]


# -- basic messages (PROTOCOL.md §2.3, §3.3) ------------------------------------------------


def test_ping_gets_pong_with_object_data(app, peer):
    p = peer(app)
    p.send("pusher:ping", "")
    assert p.received() == [{"event": "pusher:pong", "data": {}}]


@pytest.mark.parametrize(
    "raw", [b"not json", b"[1,2]", b'{"data":{}}', b'{"event":3}', b"\xff\xfe"]
)
def test_malformed_messages_get_null_code_error(app, peer, raw):
    p = peer(app)
    p.session.receive_message(raw)
    assert p.received() == [
        {"event": "pusher:error", "data": {"code": None, "message": "Invalid message format"}}
    ]


def test_subscribe_without_channel(app, peer):
    p = peer(app)
    p.send("pusher:subscribe", {"auth": ""})
    [msg] = p.received()
    assert msg["data"] == {"code": None, "message": "Invalid subscription request: missing channel"}


def test_unknown_pusher_event_is_ignored(app, peer):
    p = peer(app)
    p.send("pusher:whatever", {})
    p.send("some-event", {})
    assert p.received() == []


def test_subscribe_data_may_be_a_json_string(app, peer):
    p = peer(app)
    p.send("pusher:subscribe", json.dumps({"channel": "news"}))
    assert p.received() == [
        {"event": "pusher_internal:subscription_succeeded", "channel": "news", "data": "{}"}
    ]


# -- subscriptions (PROTOCOL.md §5) ---------------------------------------------------------


def test_public_subscribe_then_publish(app, peer, hub, webhooks):
    p = peer(app)
    p.send("pusher:subscribe", {"channel": "news", "auth": ""})
    assert events(p.received()) == ["pusher_internal:subscription_succeeded"]
    assert webhooks == [{"name": "channel_occupied", "channel": "news"}]
    assert hub.publish(app, "news", "flash", '{"a": 1}') == 1
    assert p.received() == [{"event": "flash", "channel": "news", "data": '{"a": 1}'}]


def test_publish_excludes_socket_id(app, peer, hub):
    a, b = peer(app), peer(app)
    for p in (a, b):
        p.send("pusher:subscribe", {"channel": "news"})
        p.received()
    assert hub.publish(app, "news", "e", "x", except_socket_id=a.socket_id) == 1
    assert a.received() == []
    assert events(b.received()) == ["e"]


def test_private_subscription_checks_signature(app, peer):
    p = peer(app)
    join_private(p, "private-orders")
    assert events(p.received()) == ["pusher_internal:subscription_succeeded"]
    assert p.authorized == 1


def test_bad_signature_sends_subscription_error_and_pusher_error(app, peer):
    p = peer(app)
    p.send("pusher:subscribe", {"channel": "private-x", "auth": "app-key:" + "0" * 64})
    error, pusher_error = p.received()
    assert error["event"] == "pusher:subscription_error"
    assert error["channel"] == "private-x"
    assert error["data"]["type"] == "AuthError" and error["data"]["status"] == 401
    assert f"{p.socket_id}:private-x" in error["data"]["error"]
    assert "app-secret" not in error["data"]["error"]
    assert pusher_error == {
        "event": "pusher:error",
        "data": {"code": None, "message": error["data"]["error"]},
    }
    assert p.authorized == 0
    p.send("pusher:ping")
    assert events(p.received()) == ["pusher:pong"]


def test_wrong_key_part_is_rejected(app, peer):
    p = peer(app)
    good = sign(f"{p.socket_id}:private-x")
    p.send("pusher:subscribe", {"channel": "private-x", "auth": "other" + good[len("app-key") :]})
    assert events(p.received()) == ["pusher:subscription_error", "pusher:error"]


@pytest.mark.parametrize(
    ("name", "type_"),
    [("x" * 201, "LimitReached"), ("bad name", "InvalidChannel"), ("#other", "InvalidChannel")],
)
def test_invalid_channel_names(app, peer, name, type_):
    p = peer(app)
    p.send("pusher:subscribe", {"channel": name})
    [msg] = p.received()
    assert msg["event"] == "pusher:subscription_error"
    assert msg["data"]["type"] == type_ and msg["data"]["status"] == 4009


def test_double_subscribe_repeats_success_without_side_effects(app, peer, webhooks):
    a, b = peer(app), peer(app)
    join_presence(a, "presence-room", "u1")
    join_presence(b, "presence-room", "u2")
    a.received(), b.received()
    webhooks.clear()
    join_presence(b, "presence-room", "u2")
    [again] = b.received()
    assert again["event"] == "pusher_internal:subscription_succeeded"
    assert json.loads(again["data"])["presence"]["count"] == 2
    assert a.received() == [] and webhooks == []


def test_unsubscribe_is_silent_and_vacates(app, peer, hub, webhooks):
    p = peer(app)
    p.send("pusher:subscribe", {"channel": "news"})
    p.send("pusher:unsubscribe", {"channel": "news"})
    p.send("pusher:unsubscribe", {"channel": "never-joined"})
    assert events(p.received()) == ["pusher_internal:subscription_succeeded"]
    assert webhooks[-1] == {"name": "channel_vacated", "channel": "news"}
    assert hub.channel(app.id, "news") is None


# -- presence (PROTOCOL.md §3.5, §3.8, §6) --------------------------------------------------


def test_presence_roster_and_member_events_once_per_user(app, peer, webhooks):
    a, b, b2 = peer(app), peer(app), peer(app)
    join_presence(a, "presence-room", "u1", name="Alice")
    [ok] = a.received()
    assert json.loads(ok["data"]) == {
        "presence": {"ids": ["u1"], "hash": {"u1": {"name": "Alice"}}, "count": 1}
    }
    join_presence(b, "presence-room", 2, name="Bob")
    assert json.loads(b.received()[0]["data"])["presence"] == {
        "ids": ["u1", 2],
        "hash": {"u1": {"name": "Alice"}, "2": {"name": "Bob"}},
        "count": 2,
    }
    [added] = a.received()
    assert added == {
        "event": "pusher_internal:member_added",
        "channel": "presence-room",
        "data": json.dumps({"user_id": 2, "user_info": {"name": "Bob"}}, separators=(",", ":")),
    }
    # The same user from a second connection ("2" and 2 are one user): nothing new.
    join_presence(b2, "presence-room", "2", name="Bob again")
    assert json.loads(b2.received()[0]["data"])["presence"]["count"] == 2
    assert a.received() == []
    b.send("pusher:unsubscribe", {"channel": "presence-room"})
    assert a.received() == []  # b2 still holds user 2
    b2.send("pusher:unsubscribe", {"channel": "presence-room"})
    [removed] = a.received()
    assert removed["event"] == "pusher_internal:member_removed"
    assert json.loads(removed["data"]) == {"user_id": 2}
    names = [w["name"] for w in webhooks]
    assert names.count("member_added") == 2 and names.count("member_removed") == 1


def test_presence_hash_keeps_earliest_connection_info(app, peer):
    a, a2, watcher = peer(app), peer(app), peer(app)
    join_presence(a, "presence-room", "u1", v=1)
    join_presence(a2, "presence-room", "u1", v=2)
    join_presence(watcher, "presence-room", "w")
    roster = json.loads(watcher.received()[0]["data"])["presence"]
    assert roster["hash"]["u1"] == {"v": 1}


def test_disconnect_removes_member(app, peer, hub):
    a, b = peer(app), peer(app)
    join_presence(a, "presence-room", "u1")
    join_presence(b, "presence-room", "u2")
    a.received()
    hub.remove_client(b.client)
    [removed] = a.received()
    assert removed["event"] == "pusher_internal:member_removed"


@pytest.mark.parametrize(
    "channel_data",
    [
        None,
        "not json",
        "[1]",
        '{"user_info":{}}',
        '{"user_id":""}',
        '{"user_id":true}',
        json.dumps({"user_id": "x" * 129}),
    ],
)
def test_presence_needs_usable_channel_data(app, peer, channel_data):
    p = peer(app)
    message: dict[str, Any] = {"channel": "presence-room"}
    if channel_data is not None:
        message["channel_data"] = channel_data
    message["auth"] = sign(f"{p.socket_id}:presence-room:{channel_data or ''}")
    if channel_data is None:
        message["auth"] = sign(f"{p.socket_id}:presence-room")
    p.send("pusher:subscribe", message)
    msg = p.received()[0]
    assert msg["event"] == "pusher:subscription_error"
    assert msg["data"]["type"] == "AuthError" and msg["data"]["status"] == 401


def test_presence_member_limit(app, peer):
    small = dataclasses.replace(app, max_presence_members=2)
    peers = [peer(small) for _ in range(3)]
    for i, p in enumerate(peers):
        join_presence(p, "presence-room", f"u{i}")
    msg = peers[2].received()[0]
    assert msg["event"] == "pusher:subscription_error"
    assert msg["data"]["type"] == "LimitReached" and msg["data"]["status"] == 4100
    # An existing user may still open another connection.
    extra = peer(small)
    join_presence(extra, "presence-room", "u0")
    assert extra.received()[0]["event"] == "pusher_internal:subscription_succeeded"


def test_presence_user_info_size_limit(app, peer):
    p = peer(app)
    join_presence(p, "presence-room", "u1", blob="x" * 3000)
    msg = p.received()[0]
    assert msg["data"]["type"] == "LimitReached" and msg["data"]["status"] == 4301


# -- client events (PROTOCOL.md §8) ---------------------------------------------------------


def test_client_event_relayed_to_others_only(app, peer, webhooks):
    a, b = peer(app), peer(app)
    join_private(a, "private-chat")
    join_private(b, "private-chat")
    a.received(), b.received()
    a.send("client-typing", {"on": True}, channel="private-chat")
    assert a.received() == []
    assert b.received() == [
        {"event": "client-typing", "channel": "private-chat", "data": {"on": True}}
    ]
    assert webhooks[-1]["name"] == "client_event"
    assert webhooks[-1]["data"] == '{"on":true}'


def test_client_event_on_presence_carries_user_id(app, peer):
    a, b = peer(app), peer(app)
    join_presence(a, "presence-chat", "u1")
    join_presence(b, "presence-chat", "u2")
    a.received(), b.received()
    a.send("client-x", "plain string", channel="presence-chat")
    assert b.received() == [
        {"event": "client-x", "channel": "presence-chat", "data": "plain string", "user_id": "u1"}
    ]


def reject(p: Any, event: str, channel: str, data: Any = "x") -> dict[str, Any]:
    p.send(event, data, channel=channel)
    [msg] = p.received()
    assert msg["event"] == "pusher:error" and msg["channel"] == channel
    assert msg["data"]["code"] == 4301
    return msg


def test_client_event_rejections(app, peer):
    p = peer(app)
    for channel in ("news", "cache-x", "private-encrypted-x"):
        p.send("pusher:subscribe", {"channel": channel, "auth": sign(f"{p.socket_id}:{channel}")})
    join_private(p, "private-chat")
    p.received()
    for channel in ("news", "cache-x", "private-encrypted-x"):
        msg = reject(p, "client-x", channel)
        assert (
            msg["data"]["message"]
            == "Client events are only allowed on private and presence channels."
        )
    msg = reject(p, "client-x", "private-other")
    assert msg["data"]["message"] == "The client is not a member of the specified channel."
    msg = reject(p, "client-" + "x" * 200, "private-chat")
    assert msg["data"]["message"] == "Event name is too long. Maximum allowed size is 200."
    msg = reject(p, "client-x", "private-chat", "y" * (100 * 1024 + 1))
    assert msg["data"]["message"] == "The event data should be less than 100 KB."


def test_client_events_disabled(app, peer):
    p = peer(dataclasses.replace(app, enable_client_messages=False))
    join_private(p, "private-chat")
    p.received()
    msg = reject(p, "client-x", "private-chat")
    assert msg["data"]["message"] == "The app does not have client messaging enabled."


def test_client_event_rate_limit(app, peer, clock):
    limited = dataclasses.replace(app, max_client_events_per_sec=2)
    a, b = peer(limited), peer(limited)
    join_private(a, "private-chat")
    join_private(b, "private-chat")
    a.received(), b.received()
    a.send("client-x", 1, channel="private-chat")
    a.send("client-x", 2, channel="private-chat")
    reject(a, "client-x", "private-chat")
    assert len(b.received()) == 2
    clock.now += 1.0
    a.send("client-x", 3, channel="private-chat")
    assert len(b.received()) == 1


def test_client_event_rate_limit_can_terminate(app, peer):
    limited = dataclasses.replace(app, max_client_events_per_sec=0, rate_limit_terminate=True)
    p = peer(limited)
    join_private(p, "private-chat")
    with pytest.raises(ClientEventRejected) as info:
        p.send("client-x", 1, channel="private-chat")
    assert info.value.code == 4301 and info.value.close


# -- cache channels (PROTOCOL.md §11) -------------------------------------------------------


def test_cache_miss_then_replay(app, peer, hub, webhooks, clock):
    a = peer(app)
    a.send("pusher:subscribe", {"channel": "cache-prices"})
    assert a.received() == [
        {
            "event": "pusher_internal:subscription_succeeded",
            "channel": "cache-prices",
            "data": "{}",
        },
        {"event": "pusher:cache_miss", "channel": "cache-prices"},
    ]
    assert {"name": "cache_miss", "channel": "cache-prices"} in webhooks
    hub.publish(app, "cache-prices", "price", "10")
    a.received()
    b = peer(app)
    b.send("pusher:subscribe", {"channel": "cache-prices"})
    assert b.received()[1] == {"event": "price", "channel": "cache-prices", "data": "10"}
    clock.now += 1801
    c = peer(app)
    c.send("pusher:subscribe", {"channel": "cache-prices"})
    assert c.received()[1]["event"] == "pusher:cache_miss"


def test_cache_stored_without_subscribers(app, peer, hub):
    hub.publish(app, "private-cache-x", "e", "d")
    p = peer(app)
    join_private(p, "private-cache-x")
    assert p.received()[1] == {"event": "e", "channel": "private-cache-x", "data": "d"}


# -- sign-in, user channels, watchlist, termination (PROTOCOL.md §10) ------------------------


def signin(p: Any, user: dict[str, Any]) -> str:
    user_data = json.dumps(user, separators=(",", ":"))
    p.send(
        "pusher:signin", {"user_data": user_data, "auth": sign(f"{p.socket_id}::user::{user_data}")}
    )
    return user_data


def test_signin_success_echoes_user_data(app, peer):
    p = peer(app)
    user_data = signin(p, {"id": "u1", "name": "Alice"})
    assert p.received() == [{"event": "pusher:signin_success", "data": {"user_data": user_data}}]
    assert p.client.user_id == "u1" and p.authorized == 1


@pytest.mark.parametrize(
    "data",
    [{}, {"user_data": '{"id":"u1"}'}, {"user_data": '{"id":"u1"}', "auth": "app-key:" + "0" * 64}],
)
def test_signin_failure_is_fatal_4009(app, peer, data):
    p = peer(app)
    with pytest.raises(Unauthorized) as info:
        p.send("pusher:signin", data)
    assert info.value.code == 4009 and info.value.close


def test_signin_needs_an_id(app, peer):
    p = peer(app)
    with pytest.raises(Unauthorized):
        signin(p, {"name": "no id"})


def test_second_user_is_refused_without_closing(app, peer):
    p = peer(app)
    signin(p, {"id": "u1"})
    p.received()
    signin(p, {"id": "u2"})
    assert p.received() == [
        {
            "event": "pusher:error",
            "data": {"code": None, "message": "Connection is already signed in as another user."},
        }
    ]
    assert p.client.user_id == "u1"


def test_user_channel_requires_matching_sign_in(app, peer, hub):
    p = peer(app)
    p.send("pusher:subscribe", {"channel": "#server-to-user-u1", "auth": ""})
    assert p.received()[0]["data"] == {
        "type": "AuthError",
        "error": "Not signed in as user u1",
        "status": 401,
    }
    signin(p, {"id": "u1"})
    other = peer(app)
    signin(other, {"id": "u1"})
    p.send("pusher:subscribe", {"channel": "#server-to-user-u1", "auth": ""})
    p.received(), other.received()
    # Delivered to every connection of the user, subscribed or not, once each.
    assert hub.publish(app, "#server-to-user-u1", "invoice", "{}") == 2
    assert events(p.received()) == ["invoice"] and events(other.received()) == ["invoice"]


def test_watchlist_initial_state_and_transitions(app, peer, hub):
    bob = peer(app)
    signin(bob, {"id": "bob"})
    alice = peer(app)
    signin(alice, {"id": "alice", "watchlist": ["bob", "carol"]})
    success, state = alice.received()
    assert success["event"] == "pusher:signin_success"
    assert state["event"] == "pusher_internal:watchlist_events"
    assert json.loads(state["data"]) == {
        "events": [
            {"name": "online", "user_ids": ["bob"]},
            {"name": "offline", "user_ids": ["carol"]},
        ]
    }
    carol = peer(app)
    signin(carol, {"id": "carol"})
    assert json.loads(alice.received()[0]["data"]) == {
        "events": [{"name": "online", "user_ids": ["carol"]}]
    }
    hub.remove_client(bob.client)
    assert json.loads(alice.received()[0]["data"]) == {
        "events": [{"name": "offline", "user_ids": ["bob"]}]
    }


def test_watchlist_over_limit(app, peer):
    p = peer(app)
    signin(p, {"id": "a", "watchlist": [f"w{i}" for i in range(150)]})
    received = p.received()
    assert received[0]["event"] == "pusher:signin_success"
    assert {
        "event": "pusher:error",
        "data": {
            "code": 4302,
            "message": "Watchlist limit exceeded. Only the first 100 user IDs are accepted.",
        },
    } in received
    assert len(p.client.watchlist) == 100


def test_terminate_targets_signed_in_and_presence_users(app, peer, hub):
    signed, present, bystander = peer(app), peer(app), peer(app)
    signin(signed, {"id": "u1"})
    join_presence(present, "presence-room", "u1")
    join_presence(bystander, "presence-room", "u2")
    assert hub.terminate_user(app.id, "u1") == 2
    assert signed.terminated == [(4009, "You got disconnected by the app.")]
    assert present.terminated == [(4009, "You got disconnected by the app.")]
    assert bystander.terminated == []


# -- subscription counts (PROTOCOL.md §3.9) -------------------------------------------------


def test_subscription_count_when_enabled(app, peer, webhooks):
    counting = dataclasses.replace(app, subscription_count_enabled=True)
    a, b = peer(counting), peer(counting)
    a.send("pusher:subscribe", {"channel": "news"})
    assert a.received()[-1] == {
        "event": "pusher_internal:subscription_count",
        "channel": "news",
        "data": '{"subscription_count":1}',
    }
    b.send("pusher:subscribe", {"channel": "news"})
    assert json.loads(a.received()[-1]["data"]) == {"subscription_count": 2}
    join_presence(a, "presence-room", "u1")
    assert "pusher_internal:subscription_count" not in events(a.received())
    assert {"name": "subscription_count", "channel": "news", "subscription_count": 2} in webhooks


def test_subscription_count_throttled_on_busy_channels(app, peer, clock, timers):
    counting = dataclasses.replace(app, subscription_count_enabled=True)
    peers = [peer(counting) for _ in range(102)]
    for p in peers[:101]:
        p.send("pusher:subscribe", {"channel": "busy"})
        clock.now += 0.001
    peers[0].received()
    peers[101].send("pusher:subscribe", {"channel": "busy"})
    assert "pusher_internal:subscription_count" not in events(peers[0].received())
    assert len(timers) == 1  # one trailing update is scheduled
    timers[0][1]()
    assert json.loads(peers[0].received()[-1]["data"]) == {"subscription_count": 102}


def test_hub_is_empty_after_everyone_leaves(app, peer, hub):
    peers = [peer(app) for _ in range(3)]
    join_presence(peers[0], "presence-room", "u1")
    join_private(peers[1], "private-x")
    signin(peers[2], {"id": "u3", "watchlist": ["u1"]})
    for p in peers:
        hub.remove_client(p.client)
    assert hub.is_empty() and hub.total_connections() == 0 and hub.total_channels() == 0


def test_app_type_is_frozen(app: App):
    with pytest.raises(dataclasses.FrozenInstanceError):
        app.key = "x"  # type: ignore[misc]
