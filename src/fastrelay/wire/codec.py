"""The only module that knows Pusher's JSON: decode what clients send, encode what they get.

Every event name string lives here. Encoders return ``bytes`` ready to be framed; the rule that
some ``data`` fields are JSON *strings* holding JSON (PROTOCOL.md §2.1) is implemented once, here.
Published ``data`` strings are escaped into the envelope, never parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson

__all__ = [
    "MAX_JSON_DEPTH",
    "PONG",
    "ClientEvent",
    "Invalid",
    "Message",
    "Ping",
    "Pong",
    "SignIn",
    "Subscribe",
    "Unknown",
    "Unsubscribe",
    "decode_client_message",
    "encode_cache_miss",
    "encode_channel_event",
    "encode_client_event",
    "encode_connection_established",
    "encode_error",
    "encode_member_added",
    "encode_member_removed",
    "encode_signin_success",
    "encode_subscription_count",
    "encode_subscription_error",
    "encode_subscription_succeeded",
    "encode_watchlist_events",
    "json_dumps",
    "json_loads",
    "nested_too_deep",
]

EVENT_PING: Final = "pusher:ping"
EVENT_PONG: Final = "pusher:pong"
EVENT_SUBSCRIBE: Final = "pusher:subscribe"
EVENT_UNSUBSCRIBE: Final = "pusher:unsubscribe"
EVENT_SIGNIN: Final = "pusher:signin"
EVENT_ERROR: Final = "pusher:error"
EVENT_CONNECTION_ESTABLISHED: Final = "pusher:connection_established"
EVENT_SUBSCRIPTION_ERROR: Final = "pusher:subscription_error"
EVENT_SIGNIN_SUCCESS: Final = "pusher:signin_success"
EVENT_CACHE_MISS: Final = "pusher:cache_miss"
EVENT_SUBSCRIPTION_SUCCEEDED: Final = "pusher_internal:subscription_succeeded"
EVENT_MEMBER_ADDED: Final = "pusher_internal:member_added"
EVENT_MEMBER_REMOVED: Final = "pusher_internal:member_removed"
EVENT_SUBSCRIPTION_COUNT: Final = "pusher_internal:subscription_count"
EVENT_WATCHLIST: Final = "pusher_internal:watchlist_events"
CLIENT_EVENT_PREFIX: Final = "client-"

json_loads = orjson.loads

MAX_JSON_DEPTH: Final = 128
"""Deepest nesting of arrays and objects accepted from clients and backends.

orjson reads up to 1024 levels but writes at most 254, and fastrelay writes what it accepts back
out inside wrappers (client-event envelopes, presence hashes, history pages, webhooks). Without
a bound a valid message could make an encoder raise; 128 leaves room for every wrapper.
"""


def nested_too_deep(value: Any, text: bytes | str) -> bool:
    """Whether ``value``, parsed from the JSON ``text``, nests deeper than MAX_JSON_DEPTH."""
    # Nesting N deep takes N opening brackets, so most texts are cleared by a C-speed count.
    if isinstance(text, str):
        brackets = text.count("[") + text.count("{")
    else:
        brackets = text.count(b"[") + text.count(b"{")
    if brackets <= MAX_JSON_DEPTH:
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        if depth > MAX_JSON_DEPTH:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def json_dumps(value: Any) -> bytes:
    """Compact JSON, keys in insertion order (what Pusher signs and what clients expect)."""
    return orjson.dumps(value)


# -- client → server -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Pong:
    pass


@dataclass(frozen=True, slots=True)
class Subscribe:
    channel: str
    auth: str | None
    channel_data: str | None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    channel: str


@dataclass(frozen=True, slots=True)
class SignIn:
    auth: str | None
    user_data: str | None


@dataclass(frozen=True, slots=True)
class ClientEvent:
    event: str
    channel: str | None
    data: Any
    """The ``data`` value as sent (object stays object, string stays string)."""


@dataclass(frozen=True, slots=True)
class Unknown:
    """A ``pusher:*`` or other event fastrelay ignores (PROTOCOL.md §2.3)."""

    event: str


@dataclass(frozen=True, slots=True)
class Invalid:
    """A message that gets ``pusher:error`` with ``code: null`` and this text."""

    message: str


Message = Ping | Pong | Subscribe | Unsubscribe | SignIn | ClientEvent | Unknown | Invalid

_INVALID_FORMAT = Invalid("Invalid message format")
_MISSING_CHANNEL = Invalid("Invalid subscription request: missing channel")
_PING = Ping()
_PONG = Pong()


def _object_data(data: Any) -> dict[str, Any] | None:
    """``data`` of subscribe/unsubscribe/signin: an object, or a string holding one (Reverb)."""
    if isinstance(data, str):
        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
    return data if isinstance(data, dict) else None


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def decode_client_message(payload: bytes | str) -> Message:
    """Turn one WebSocket text message into a typed message (PROTOCOL.md §2, §2.3)."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return _INVALID_FORMAT
    if not isinstance(obj, dict):
        return _INVALID_FORMAT
    if nested_too_deep(obj, payload):
        return _INVALID_FORMAT
    event = obj.get("event")
    if not isinstance(event, str):
        return _INVALID_FORMAT
    if event.startswith(CLIENT_EVENT_PREFIX):
        return ClientEvent(event, _optional_str(obj.get("channel")), obj.get("data"))
    if event == EVENT_PING:
        return _PING
    if event == EVENT_PONG:
        return _PONG
    if event in (EVENT_SUBSCRIBE, EVENT_UNSUBSCRIBE):
        data = _object_data(obj.get("data"))
        channel = data.get("channel") if data is not None else None
        if not isinstance(channel, str):
            return _MISSING_CHANNEL
        if event == EVENT_UNSUBSCRIBE:
            return Unsubscribe(channel)
        assert data is not None
        return Subscribe(
            channel, _optional_str(data.get("auth")), _optional_str(data.get("channel_data"))
        )
    if event == EVENT_SIGNIN:
        data = _object_data(obj.get("data"))
        if data is None:
            return SignIn(None, None)
        return SignIn(_optional_str(data.get("auth")), _optional_str(data.get("user_data")))
    return Unknown(event)


# -- server → client -----------------------------------------------------------------------

PONG: Final = b'{"event":"pusher:pong","data":{}}'
PING: Final = b'{"event":"pusher:ping","data":{}}'


def encode_connection_established(socket_id: str, activity_timeout: int) -> bytes:
    inner = orjson.dumps({"socket_id": socket_id, "activity_timeout": activity_timeout}).decode()
    return orjson.dumps({"event": EVENT_CONNECTION_ESTABLISHED, "data": inner})


def encode_error(code: int | None, message: str, channel: str | None = None) -> bytes:
    """``pusher:error``: ``data`` is an object (Pysher reads ``data['code']``)."""
    out: dict[str, Any] = {"event": EVENT_ERROR, "data": {"code": code, "message": message}}
    if channel is not None:
        out["channel"] = channel
    return orjson.dumps(out)


def encode_subscription_succeeded(channel: str, presence: dict[str, Any] | None = None) -> bytes:
    data = "{}" if presence is None else orjson.dumps({"presence": presence}).decode()
    return orjson.dumps({"event": EVENT_SUBSCRIPTION_SUCCEEDED, "channel": channel, "data": data})


def encode_subscription_error(channel: str, type_: str, error: str, status: int) -> bytes:
    return orjson.dumps(
        {
            "event": EVENT_SUBSCRIPTION_ERROR,
            "channel": channel,
            "data": {"type": type_, "error": error, "status": status},
        }
    )


def encode_member_added(channel: str, user_id: Any, user_info: Any) -> bytes:
    data = orjson.dumps({"user_id": user_id, "user_info": user_info}).decode()
    return orjson.dumps({"event": EVENT_MEMBER_ADDED, "channel": channel, "data": data})


def encode_member_removed(channel: str, user_id: Any) -> bytes:
    data = orjson.dumps({"user_id": user_id}).decode()
    return orjson.dumps({"event": EVENT_MEMBER_REMOVED, "channel": channel, "data": data})


def encode_subscription_count(channel: str, count: int) -> bytes:
    data = orjson.dumps({"subscription_count": count}).decode()
    return orjson.dumps({"event": EVENT_SUBSCRIPTION_COUNT, "channel": channel, "data": data})


def encode_cache_miss(channel: str) -> bytes:
    return orjson.dumps({"event": EVENT_CACHE_MISS, "channel": channel})


def encode_channel_event(event: str, channel: str, data: str, event_id: int | None = None) -> bytes:
    """A published event; ``data`` is the backend's string, escaped into the envelope as-is.

    With event history on, ``id`` is the event's history id (RELAY_EXTRAS.md §4), an extra
    envelope field that pusher-js and Pysher ignore, for reconnect catch-up.
    """
    if event_id is None:
        return orjson.dumps({"event": event, "channel": channel, "data": data})
    return orjson.dumps({"event": event, "channel": channel, "data": data, "id": event_id})


def encode_client_event(
    event: str, channel: str, data: Any, user_id: Any = None, event_id: int | None = None
) -> bytes:
    """A relayed client event: ``data`` verbatim, ``user_id`` on presence channels."""
    out: dict[str, Any] = {"event": event, "channel": channel, "data": data}
    if user_id is not None:
        out["user_id"] = user_id
    if event_id is not None:
        out["id"] = event_id
    return orjson.dumps(out)


def encode_signin_success(user_data: str) -> bytes:
    return orjson.dumps({"event": EVENT_SIGNIN_SUCCESS, "data": {"user_data": user_data}})


def encode_watchlist_events(events: list[dict[str, Any]]) -> bytes:
    data = orjson.dumps({"events": events}).decode()
    return orjson.dumps({"event": EVENT_WATCHLIST, "data": data})
