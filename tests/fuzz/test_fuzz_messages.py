"""Hostile input for the Pusher layer: the message decoder and a Session fed arbitrary messages.

- ``decode_client_message`` on arbitrary bytes and text, on JSON of every shape (wrong types,
  huge numbers, duplicate keys, lone surrogates, deep nesting, invalid UTF-8) returns one of
  the typed messages and never raises; what it returns can always be written back out (a
  client event's data inside its envelope, which is what the hub does with it).
- A :class:`Session` fed a sequence of such messages, mixed with correctly signed subscriptions
  and sign-ins whose payloads are arbitrary, raises nothing but ``PusherError``; everything
  written to it and to an observer on the same channels is a frame of valid JSON, and the
  history pages the HTTP API would serve stay serializable.

FASTRELAY_FUZZ_EXAMPLES=<n> runs n examples per test instead of the CI count.
"""

from __future__ import annotations

import json
import os
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastrelay.config import App
from fastrelay.errors import PusherError
from fastrelay.history import MemoryHistoryStore
from fastrelay.hub.fanout import Outlet
from fastrelay.hub.hub import Hub
from fastrelay.hub.state import Client
from fastrelay.protocol import auth
from fastrelay.protocol.session import Session
from fastrelay.wire import codec
from fastrelay.wire.frames import OP_TEXT, FrameParser

# A long run (FASTRELAY_FUZZ_EXAMPLES) takes what it takes: no per-test timeout then.
pytestmark = pytest.mark.timeout(0 if os.environ.get("FASTRELAY_FUZZ_EXAMPLES") else 120)

MESSAGE_TYPES = (
    codec.Ping,
    codec.Pong,
    codec.Subscribe,
    codec.Unsubscribe,
    codec.SignIn,
    codec.ClientEvent,
    codec.Unknown,
    codec.Invalid,
)


def examples(ci: int) -> int:
    """The CI count, or FASTRELAY_FUZZ_EXAMPLES for a longer run."""
    return int(os.environ.get("FASTRELAY_FUZZ_EXAMPLES") or ci)


def fuzz_settings(ci: int) -> settings:
    return settings(
        max_examples=examples(ci), deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


# --- JSON text of every shape, written here so it can be what no encoder would produce ------

ODD_NUMBERS = [
    "0",
    "-0",
    "1e400",
    "-1e400",
    "1e-400",
    "123456789012345678901234567890",
    "18446744073709551616",
    "-9223372036854775809",
    "1.5e308",
    "0.1",
    "01",
    "1.",
    ".5",
    "NaN",
    "Infinity",
    "-",
]
ODD_STRINGS = ['"\\ud800"', '"\\udfff\\ud800"', '"\\u0000"', '"a\\"b"', '"\\/"', '"', '"\\x"']
KEYS = ["event", "channel", "data", "user_id", "auth", "channel_data", "user_data", "id"]
EVENTS = [
    "pusher:subscribe",
    "pusher:unsubscribe",
    "pusher:signin",
    "pusher:ping",
    "pusher:pong",
    "pusher:unknown",
    "pusher_internal:member_added",
    "client-x",
    "client-",
    "other",
]
CHANNELS = [
    "public",
    "private-a",
    "presence-room",
    "private-encrypted-x",
    "cache-c",
    "private-cache-pc",
    "presence-cache-p",
    "#server-to-user-u1",
    "#server-to-user-",
    "",
    "bad name",
    "x" * 201,
    "é",
]

scalar_text = st.one_of(
    st.sampled_from(["null", "true", "false", *ODD_NUMBERS, *ODD_STRINGS]),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=20).map(json.dumps),
    st.sampled_from(EVENTS + CHANNELS).map(json.dumps),
)


def _object(items: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in items) + "}"


json_text = st.recursive(
    scalar_text,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.lists(
            st.tuples(st.one_of(st.sampled_from(KEYS), st.text(max_size=5)), inner), max_size=4
        ).map(_object),
        inner.map(json.dumps),  # JSON inside a string, as Pusher's data fields carry it
    ),
    max_leaves=12,
)


@st.composite
def deep(draw: Any) -> str:
    """Nesting around orjson's limits (1024 to read, 254 to write) and ours (128)."""
    depth = draw(st.sampled_from([127, 128, 129, 200, 253, 254, 255, 1023, 1024, 1025, 100_000]))
    opening = draw(st.sampled_from(["[", '{"a":']))
    closing = "]" if opening == "[" else "}"
    return opening * depth + draw(scalar_text) + closing * depth


@st.composite
def message_text(draw: Any) -> str:
    """A message-shaped object with fields of any type."""
    fields = [("event", draw(st.one_of(st.sampled_from(EVENTS).map(json.dumps), json_text)))]
    if draw(st.booleans()):
        fields.append(
            ("channel", draw(st.one_of(st.sampled_from(CHANNELS).map(json.dumps), json_text)))
        )
    if draw(st.booleans()):
        fields.append(("data", draw(st.one_of(json_text, deep()))))
    if draw(st.booleans()):
        fields.append((draw(st.sampled_from(KEYS)), draw(json_text)))
    draw(st.randoms()).shuffle(fields)
    return _object(fields)


@st.composite
def payloads(draw: Any) -> bytes | str:
    text = draw(st.one_of(message_text(), json_text, deep(), st.text(max_size=50)))
    how = draw(st.sampled_from(["bytes", "str", "bad-utf8", "random"]))
    if how == "str":
        return text
    if how == "random":
        return draw(st.binary(max_size=200))
    data = bytearray(text.encode("utf-8", "surrogatepass"))
    if how == "bad-utf8" and data:
        at = draw(st.integers(0, len(data) - 1))
        data[at:at] = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80"]))
    return bytes(data)


# --- the decoder -----------------------------------------------------------------------------


def check_decoded(payload: bytes | str) -> codec.Message:
    message = codec.decode_client_message(payload)
    assert isinstance(message, MESSAGE_TYPES), message
    if isinstance(message, codec.ClientEvent):
        assert isinstance(message.event, str) and message.event.startswith("client-")
        assert message.channel is None or isinstance(message.channel, str)
        # What the hub does with it: the envelope, the webhook's data string, a history page.
        envelope = codec.encode_client_event(message.event, "private-a", message.data, "u1", 7)
        assert orjson.loads(envelope)["data"] == message.data
        codec.json_dumps({"events": [{"data": message.data}]})
    elif isinstance(message, codec.Subscribe):
        assert isinstance(message.channel, str)
        assert message.auth is None or isinstance(message.auth, str)
        assert message.channel_data is None or isinstance(message.channel_data, str)
    elif isinstance(message, codec.SignIn):
        assert message.auth is None or isinstance(message.auth, str)
        assert message.user_data is None or isinstance(message.user_data, str)
    return message


@fuzz_settings(600)
@given(payload=payloads())
def test_decoder_always_answers_with_a_typed_message(payload):
    check_decoded(payload)


@fuzz_settings(300)
@given(payload=st.binary(max_size=300))
def test_decoder_on_random_bytes(payload):
    check_decoded(payload)


@pytest.mark.parametrize("depth", [1, 127, 128, 129, 254, 255, 1023, 1024, 1025, 100_000])
@pytest.mark.parametrize("opening", ["[", '{"k":'])
def test_decoder_depth_bound(depth, opening):
    closing = "]" if opening == "[" else "}"
    data = opening * depth + "1" + closing * depth
    message = check_decoded(f'{{"event":"client-x","channel":"private-a","data":{data}}}')
    # The envelope counts as one level: data may nest MAX_JSON_DEPTH - 1 deep.
    if depth < codec.MAX_JSON_DEPTH:
        assert isinstance(message, codec.ClientEvent)
    else:
        assert message == codec.Invalid("Invalid message format")


# --- a session -------------------------------------------------------------------------------


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_write_buffer_size(self) -> int:
        return 0


class Harness:
    """One hub, the fuzzed connection ``a`` and an observer ``b`` on the same channels."""

    def __init__(self, app: App, *, history: bool) -> None:
        self.now = 1000.0
        self.history = (
            MemoryHistoryStore(max_events=10, max_age=60, max_channels=10, epoch_ms=0)
            if history
            else None
        )
        self.webhooks: list[dict[str, Any]] = []
        self.hub = Hub(
            clock=lambda: self.now,
            call_later=lambda delay, callback: None,
            emit_webhook=lambda _app, event: self.webhooks.append(event),
            history=self.history,
            history_client_events=True,
            wall_clock_ms=lambda: int(self.now * 1000),
        )
        self.app = app
        self.terminated: list[tuple[int, str]] = []
        self.a, self.a_out = self._connect("1.1")
        self.b, self.b_out = self._connect("2.2")

    def _connect(self, socket_id: str) -> tuple[Session, Transport]:
        transport = Transport()
        outlet = Outlet(socket_id, transport, 1 << 30, lambda: None)
        client = Client(self.app, socket_id, outlet, lambda c, m: self.terminated.append((c, m)))
        self.hub.add_client(client)
        return Session(client, self.hub, clock=lambda: self.now), transport

    def frames_are_json(self) -> None:
        for transport in (self.a_out, self.b_out):
            parser = FrameParser(1 << 24, require_mask=False)
            for frame in transport.written:
                for opcode, payload in parser.feed(frame):
                    assert opcode == OP_TEXT
                    message = orjson.loads(payload)
                    assert isinstance(message, dict) and isinstance(message["event"], str)
        # The webhook sender and the history route serialize these.
        orjson.dumps({"time_ms": 0, "events": self.webhooks})
        if self.history is not None:
            for channel in CHANNELS:
                page = self.history.query(
                    self.app.id, channel, limit=10, before=None, after=None, now_ms=1_000_000
                )
                orjson.dumps(page)


APPS = [
    App(id="1", key="app-key", secret="app-secret"),
    App(
        id="2",
        key="app-key",
        secret="app-secret",
        max_client_events_per_sec=2,
        rate_limit_terminate=True,
        enable_user_authentication=True,
        max_presence_member_size_kb=0.1,
    ),
]


@st.composite
def signed_messages(draw: Any, socket_id: str) -> str:
    """Correctly signed subscriptions and sign-ins whose signed payloads are anything."""
    app = APPS[0]  # both apps share the credentials
    if draw(st.booleans()):
        user_data = draw(st.one_of(json_text, deep(), message_text()))
        token = f"{app.key}:{auth.sign(app.secret_bytes, f'{socket_id}::user::{user_data}')}"
        return json.dumps(
            {"event": "pusher:signin", "data": {"auth": token, "user_data": user_data}}
        )
    channel = draw(st.sampled_from(CHANNELS))
    channel_data = draw(st.one_of(st.none(), json_text, deep()))
    data: dict[str, Any] = {"channel": channel}
    data["auth"] = auth.channel_token(app, socket_id, channel, channel_data)
    if channel_data is not None:
        data["channel_data"] = channel_data
    return json.dumps({"event": "pusher:subscribe", "data": data})


@fuzz_settings(150)
@given(
    data=st.data(),
    app=st.sampled_from(APPS),
    history=st.booleans(),
)
def test_session_raises_only_pusher_errors(data, app, history):
    harness = Harness(app, history=history)
    # The observer joins some channels first, so relays and member events have an audience.
    for channel in data.draw(st.lists(st.sampled_from(CHANNELS), max_size=3)):
        plain = json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}})
        for payload in (data.draw(signed_messages("2.2")), plain):
            try:
                harness.b.receive_message(payload)
            except PusherError:
                pass  # a refused sign-in: the observer stays for this test's purpose
    steps = data.draw(
        st.lists(st.one_of(payloads(), signed_messages("1.1")), min_size=1, max_size=12)
    )
    for payload in steps:
        harness.now += 0.3
        try:
            harness.a.receive_message(payload)
        except PusherError as exc:
            assert isinstance(exc.code, int) or exc.code is None
            break  # the I/O shell closes the connection here
    harness.frames_are_json()
