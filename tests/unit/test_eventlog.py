"""The server event log (RELAY_EXTRAS.md §5): ring buffer, filters, polling, errors, secrets."""

from __future__ import annotations

from typing import Any

import pytest

from fastrelay.errors import RestError
from fastrelay.eventlog import ENTRY_FIELDS, FORBIDDEN_FIELDS, MAX_LIMIT, EventLog

APP = "app-id"
T0 = 1_700_000_000_000


def ids(body: dict[str, Any]) -> list[int]:
    return [entry["id"] for entry in body["events"]]


def filled(n: int, size: int = 1000) -> EventLog:
    log = EventLog(size)
    for i in range(n):
        log.record(APP, "subscribed", T0 + i, socket_id=f"1.{i}", channel=f"ch-{i % 3}")
    return log


def test_entry_shape_matches_the_spec_example():
    log = EventLog()
    log.record(
        APP,
        "subscribed",
        1700000001234,
        socket_id="123.456",
        channel="presence-room",
        user_id="user-1",
    )
    assert log.query(APP, {}) == {
        "events": [
            {
                "id": 1,
                "time_ms": 1700000001234,
                "type": "subscribed",
                "socket_id": "123.456",
                "channel": "presence-room",
                "user_id": "user-1",
            }
        ],
        "has_more": False,
        "oldest_id": 1,
        "newest_id": 1,
    }
    assert list(log.query(APP, {})) == ["events", "has_more", "oldest_id", "newest_id"]
    assert list(log.query(APP, {})["events"][0])[:3] == ["id", "time_ms", "type"]


def test_none_fields_are_dropped_and_falsy_values_kept():
    log = EventLog()
    log.record(APP, "subscribed", T0, socket_id="1.1", channel="c", user_id=None)
    log.record(APP, "disconnected", T0, socket_id="1.1", code=0, reason="", duration_ms=0)
    first, second = log.query(APP, {})["events"]
    assert "user_id" not in first
    assert second == {
        "id": 2,
        "time_ms": T0,
        "type": "disconnected",
        "socket_id": "1.1",
        "code": 0,
        "reason": "",
        "duration_ms": 0,
    }


def test_empty_log_answers_nulls():
    log = EventLog()
    assert log.query(APP, {}) == {
        "events": [],
        "has_more": False,
        "oldest_id": None,
        "newest_id": None,
    }
    assert log.query(APP, {"after": "5", "type": "x"})["events"] == []


def test_ring_wraps_oldest_overwritten_and_ids_keep_increasing():
    log = filled(13, size=5)
    body = log.query(APP, {})
    assert ids(body) == [9, 10, 11, 12, 13]
    assert (body["oldest_id"], body["newest_id"], body["has_more"]) == (9, 13, False)
    log.record(APP, "member_added", T0, channel="p", user_id="u")
    body = log.query(APP, {})
    assert ids(body) == [10, 11, 12, 13, 14]
    assert body["events"][-1]["type"] == "member_added"


def test_default_limit_is_100_newest():
    body = filled(150).query(APP, {})
    assert ids(body) == list(range(51, 151))
    assert body["has_more"] is True
    assert (body["oldest_id"], body["newest_id"]) == (1, 150)


def test_limit_is_clamped_to_1000():
    log = filled(1500, size=2000)
    body = log.query(APP, {"limit": "5000"})
    assert len(body["events"]) == MAX_LIMIT == 1000
    assert ids(body) == list(range(501, 1501))
    assert body["has_more"] is True
    assert len(log.query(APP, {"limit": "1000"})["events"]) == 1000


def test_limit_exactly_matching_and_one_more():
    log = filled(10)
    assert log.query(APP, {"limit": "10"})["has_more"] is False
    body = log.query(APP, {"limit": "9"})
    assert ids(body) == list(range(2, 11))
    assert body["has_more"] is True


def test_after_polls_oldest_first():
    log = filled(10)
    body = log.query(APP, {"after": "3", "limit": "4"})
    assert ids(body) == [4, 5, 6, 7]
    assert body["has_more"] is True
    body = log.query(APP, {"after": "7", "limit": "4"})
    assert ids(body) == [8, 9, 10]
    assert body["has_more"] is False
    assert log.query(APP, {"after": "10"})["events"] == []
    assert log.query(APP, {"after": "99"})["events"] == []
    assert ids(log.query(APP, {"after": "-1", "limit": "2"})) == [1, 2]


def test_after_older_than_the_buffer_starts_at_the_oldest_kept():
    log = filled(20, size=5)
    body = log.query(APP, {"after": "2", "limit": "2"})
    assert ids(body) == [16, 17]
    assert body["has_more"] is True


def test_polling_loop_sees_every_entry_once():
    log = EventLog(50)
    seen: list[int] = []
    cursor = 0
    for batch in range(10):
        for _ in range(batch + 3):
            log.record(APP, "api_publish", T0, event="e", channels=["c"], data_size=1)
        while True:
            body = log.query(APP, {"after": str(cursor), "limit": "4"})
            seen += ids(body)
            if body["events"]:
                cursor = body["events"][-1]["id"]
            if not body["has_more"]:
                break
    assert seen == list(range(1, sum(b + 3 for b in range(10)) + 1))


def test_type_filter_takes_a_comma_list():
    log = EventLog()
    for type_ in ("subscribed", "unsubscribed", "client_event", "subscribed", "disconnected"):
        log.record(APP, type_, T0, socket_id="1.1")
    assert ids(log.query(APP, {"type": "subscribed"})) == [1, 4]
    assert ids(log.query(APP, {"type": "subscribed,disconnected"})) == [1, 4, 5]
    assert ids(log.query(APP, {"type": " unsubscribed , client_event ,"})) == [2, 3]
    assert ids(log.query(APP, {"type": "nope"})) == []
    assert ids(log.query(APP, {"type": ""})) == [1, 2, 3, 4, 5]  # empty = no filter


def test_channel_filter_matches_exactly_and_inside_api_publish_channels():
    log = EventLog()
    log.record(APP, "subscribed", T0, socket_id="1.1", channel="room")
    log.record(APP, "subscribed", T0, socket_id="1.1", channel="room-2")
    log.record(APP, "api_publish", T0, event="e", channels=["a", "room"], data_size=3)
    log.record(APP, "api_publish", T0, event="e", channels=["a"], data_size=3)
    log.record(APP, "webhook_sent", T0, url="http://x", status=200, attempt=1, events=["room"])
    log.record(APP, "disconnected", T0, socket_id="1.1", code=4009)
    assert ids(log.query(APP, {"channel": "room"})) == [1, 3]
    assert ids(log.query(APP, {"channel": "a"})) == [3, 4]
    assert ids(log.query(APP, {"channel": "roo"})) == []


def test_socket_id_filter_is_exact():
    log = EventLog()
    log.record(APP, "connection_established", T0, socket_id="1.1", client="js")
    log.record(APP, "connection_established", T0, socket_id="1.11", client="js")
    log.record(APP, "api_publish", T0, event="e", channels=["c"], excluded_socket_id="1.1")
    assert ids(log.query(APP, {"socket_id": "1.1"})) == [1]


def test_user_id_filter_compares_string_forms():
    log = EventLog()
    log.record(APP, "member_added", T0, channel="presence-r", user_id=42)
    log.record(APP, "member_added", T0, channel="presence-r", user_id="42")
    log.record(APP, "member_added", T0, channel="presence-r", user_id="420")
    log.record(APP, "subscribed", T0, channel="presence-r", socket_id="1.1")
    assert ids(log.query(APP, {"user_id": "42"})) == [1, 2]
    assert log.query(APP, {"user_id": "42"})["events"][0]["user_id"] == 42


def test_filters_combine_and_limit_applies_after_filtering():
    log = EventLog()
    for i in range(30):
        log.record(
            APP, "subscribed" if i % 2 else "unsubscribed", T0, socket_id=f"1.{i % 4}", channel="c"
        )
    query = {"type": "subscribed", "socket_id": "1.1", "channel": "c"}
    matching = [i + 1 for i in range(30) if i % 2 and i % 4 == 1]
    body = log.query(APP, {**query, "limit": "3"})
    assert ids(body) == matching[-3:]
    assert body["has_more"] is True
    assert (body["oldest_id"], body["newest_id"]) == (1, 30)  # the whole buffer, not the matches
    body = log.query(APP, {**query, "limit": "3", "after": "0"})
    assert ids(body) == matching[:3]
    assert body["has_more"] is True
    body = log.query(APP, {**query, "after": str(matching[-2])})
    assert (ids(body), body["has_more"]) == ([matching[-1]], False)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "-5"},
        {"limit": "ten"},
        {"limit": "2.5"},
        {"limit": ""},
        {"limit": "+3"},
        {"after": "x"},
        {"after": ""},
        {"after": "1.0"},
        {"after": "9" * 5000},
    ],
)
def test_bad_params_are_400(params):
    with pytest.raises(RestError) as caught:
        filled(3).query(APP, params)
    assert caught.value.status == 400
    assert next(iter(params)) in caught.value.message


def test_disabled_log_is_404_and_keeps_nothing():
    log = EventLog(enabled=False)
    assert log.enabled is False
    log.record(APP, "subscribed", T0, socket_id="1.1")
    with pytest.raises(RestError) as caught:
        log.query(APP, {"limit": "bad"})
    assert (caught.value.status, caught.value.message) == (404, "Event log is disabled")
    assert log._apps == {}


# ``time_ms`` is a parameter of record() itself, so Python already refuses it as a field.
@pytest.mark.parametrize("name", sorted(FORBIDDEN_FIELDS | {"id", "type"}))
@pytest.mark.parametrize("enabled", [True, False])
def test_secret_and_reserved_field_names_are_refused(name, enabled):
    log = EventLog(enabled=enabled)
    with pytest.raises(ValueError, match=name):
        log.record(APP, "client_event", T0, socket_id="1.1", **{name: "x"})
    if enabled:
        assert log.query(APP, {})["events"] == []


def test_the_named_secrets_are_all_forbidden():
    required = {"auth", "secret", "signature", "auth_signature", "channel_data", "user_data"}
    assert required | {"data"} <= FORBIDDEN_FIELDS
    # No documented field is forbidden.
    assert not FORBIDDEN_FIELDS & set().union(*ENTRY_FIELDS.values())


def test_every_spec_type_is_documented():
    assert set(ENTRY_FIELDS) == {
        "connection_established",
        "connection_refused",
        "disconnected",
        "subscribed",
        "unsubscribed",
        "subscription_failed",
        "member_added",
        "member_removed",
        "client_event",
        "client_event_rejected",
        "api_publish",
        "api_rejected",
        "signin",
        "signin_failed",
        "error_sent",
        "terminated",
        "webhook_sent",
        "webhook_failed",
    }
    assert ENTRY_FIELDS["api_publish"] == {
        "event",
        "channels",
        "data_size",
        "excluded_socket_id",
        "endpoint",
    }


def test_apps_are_isolated():
    log = EventLog(size=3)
    for _ in range(5):
        log.record("one", "subscribed", T0, socket_id="1.1", channel="c")
    log.record("two", "subscribed", T0, socket_id="2.2", channel="c")
    assert ids(log.query("one", {})) == [3, 4, 5]
    body = log.query("two", {})
    assert ids(body) == [1]
    assert body["events"][0]["socket_id"] == "2.2"
    assert log.query("three", {})["oldest_id"] is None


def test_lists_are_snapshotted_and_returned_as_lists():
    log = EventLog()
    channels = ["a", "b"]
    log.record(APP, "api_publish", T0, event="e", channels=channels, data_size=2)
    channels.append("c")
    entry = log.query(APP, {})["events"][0]
    assert entry["channels"] == ["a", "b"]
    entry["channels"].append("mutated")
    assert log.query(APP, {})["events"][0]["channels"] == ["a", "b"]


def test_size_must_be_positive():
    with pytest.raises(ValueError):
        EventLog(0)
    assert EventLog(7).size == 7
