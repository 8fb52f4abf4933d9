"""Pysher (the Python WebSocket client, PyPI ``Pysher`` 1.0.x) against a real fastrelay.

Pysher is old and strict (PROTOCOL.md §14): it connects with ``protocol=6``, ``json.loads`` the
``connection_established`` data (a string), reads ``pusher:error`` data as an object with
``code``, disconnects for good on any 4000–4099 error and reconnects on 4100–4299, pings with
``data: ""`` right after opening, subscribes public channels without ``auth`` and signs presence
``channel_data`` from ``json.dumps`` (with spaces). Its callbacks run on its own thread; every
wait here is on a recorded event, with a deadline.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pusher
import pytest

from conftest import APP_ID, APP_KEY, APP_SECRET, TIMEOUT, ServerProcess

pysher = pytest.importorskip("pysher", reason="Pysher is not installed: pip install Pysher")

Entry = tuple[str, str | None, Any, str]  # (event, channel or None, data, source)
WIRE = "wire"


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


class Pysher:
    """A Pysher client whose every connection and channel callback is recorded in order."""

    def __init__(
        self,
        port: int,
        *,
        user_data: dict[str, Any] | None = None,
        auto_sub: bool = False,
        reconnect_interval: float = 10,
    ) -> None:
        self.log: list[Entry] = []
        self._changed = threading.Condition()
        self.client = pysher.Pusher(
            key=APP_KEY,
            secret=APP_SECRET,
            custom_host="127.0.0.1",
            port=port,
            secure=False,
            user_data=user_data,
            auto_sub=auto_sub,
            reconnect_interval=reconnect_interval,
            log_level=logging.WARNING,
        )
        connection = self.client.connection
        for event in ("pusher:connection_established", "pusher:error", "pusher:pong"):
            connection.bind(event, self._recorder(event, None))
        # Pysher sends pusher:subscribe before it creates the Channel (and a caller can only bind
        # after subscribe() returns), so a fast subscription_succeeded can beat every channel
        # callback. Channel messages are therefore also recorded as they leave the connection.
        deliver = connection.event_handler

        def on_channel_message(event: str, data: Any, channel: str) -> None:
            self._recorder(event, channel, WIRE)(data)
            deliver(event, data, channel)

        connection.event_handler = on_channel_message

    def _recorder(self, event: str, channel: str | None, source: str = "") -> Callable[[Any], None]:
        def record(data: Any) -> None:
            with self._changed:
                self.log.append((event, channel, data, source))
                self._changed.notify_all()

        return record

    def wait_for(
        self, event: str, channel: str | None = None, *, after: int = 0, source: str = ""
    ) -> Any:
        """Data of the first ``event`` (on ``channel``) recorded at index ``after`` or later.

        ``source`` "" means what Pysher's callbacks received; WIRE, what its connection read.
        """
        deadline = time.monotonic() + TIMEOUT
        with self._changed:
            while True:
                for logged, where, data, came in self.log[after:]:
                    if (logged, where, came) == (event, channel, source):
                        return data
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"Pysher never got {event} on {channel}: {self.log}")
                self._changed.wait(remaining)

    def connect(self) -> str:
        """Connect; return the socket id from ``connection_established``."""
        mark = len(self.log)
        self.client.connect()
        data = self.wait_for("pusher:connection_established", after=mark)
        assert isinstance(data, str), data  # Pysher json.loads it: it must be a string
        return json.loads(data)["socket_id"]

    def subscribe(self, name: str, *events: str, auth: str | None = None) -> Any:
        """Subscribe, recording ``events`` on the channel; return the succeeded data."""
        channel = self.client.subscribe(name, auth=auth)
        for event in events:
            channel.bind(event, self._recorder(event, name))
        return channel

    def subscribed(self, name: str, *, after: int = 0) -> Any:
        """Data of the channel's pusher_internal:subscription_succeeded."""
        return self.wait_for(
            "pusher_internal:subscription_succeeded", name, after=after, source=WIRE
        )

    def events(self, event: str, channel: str | None = None) -> list[Any]:
        with self._changed:
            return [
                data
                for logged, where, data, source in self.log
                if (logged, where, source) == (event, channel, "")
            ]

    def close(self) -> None:
        # Not joined: after a client-side close, websocket-client's dispatcher sits in select()
        # for Pysher's ping_timeout (100 s) on a descriptor that is already closed.
        self.client.disconnect(timeout=0)


@pytest.fixture
def pyshers() -> Iterator[Callable[..., Pysher]]:
    made: list[Pysher] = []

    def make(port: int, **kwargs: Any) -> Pysher:
        made.append(Pysher(port, **kwargs))
        return made[-1]

    yield make
    for client in made:
        client.close()


def sdk_for(port: int) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host="127.0.0.1", port=port, ssl=False
    )


# -- connection --------------------------------------------------------------------------------


def test_pysher_connects_with_protocol_6_and_gets_pong(
    server: ServerProcess, pyshers: Callable[..., Pysher]
) -> None:
    client = pyshers(server.port)
    assert "protocol=6" in client.client.url
    socket_id = client.connect()
    assert socket_id.count(".") == 1
    # Pysher pings with data "" as soon as the socket opens; the pong must come back.
    assert client.wait_for("pusher:pong") == {}
    assert client.client.connection.state == "connected"
    assert client.events("pusher:error") == []


# -- channels ----------------------------------------------------------------------------------


def test_pysher_public_private_presence_and_client_events(
    server: ServerProcess, pyshers: Callable[..., Pysher]
) -> None:
    sdk = sdk_for(server.port)
    public = unique("pysher-public-")
    private = unique("private-pysher-")
    external = unique("private-pysher-external-")
    presence = unique("presence-pysher-")
    user = {"user_id": "py-1", "user_info": {"name": "Pysher ✓", "n": 1}}
    other = {"user_id": "py-2", "user_info": {"name": "Other"}}

    alice = pyshers(server.port, user_data=user)
    socket_id = alice.connect()
    # Public: no auth sent. Private: Pysher signs with the secret itself; or a token the Python
    # SDK made (an app server's /auth). Presence: channel_data from json.dumps, with spaces.
    alice.subscribe(public, "news")
    alice.subscribe(private, "news", "client-reply")
    alice.subscribe(external, "news", auth=sdk.authenticate(external, socket_id)["auth"])
    alice_presence = alice.subscribe(presence, "news", "pusher_internal:member_added")
    for name in (public, private, external):
        assert alice.subscribed(name) == "{}"
    succeeded = json.loads(alice.subscribed(presence))
    assert succeeded["presence"] == {
        "count": 1,
        "ids": ["py-1"],
        "hash": {"py-1": user["user_info"]},
    }

    bob = pyshers(server.port, user_data=other)
    bob.connect()
    bob_private = bob.subscribe(private, "client-hello")
    bob.subscribe(presence, "client-hello")
    bob.subscribed(private)
    bob.subscribed(presence)
    added = json.loads(alice.wait_for("pusher_internal:member_added", presence))
    assert added == other
    info = sdk.users_info(presence)
    assert sorted(member["id"] for member in info["users"]) == ["py-1", "py-2"]

    # Events published with the Python SDK reach every channel; data arrives as the JSON text.
    payload = {"msg": "héllo", "n": [1, 2]}
    assert sdk.trigger([public, private, external, presence], "news", payload) == {}
    for name in (public, private, external, presence):
        assert json.loads(alice.wait_for("news", name)) == payload

    # Client events both ways (Pysher only sends them on private-/presence- channels).
    alice_presence.trigger("client-hello", {"from": "alice"})
    assert bob.wait_for("client-hello", presence) == {"from": "alice"}
    bob_private.trigger("client-reply", {"from": "bob"})
    assert alice.wait_for("client-reply", private) == {"from": "bob"}
    assert alice.events("pusher:error") == []
    assert bob.events("pusher:error") == []


# -- errors ------------------------------------------------------------------------------------


def test_pysher_survives_non_fatal_errors(
    server: ServerProcess, pyshers: Callable[..., Pysher]
) -> None:
    sdk = sdk_for(server.port)
    public = unique("pysher-errors-")
    forged = unique("private-pysher-forged-")
    client = pyshers(server.port)
    socket_id = client.connect()
    client.subscribe(public, "after")
    client.subscribed(public)

    # 1. A bad signature: subscription_error on the channel and a Pusher-style pusher:error
    #    whose code is null — never a 4000-4099 code, which would make Pysher disconnect.
    client.subscribe(forged, auth=f"{APP_KEY}:{'0' * 64}")
    sub_error = client.wait_for("pusher:subscription_error", forged, source=WIRE)
    assert sub_error["type"] == "AuthError"
    assert sub_error["status"] == 401
    first = client.wait_for("pusher:error")
    assert isinstance(first, dict), first  # Pysher does `'code' in data` then data['code']
    assert first["code"] is None

    # 2. A client event on a public channel (Pysher's own trigger refuses; send it raw): 4301,
    #    outside 4000-4299. The error names the channel (pusher-js emits it there too), so
    #    Pysher hands it to the channel, not to its connection error handler.
    client.client.connection.send_event("client-nope", {"x": 1}, channel_name=public)
    second = client.wait_for("pusher:error", public, source=WIRE)
    assert second == {
        "code": 4301,
        "message": "Client events are only allowed on private and presence channels.",
    }

    # Still the same connection, still subscribed: an event published now arrives.
    assert sdk.trigger(public, "after", {"ok": True}) == {}
    assert json.loads(client.wait_for("after", public)) == {"ok": True}
    assert client.client.connection.state == "connected"
    assert client.client.connection.socket_id == socket_id
    assert [error["code"] for error in client.events("pusher:error")] == [None]


# -- restart -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_pysher_reconnects_after_server_restart(
    make_server: Callable[..., ServerProcess], pyshers: Callable[..., Pysher]
) -> None:
    port = free_port()
    first = make_server({}, ["--port", str(port)])
    assert first.port == port
    public = unique("pysher-restart-")
    client = pyshers(port, auto_sub=True, reconnect_interval=0.2)
    old_socket_id = client.connect()
    client.subscribe(public, "after-restart")
    client.subscribed(public)

    # SIGTERM: the server sends pusher:error 4200 ("reconnect now") and closes; Pysher retries.
    mark = len(client.log)
    assert first.stop() == 0
    assert client.wait_for("pusher:error", after=mark)["code"] == 4200
    second = make_server({}, ["--port", str(port)])
    assert second.port == port
    established = client.wait_for("pusher:connection_established", after=mark)
    assert json.loads(established)["socket_id"] != old_socket_id
    # auto_sub: Pysher re-sends its subscriptions on the new connection.
    client.subscribed(public, after=mark)
    assert sdk_for(port).trigger(public, "after-restart", {"n": 2}) == {}
    assert json.loads(client.wait_for("after-restart", public, after=mark)) == {"n": 2}
