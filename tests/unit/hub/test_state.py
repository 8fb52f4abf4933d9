"""The hub's per-connection record: its channel names stay a tuple while few, a set beyond."""

from __future__ import annotations

from fastrelay.config import DEFAULT_APP
from fastrelay.hub.state import SMALL_CHANNELS, Client


def _client() -> Client:
    return Client(DEFAULT_APP, "1.1", None, lambda code, message: None)  # type: ignore[arg-type]


def test_a_new_client_has_no_channels_and_no_presence_ids() -> None:
    client = _client()
    assert client.channels == ()
    assert client.presence_ids is None


def test_few_channels_are_a_tuple_in_subscription_order() -> None:
    client = _client()
    for name in ("a", "b", "c"):
        client.add_channel(name)
    client.add_channel("b")  # already there: no duplicate
    assert client.channels == ("a", "b", "c")
    client.discard_channel("b")
    client.discard_channel("missing")
    assert client.channels == ("a", "c")
    assert "a" in client.channels and "b" not in client.channels


def test_many_channels_become_a_set_and_behave_the_same() -> None:
    client = _client()
    names = [f"ch-{i}" for i in range(SMALL_CHANNELS + 3)]
    for name in names:
        client.add_channel(name)
    assert isinstance(client.channels, set)
    assert sorted(client.channels) == sorted(names)
    client.add_channel(names[0])
    assert len(client.channels) == len(names)
    for name in names:
        client.discard_channel(name)
    assert len(client.channels) == 0
    client.discard_channel("missing")
