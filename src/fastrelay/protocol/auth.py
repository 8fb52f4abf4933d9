"""Pusher authentication rules: channel and sign-in tokens, signed HTTP requests, the auth endpoint.

Pure logic: no I/O, and no clock reads (the caller passes ``now``). Every HMAC goes through
:mod:`fastrelay.protocol.signing` (compiled when available); nothing else in fastrelay builds
signatures.

- Channel and sign-in tokens: PROTOCOL.md §7.
- Signed requests: HTTP_API.md §2 (:func:`authenticate_request`).
- Webhook signatures: HTTP_API.md §5.2.
- ``POST /apps/{id}/auth``: RELAY_EXTRAS.md §3 (:func:`authorize`).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, unquote_plus

import orjson

from ..config import App
from ..errors import RestError
from ..wire.codec import nested_too_deep
from .channels import channel_kind, validate_channel_name
from .signing import check_request, sign, string_to_sign, verify_request, verify_token

__all__ = [
    "authenticate_request",
    "authorize",
    "channel_auth_message",
    "channel_token",
    "parse_query",
    "query_integer",
    "shared_secret",
    "user_auth_message",
    "verify_channel_auth",
    "verify_signin",
    "webhook_signature",
]

# Checked in this order; body_md5 has its own rule (required only with a body).
_REQUIRED_PARAMS = ("auth_key", "auth_timestamp", "auth_version", "auth_signature")
_EMPTY_BODY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
# Bounded so int() never sees a huge string; SDKs send 10 digits.
_TIMESTAMP = re.compile(r"-?[0-9]{1,30}")
_SOCKET_ID = re.compile(r"[0-9]+\.[0-9]+")
_INTEGER = re.compile(r"-?[0-9]+")
_MAX_USER_ID_LENGTH = 128
_FORM = "application/x-www-form-urlencoded"
_BAD_BODY = "The received data is incorrect"


# -- signed HTTP requests (HTTP_API.md §2) --------------------------------------------------------


def query_integer(params: Mapping[str, str], name: str) -> int | None:
    """An optional integer query parameter (``limit``, ``before``, ``after``…); else 400."""
    value = params.get(name)
    if value is None:
        return None
    if _INTEGER.fullmatch(value):
        try:
            return int(value)
        except ValueError:  # more digits than int() accepts
            pass
    raise RestError(400, f"{name} must be an integer")


def parse_query(raw_query: str, plus_as_space: bool = False) -> dict[str, str]:
    """Parse a raw query string (without ``?``) into lowercase names and decoded values.

    Only ``%XX`` is decoded (as UTF-8, bad sequences replaced); ``+`` stays ``+`` unless
    ``plus_as_space``, which is also how form bodies are read. A repeated name keeps its last
    value; a field without ``=`` has the value ``""``.
    """
    params: dict[str, str] = {}
    if "%" not in raw_query and not (plus_as_space and "+" in raw_query):
        # Nothing to decode (what SDKs send for a publish): the fields as they are.
        for field in raw_query.split("&"):
            if field:
                name, _, value = field.partition("=")
                params[name.lower()] = value
        return params
    decode = unquote_plus if plus_as_space else unquote
    for field in raw_query.split("&"):
        if field:
            name, _, value = field.partition("=")
            params[decode(name).lower()] = decode(value)
    return params


def authenticate_request(
    app: App,
    method: str,
    path: str,
    raw_query: str,
    body: bytes,
    *,
    now: float,
    tolerance: int = 600,
    path_prefix: str = "",
) -> dict[str, str]:
    """Check a signed HTTP API request of ``app`` and return its query parameters.

    ``path`` is the request path as sent (no query string); ``now`` is the server's Unix time;
    ``tolerance`` is the accepted clock difference in seconds (``0`` disables that check). With a
    ``path_prefix``, the path without the prefix (what the SDKs sign) is tried first, then the
    full path (soketi). If no signature matches and the query has a ``+``, the query is read
    once more with ``+`` as a space. The parameters returned are the reading that verified.

    Raises:
        RestError: 401 with the HTTP_API.md §2.2 text for the first problem found.
    """
    paths = _signed_paths(path, path_prefix)
    # The usual request passes in one compiled call; anything else gets the full checks below.
    secret = app.secret_bytes
    checked = check_request(secret, app.key, method, paths[0], raw_query, body, now, tolerance)
    if checked is not None:
        return checked
    params = parse_query(raw_query)
    for name in _REQUIRED_PARAMS:
        if name not in params:
            raise RestError(401, f"Missing auth parameter: {name}")
    if params["auth_key"] != app.key:
        raise RestError(401, "Unknown auth_key")
    _check_timestamp(params["auth_timestamp"], now, tolerance)
    _check_body_md5(params.get("body_md5"), body)

    signature = params["auth_signature"]
    for candidate in paths:
        if verify_request(secret, method, candidate, params, signature):
            return params
    if "+" in raw_query:
        spaced = parse_query(raw_query, plus_as_space=True)
        for candidate in paths:
            if verify_request(secret, method, candidate, spaced, signature):
                return spaced
    expected = string_to_sign(method, paths[0], params).replace("\n", "\\n")
    raise RestError(
        401,
        f'Invalid signature: you should have sent HmacSHA256Hex("{expected}", your_secret_key), '
        f'but you sent "{signature}"',
    )


def _check_timestamp(value: str, now: float, tolerance: int) -> None:
    if not _TIMESTAMP.fullmatch(value):
        raise RestError(401, "Invalid auth_timestamp: expected an integer (Unix seconds)")
    if tolerance <= 0:
        return
    timestamp = int(value)
    server_time = int(now)  # whole seconds, as in the message
    if abs(server_time - timestamp) > tolerance:
        raise RestError(
            401,
            f"Timestamp expired: Given timestamp ({timestamp}) not within {tolerance}s "
            f"of server time ({server_time})",
        )


def _check_body_md5(received: str | None, body: bytes) -> None:
    if received is None:
        if body:
            raise RestError(401, "Missing auth parameter: body_md5")
        return
    expected = hashlib.md5(body, usedforsecurity=False).hexdigest() if body else _EMPTY_BODY_MD5
    if received.lower() != expected:
        raise RestError(401, "body_md5 does not match the request body")


def _signed_paths(path: str, path_prefix: str) -> tuple[str, ...]:
    """Paths a signature may cover: without the prefix first (HTTP_API.md §2.5), then as sent."""
    prefix = path_prefix.strip("/")
    if prefix:
        prefix = "/" + prefix
        if path.startswith(prefix + "/"):
            return path[len(prefix) :], path
    return (path,)


# -- channel and sign-in tokens (PROTOCOL.md §7) --------------------------------------------------


def channel_auth_message(socket_id: str, channel: str, channel_data: str | None = None) -> str:
    """The string a channel token signs: ``{socket_id}:{channel}[:{channel_data}]``."""
    if channel_data is None:
        return f"{socket_id}:{channel}"
    return f"{socket_id}:{channel}:{channel_data}"


def user_auth_message(socket_id: str, user_data: str) -> str:
    """The string a sign-in token signs: ``{socket_id}::user::{user_data}``."""
    return f"{socket_id}::user::{user_data}"


def channel_token(app: App, socket_id: str, channel: str, channel_data: str | None = None) -> str:
    """The ``auth`` value for a channel subscription: ``"{key}:{hex}"``."""
    message = channel_auth_message(socket_id, channel, channel_data)
    return f"{app.key}:{sign(app.secret_bytes, message)}"


def verify_channel_auth(
    app: App,
    socket_id: str,
    channel: str,
    auth: str,
    channel_data: str | None,
    *,
    presence: bool,
) -> bool:
    """Check a subscription's ``auth`` (PROTOCOL.md §7.2).

    Presence channels: only a signature over ``{socket_id}:{channel}:{channel_data}``. Other
    private-type channels: ``{socket_id}:{channel}``, or, when the subscribe message carries
    ``channel_data``, the form with it.
    """
    secret, key = app.secret_bytes, app.key
    has_data = isinstance(channel_data, str)
    if presence:
        return has_data and verify_token(
            secret, key, auth, channel_auth_message(socket_id, channel, channel_data)
        )
    if verify_token(secret, key, auth, channel_auth_message(socket_id, channel)):
        return True
    return has_data and verify_token(
        secret, key, auth, channel_auth_message(socket_id, channel, channel_data)
    )


def verify_signin(app: App, socket_id: str, auth: str, user_data: str) -> bool:
    """Check a ``pusher:signin`` ``auth`` against ``{socket_id}::user::{user_data}``."""
    return verify_token(app.secret_bytes, app.key, auth, user_auth_message(socket_id, user_data))


def shared_secret(channel: str, master_key: bytes) -> str:
    """An encrypted channel's key for clients: base64(SHA-256(channel name ‖ master key)) (§7.3)."""
    return base64.b64encode(hashlib.sha256(channel.encode() + master_key).digest()).decode()


def webhook_signature(app: App, body: bytes) -> str:
    """``X-Pusher-Signature`` of a webhook: hex HMAC-SHA256 of the exact body bytes (§5.2)."""
    return sign(app.secret_bytes, body)


# -- POST /apps/{id}/auth (RELAY_EXTRAS.md §3) ----------------------------------------------------


def authorize(
    app: App, body: bytes, content_type: str | None, *, master_key: bytes | None
) -> dict[str, str]:
    """Compute the token the auth endpoint returns for a (signed, already checked) request body.

    The body is JSON, or a form (``application/x-www-form-urlencoded``, or any body that is not
    JSON when the content type does not say JSON). It asks for a channel token (``socket_id``,
    ``channel_name``, presence ``channel_data``) or a sign-in token (``socket_id``,
    ``user_data``). ``master_key`` is the encryption master key (32 bytes), if configured.

    Returns:
        The response object, e.g. ``{"auth": "key:hex", "channel_data": "..."}``.

    Raises:
        RestError: 400 for a missing or invalid field, 413 for a presence ``user_info`` over
            the app's limit.
    """
    fields = _auth_fields(body, content_type)
    socket_id = fields.get("socket_id")
    if socket_id is None:
        raise RestError(400, "The socket_id field is required")
    if not isinstance(socket_id, str) or not _SOCKET_ID.fullmatch(socket_id):
        raise RestError(400, "Invalid socket_id")
    channel = fields.get("channel_name")
    user_data = fields.get("user_data")
    if channel is not None and user_data is not None:
        raise RestError(400, "Send either channel_name or user_data, not both")
    if channel is not None:
        return _authorize_channel(app, socket_id, channel, fields.get("channel_data"), master_key)
    if user_data is not None:
        return _authorize_user(app, socket_id, user_data)
    raise RestError(400, "The channel_name or user_data field is required")


def _auth_fields(body: bytes, content_type: str | None) -> dict[str, Any]:
    media = (content_type or "").partition(";")[0].strip().lower()
    # A JSON object is read as JSON whatever the label (HTTP_API.md §1): `curl -d '{…}'` and
    # urllib label it as a form. Only a body that cannot be a JSON object is parsed as a form.
    if media == _FORM and not body.lstrip().startswith(b"{"):
        return _form_fields(body)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        if media == "application/json" or media.endswith("+json"):
            raise RestError(400, _BAD_BODY) from None
        return _form_fields(body)
    # Too deep to write back out (codec.MAX_JSON_DEPTH): refused like any unreadable body.
    if not isinstance(value, dict) or nested_too_deep(value, body):
        raise RestError(400, _BAD_BODY)
    return value


def _form_fields(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise RestError(400, _BAD_BODY) from None
    return parse_query(text, plus_as_space=True)


def _authorize_channel(
    app: App, socket_id: str, channel: Any, channel_data: Any, master_key: bytes | None
) -> dict[str, str]:
    if not isinstance(channel, str):
        raise RestError(400, "The channel_name field must be a string")
    problem = validate_channel_name(channel, app.max_channel_name_length)
    if problem == "too_long":
        raise RestError(
            400, f"The channel name is longer than {app.max_channel_name_length} characters"
        )
    if problem is not None:
        raise RestError(400, f"Invalid channel name: {channel}")
    kind = channel_kind(channel)
    if not kind.needs_auth:
        raise RestError(400, f"Channel {channel} does not need authorization")
    if kind.is_encrypted:
        if master_key is None:
            raise RestError(400, "Encrypted channels need an encryption master key")
        return {
            "auth": channel_token(app, socket_id, channel),
            "shared_secret": shared_secret(channel, master_key),
        }
    if kind.is_presence:
        signed_data = _presence_channel_data(app, channel_data)
        return {
            "auth": channel_token(app, socket_id, channel, signed_data),
            "channel_data": signed_data,
        }
    return {"auth": channel_token(app, socket_id, channel)}  # channel_data ignored


def _json_text(value: Any, field: str) -> tuple[str, dict[str, Any]]:
    """A JSON-object field given as a string (kept verbatim) or an object (compact JSON, keys in
    the order received): the text to sign and the parsed object."""
    problem = RestError(400, f"The {field} field must be a JSON object")
    if isinstance(value, str):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise problem from None
        if nested_too_deep(parsed, value):
            raise problem
        text = value
    elif isinstance(value, dict):
        parsed = value
        text = orjson.dumps(value).decode()
    else:
        raise problem
    if not isinstance(parsed, dict):
        raise problem
    return text, parsed


def _presence_channel_data(app: App, channel_data: Any) -> str:
    if channel_data is None:
        raise RestError(400, "The channel_data field is required for presence channels")
    text, member = _json_text(channel_data, "channel_data")
    user_id = member.get("user_id")
    if isinstance(user_id, bool) or not isinstance(user_id, (str, int, float)) or user_id == "":
        raise RestError(400, "channel_data needs a user_id: a non-empty string or a number")
    if len(str(user_id)) > _MAX_USER_ID_LENGTH:
        raise RestError(400, f"The user_id is longer than {_MAX_USER_ID_LENGTH} characters")
    if "user_info" in member:
        limit = app.max_presence_member_size_bytes
        if len(orjson.dumps(member["user_info"])) > limit:
            raise RestError(413, f"The user_info is larger than {limit} bytes")
    return text


def _authorize_user(app: App, socket_id: str, user_data: Any) -> dict[str, str]:
    text, user = _json_text(user_data, "user_data")
    user_id = user.get("id")
    if not isinstance(user_id, str) or not user_id:
        raise RestError(400, "user_data needs an id: a non-empty string")
    auth = f"{app.key}:{sign(app.secret_bytes, user_auth_message(socket_id, text))}"
    return {"auth": auth, "user_data": text}
