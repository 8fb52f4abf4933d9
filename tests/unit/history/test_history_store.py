"""Event history (RELAY_EXTRAS.md §4): record shape, what is recorded, query parsing, selection
and paging at the edges, and the three retention caps of the memory store."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from fastrelay.errors import RestError
from fastrelay.history import (
    HistoryRecord,
    HistoryStore,
    MemoryHistoryStore,
    parse_history_query,
    select_page,
    should_record,
)

EPOCH = 1_699_999_000_000
T0 = 1_700_000_000_000
APP = "app-id"
CH = "my-channel"


def make_store(**kwargs: Any) -> MemoryHistoryStore:
    return MemoryHistoryStore(epoch_ms=EPOCH, **kwargs)


def fill(
    store: MemoryHistoryStore, n: int, *, channel: str = CH, app: str = APP, t: int = T0
) -> list[int]:
    return [
        store.append(app, channel, "price", json.dumps({"v": i}), source="api", time_ms=t + i)
        for i in range(n)
    ]


def ids(body: dict[str, Any]) -> list[int]:
    return [event["id"] for event in body["events"]]


def q(
    store: MemoryHistoryStore,
    *,
    channel: str = CH,
    app: str = APP,
    limit: int = 50,
    before: int | None = None,
    after: int | None = None,
    now: int = T0 + 1_000,
) -> dict[str, Any]:
    return store.query(app, channel, limit=limit, before=before, after=after, now_ms=now)


# -- the record -----------------------------------------------------------------------------


def test_record_json_has_the_spec_shape_and_omits_absent_fields():
    record = HistoryRecord(41, "price", CH, '{"v":1}', 1700000001234, "api")
    assert record.to_json() == {
        "id": 41,
        "event": "price",
        "channel": CH,
        "data": '{"v":1}',
        "time_ms": 1700000001234,
        "source": "api",
    }
    assert list(record.to_json()) == ["id", "event", "channel", "data", "time_ms", "source"]
    client = HistoryRecord(1, "client-x", "presence-r", {"a": 1}, 5, "client", "1.2", "u-1")
    assert client.to_json()["socket_id"] == "1.2"
    assert client.to_json()["user_id"] == "u-1"
    assert client.to_json()["data"] == {"a": 1}


def test_record_is_frozen_and_slotted():
    record = HistoryRecord(1, "e", CH, "d", 1, "api")
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.id = 2  # type: ignore[misc]
    assert not hasattr(record, "__dict__")


def test_user_id_zero_is_not_omitted():
    assert HistoryRecord(1, "e", CH, "d", 1, "client", user_id=0).to_json()["user_id"] == 0


# -- what is recorded ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "event", "source", "client_events", "expected"),
    [
        ("my-channel", "price", "api", False, True),
        ("private-encrypted-x", "price", "api", False, True),
        ("presence-room", "client-typing", "client", False, False),
        ("presence-room", "client-typing", "client", True, True),
        ("#server-to-user-42", "note", "api", True, False),
        ("#server-to-user-42", "client-x", "client", True, False),
        ("my-channel", "pusher:subscribe", "api", True, False),
        ("my-channel", "pusher_internal:member_added", "api", True, False),
        ("my-channel", "pusher:cache_miss", "client", True, False),
        ("my-channel", "pusherish", "api", False, True),
    ],
)
def test_should_record(channel, event, source, client_events, expected):
    assert should_record(channel, event, source, client_events=client_events) is expected


def test_should_record_rejects_unknown_source():
    with pytest.raises(ValueError):
        should_record(CH, "e", "webhook", client_events=True)


# -- query parameters ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, (50, None, None)),
        ({"limit": "1"}, (1, None, None)),
        ({"limit": "100"}, (100, None, None)),
        ({"limit": "101"}, (100, None, None)),
        ({"limit": "99999999999999999999999"}, (100, None, None)),
        ({"limit": "007"}, (7, None, None)),
        ({"before": "42"}, (50, 42, None)),
        ({"after": "0"}, (50, None, 0)),
        ({"after": "-3", "before": "9", "limit": "10"}, (10, 9, -3)),
        ({"other": "x"}, (50, None, None)),
    ],
)
def test_parse_history_query(params, expected):
    assert parse_history_query(params) == expected


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "-1"},
        {"limit": "abc"},
        {"limit": "1.5"},
        {"limit": ""},
        {"limit": " 5"},
        {"limit": "+5"},
        {"limit": "1_0"},
        {"limit": "٣"},  # a non-ASCII digit that int() would accept
        {"before": "x"},
        {"before": ""},
        {"before": "4.0"},
        {"after": "1e3"},
        {"after": "0x10"},
        {"after": "9" * 5000},
    ],
)
def test_parse_history_query_rejects(params):
    with pytest.raises(RestError) as caught:
        parse_history_query(params)
    assert caught.value.status == 400
    assert next(iter(params)) in caught.value.message


# -- the store interface ------------------------------------------------------------------


def test_memory_store_is_a_history_store_with_epoch():
    store = make_store()
    assert isinstance(store, HistoryStore)
    assert store.epoch == EPOCH
    assert (store.max_events, store.max_age, store.max_channels) == (100, 3600, 10000)


def test_history_store_cannot_be_instantiated_without_methods():
    with pytest.raises(TypeError):
        HistoryStore()  # type: ignore[abstract]


@pytest.mark.parametrize(
    "kwargs", [{"max_events": 0}, {"max_age": 0}, {"max_age": -1}, {"max_channels": 0}]
)
def test_memory_store_rejects_bad_caps(kwargs):
    with pytest.raises(ValueError):
        make_store(**kwargs)


def test_append_rejects_unknown_source():
    with pytest.raises(ValueError):
        make_store().append(APP, CH, "e", "d", source="other", time_ms=T0)


def test_query_rejects_limit_below_one():
    with pytest.raises(ValueError):
        q(make_store(), limit=0)


# -- response shape -------------------------------------------------------------------------


def test_empty_channel_answers_200_shape_with_nulls():
    store = make_store()
    assert q(store) == {
        "channel": CH,
        "epoch": EPOCH,
        "events": [],
        "has_more": False,
        "oldest_id": None,
        "newest_id": None,
    }
    assert list(q(store)) == ["channel", "epoch", "events", "has_more", "oldest_id", "newest_id"]
    assert store.channel_count(APP) == 0  # a query never creates a channel


def test_recorded_fields_come_back_exactly():
    store = make_store()
    store.append(APP, CH, "price", '{"v":1}', source="api", time_ms=T0)
    store.append(APP, CH, "other", "x", source="api", time_ms=T0 + 1, socket_id="1.2")
    store.append(
        APP,
        CH,
        "client-x",
        {"raw": [1]},
        source="client",
        time_ms=T0 + 2,
        socket_id="3.4",
        user_id="u",
    )
    body = q(store)
    assert body["events"] == [
        {
            "id": 1,
            "event": "price",
            "channel": CH,
            "data": '{"v":1}',
            "time_ms": T0,
            "source": "api",
        },
        {
            "id": 2,
            "event": "other",
            "channel": CH,
            "data": "x",
            "time_ms": T0 + 1,
            "source": "api",
            "socket_id": "1.2",
        },
        {
            "id": 3,
            "event": "client-x",
            "channel": CH,
            "data": {"raw": [1]},
            "time_ms": T0 + 2,
            "source": "client",
            "socket_id": "3.4",
            "user_id": "u",
        },
    ]
    assert (body["oldest_id"], body["newest_id"], body["has_more"]) == (1, 3, False)


def test_ids_are_per_app_and_channel_and_strictly_increase():
    store = make_store()
    assert fill(store, 3) == [1, 2, 3]
    assert fill(store, 2, channel="other") == [1, 2]
    assert fill(store, 2, app="app-2") == [1, 2]
    assert fill(store, 1) == [4]


# -- selection and paging -----------------------------------------------------------------


def test_exactly_limit_records_has_no_more():
    store = make_store()
    fill(store, 10)
    body = q(store, limit=10)
    assert ids(body) == list(range(1, 11))
    assert body["has_more"] is False
    assert (body["oldest_id"], body["newest_id"]) == (1, 10)


def test_limit_plus_one_returns_the_newest_and_has_more():
    store = make_store()
    fill(store, 11)
    body = q(store, limit=10)
    assert ids(body) == list(range(2, 12))
    assert body["has_more"] is True
    assert (body["oldest_id"], body["newest_id"]) == (1, 11)


def test_before_only_pages_backward():
    store = make_store()
    fill(store, 20)
    body = q(store, limit=5, before=12)
    assert ids(body) == [7, 8, 9, 10, 11]
    assert body["has_more"] is True
    body = q(store, limit=5, before=6)
    assert ids(body) == [1, 2, 3, 4, 5]
    assert body["has_more"] is False
    assert ids(q(store, before=1)) == []
    assert q(store, before=1)["has_more"] is False
    assert (q(store, before=1)["oldest_id"], q(store, before=1)["newest_id"]) == (1, 20)


def test_after_only_pages_forward_from_the_oldest():
    store = make_store()
    fill(store, 20)
    body = q(store, limit=5, after=3)
    assert ids(body) == [4, 5, 6, 7, 8]
    assert body["has_more"] is True
    body = q(store, limit=5, after=15)
    assert ids(body) == [16, 17, 18, 19, 20]
    assert body["has_more"] is False
    assert ids(q(store, after=20)) == []
    assert ids(q(store, limit=3, after=-5)) == [1, 2, 3]
    assert ids(q(store, limit=3, after=0)) == [1, 2, 3]


def test_before_and_after_take_the_newest_of_the_window():
    store = make_store()
    fill(store, 20)
    body = q(store, limit=3, after=5, before=12)
    assert ids(body) == [9, 10, 11]
    assert body["has_more"] is True
    body = q(store, limit=6, after=5, before=12)
    assert ids(body) == [6, 7, 8, 9, 10, 11]
    assert body["has_more"] is False
    assert ids(q(store, after=5, before=6)) == []
    assert ids(q(store, after=9, before=3)) == []


def test_bounds_beyond_what_is_retained():
    store = make_store()
    fill(store, 5)
    assert ids(q(store, before=1000)) == [1, 2, 3, 4, 5]
    assert ids(q(store, after=1000)) == []
    assert q(store, after=1000)["newest_id"] == 5


@pytest.mark.parametrize(("total", "limit"), [(1, 1), (7, 1), (10, 5), (23, 5), (100, 100)])
def test_walking_every_page_backward_and_forward_sees_each_record_once(total, limit):
    store = make_store()
    fill(store, total)
    backward: list[int] = []
    body = q(store, limit=limit)
    pages = 1
    while True:
        assert 0 < len(body["events"]) <= limit
        assert ids(body) == sorted(ids(body))
        backward = ids(body) + backward
        if not body["has_more"]:
            break
        body = q(store, limit=limit, before=body["events"][0]["id"])
        pages += 1
    assert backward == list(range(1, total + 1))
    assert pages == -(-total // limit)

    forward: list[int] = []
    body = q(store, limit=limit, after=0)
    while True:
        forward += ids(body)
        if not body["has_more"]:
            break
        body = q(store, limit=limit, after=body["events"][-1]["id"])
    assert forward == list(range(1, total + 1))


def test_polling_forward_sees_new_records_once():
    store = make_store()
    fill(store, 3)
    seen = ids(q(store, after=0))
    fill(store, 2, t=T0 + 10)
    seen += ids(q(store, after=seen[-1]))
    assert ids(q(store, after=seen[-1])) == []
    assert seen == [1, 2, 3, 4, 5]


def test_select_page_directly():
    records = [HistoryRecord(i, "e", CH, "d", i, "api") for i in (2, 5, 9, 14)]
    page, more = select_page(records, limit=2, before=None, after=None)
    assert ([r.id for r in page], more) == ([9, 14], True)
    page, more = select_page(records, limit=2, before=None, after=2)
    assert ([r.id for r in page], more) == ([5, 9], True)
    page, more = select_page(records, limit=5, before=9, after=1)
    assert ([r.id for r in page], more) == ([2, 5], False)
    assert select_page([], limit=1, before=None, after=None) == ([], False)
    with pytest.raises(ValueError):
        select_page(records, limit=0, before=None, after=None)


# -- retention: count ------------------------------------------------------------------------


def test_count_cap_drops_the_oldest_and_ids_keep_going():
    store = make_store(max_events=5)
    fill(store, 12)
    body = q(store)
    assert ids(body) == [8, 9, 10, 11, 12]
    assert (body["oldest_id"], body["newest_id"]) == (8, 12)
    assert ids(q(store, before=8)) == []
    assert ids(q(store, limit=2, after=0)) == [8, 9]
    assert q(store, limit=2, after=0)["has_more"] is True


# -- retention: age --------------------------------------------------------------------------


def test_records_expire_as_now_advances():
    store = make_store(max_age=10)  # 10 000 ms
    for i in range(5):
        store.append(APP, CH, "e", str(i), source="api", time_ms=T0 + i * 1000)
    assert ids(q(store, now=T0 + 9_999)) == [1, 2, 3, 4, 5]
    body = q(store, now=T0 + 10_000)  # record 1 is exactly max_age old: gone
    assert ids(body) == [2, 3, 4, 5]
    assert body["oldest_id"] == 2
    assert ids(q(store, now=T0 + 13_500)) == [5]
    body = q(store, now=T0 + 14_000)
    assert body["events"] == []
    assert (body["oldest_id"], body["newest_id"], body["has_more"]) == (None, None, False)
    assert store.channel_count(APP) == 0  # reclaimed


def test_expired_records_are_invisible_before_they_are_reclaimed():
    store = make_store(max_age=1)
    store.append(APP, CH, "e", "old", source="api", time_ms=T0)
    store.append(APP, CH, "e", "new", source="api", time_ms=T0 + 900)
    body = q(store, now=T0 + 1_500)
    assert ids(body) == [2]
    assert body["has_more"] is False
    assert (body["oldest_id"], body["newest_id"]) == (2, 2)


def test_expired_heads_are_reclaimed_on_append():
    store = make_store(max_age=1, max_events=10)
    fill(store, 3)
    store.append(APP, CH, "e", "x", source="api", time_ms=T0 + 5_000)
    # Internal check of the lazy reclaim: only the live record is still held.
    assert len(store._apps[APP].channels[CH].records) == 1
    assert ids(q(store, now=T0 + 5_000)) == [4]


def test_idle_expired_channels_are_reclaimed_by_later_appends():
    store = make_store(max_age=1)
    for name in ("a", "b", "c"):
        fill(store, 2, channel=name)
    assert store.channel_count(APP) == 3
    fill(store, 1, channel="d", t=T0 + 60_000)
    assert store.channel_count(APP) == 1
    assert fill(store, 1, channel="a", t=T0 + 60_001) == [3]  # the id survives reclamation


def test_clock_going_backwards_never_hides_a_live_record():
    store = make_store(max_age=10)
    store.append(APP, CH, "e", "late", source="api", time_ms=T0 + 5_000)
    store.append(APP, CH, "e", "early", source="api", time_ms=T0)
    body = q(store, now=T0 + 12_000)
    assert ids(body) == [1]
    store.append(APP, "other", "e", "x", source="api", time_ms=T0 + 12_000)  # sweeps
    assert ids(q(store, now=T0 + 12_000)) == [1]


# -- retention: channels ---------------------------------------------------------------------


def test_channel_cap_drops_the_least_recently_written_channel():
    store = make_store(max_channels=3)
    for name in ("a", "b", "c"):
        fill(store, 2, channel=name)
    fill(store, 1, channel="a")  # a is now the most recently written
    q(store, channel="b")  # reading does not refresh
    fill(store, 1, channel="d")
    assert store.channel_count(APP) == 3
    assert ids(q(store, channel="b")) == []
    assert ids(q(store, channel="a")) == [1, 2, 3]
    assert ids(q(store, channel="c")) == [1, 2]
    assert ids(q(store, channel="d")) == [1]


def test_channel_cap_is_per_app():
    store = make_store(max_channels=1)
    fill(store, 1, channel="a", app="one")
    fill(store, 1, channel="b", app="two")
    assert ids(q(store, channel="a", app="one")) == [1]
    assert ids(q(store, channel="b", app="two")) == [1]
    assert q(store, channel="a", app="two")["events"] == []


def test_an_evicted_channel_continues_its_ids_when_it_comes_back():
    store = make_store(max_channels=2)
    assert fill(store, 3, channel="a") == [1, 2, 3]
    fill(store, 1, channel="b")
    fill(store, 1, channel="c")  # evicts a
    assert q(store, channel="a")["newest_id"] is None
    assert fill(store, 2, channel="a") == [4, 5]  # evicts b
    assert fill(store, 1, channel="b") == [2]
    body = q(store, channel="a", after=3)
    assert ids(body) == [4, 5]
    assert body["oldest_id"] == 4


def test_ids_are_never_reused_even_beyond_the_retired_bound():
    store = make_store(max_channels=1)
    bound = MemoryHistoryStore.RETIRED_PER_CHANNEL * 1
    assert fill(store, 5, channel="first") == [1, 2, 3, 4, 5]
    # Retire enough other channels that "first" is forgotten (its last id goes into the floor).
    created = [fill(store, 1, channel=f"c{i}")[0] for i in range(bound + 1)]
    assert len(store._apps[APP].retired) == bound
    assert "first" not in store._apps[APP].retired
    assert created[:bound] == [1] * bound
    assert created[bound] == 6  # past the bound, a channel with no remembered id starts above it
    (again,) = fill(store, 1, channel="first")
    assert again == 6  # above every id "first" ever had, so no cursor can see a reused id
    # A remembered channel continues exactly where it stopped.
    assert fill(store, 1, channel="c9") == [2]
    assert fill(store, 1, channel=f"c{bound}") == [7]


def test_every_channel_id_sequence_strictly_increases_under_churn():
    store = make_store(max_channels=3, max_events=4, max_age=5)
    last: dict[str, int] = {}
    t = T0
    for step in range(2_000):
        name = f"ch{(step * 7919) % 11}"
        t += (step % 7) ** 4  # irregular gaps (0 to 1.3 s), some long enough to expire records
        new_id = store.append(APP, name, "e", str(step), source="api", time_ms=t)
        assert new_id > last.get(name, 0)
        last[name] = new_id
        body = store.query(APP, name, limit=100, before=None, after=None, now_ms=t)
        assert ids(body) == sorted(set(ids(body)))
        assert body["newest_id"] == new_id
        assert len(body["events"]) <= 4
    assert store.channel_count(APP) <= 3
    assert len(store._apps[APP].retired) <= 30
