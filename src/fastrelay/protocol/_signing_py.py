"""HMAC-SHA256 signatures for Pusher tokens and signed HTTP requests: the pure-Python twin.

This is the readable reference; ``_signing_c.pyx`` is the compiled twin with the same API and
the same results. Import :mod:`fastrelay.protocol.signing`, which picks one of them.

Rules shared by both twins:

- Text is signed as UTF-8. A ``verify_*`` call whose inputs cannot be encoded (lone surrogates)
  returns ``False``; :func:`sign` raises :class:`UnicodeEncodeError`.
- A received signature is 64 hex digits, compared case-insensitively in constant time.
- A non-``str`` ``auth`` or ``signature`` (say, a number in a client's JSON) is ``False``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

__all__ = ["check_request", "sign", "string_to_sign", "verify_request", "verify_token"]

_HEX_LENGTH = 64  # SHA-256 digest as hex
_EMPTY_BODY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
_MAX_TIMESTAMP_DIGITS = 30


def sign(secret: bytes, message: str | bytes) -> str:
    """Lowercase hex HMAC-SHA256 of ``message`` (UTF-8 if text) keyed with ``secret``."""
    if isinstance(message, str):
        message = message.encode()
    return hmac.digest(secret, message, "sha256").hex()


def _well_formed(received: str) -> bool:
    """A received signature is 64 ASCII characters (hex is checked by the comparison)."""
    return len(received) == _HEX_LENGTH and received.isascii()


def _matches(secret: bytes, message: str | bytes, received: str) -> bool:
    """Constant-time check of a well-formed ``received`` (hex, any case) against the HMAC."""
    try:
        expected = sign(secret, message)
    except UnicodeEncodeError:
        return False
    # Non-hex characters never equal the lowercase hex digest.
    return hmac.compare_digest(received.lower(), expected)


def verify_token(secret: bytes, app_key: str, auth: str, message: str) -> bool:
    """Check a token ``"{app_key}:{hex}"`` against ``message`` (PROTOCOL.md §7.2).

    The part before the first ``:`` must equal ``app_key``; the rest must be the 64-digit hex
    HMAC-SHA256 of ``message``, in either case.
    """
    if not isinstance(auth, str):
        return False
    key, colon, received = auth.partition(":")
    if not colon or key != app_key or not _well_formed(received):
        return False
    return _matches(secret, message, received)


def string_to_sign(method: str, path: str, params: Mapping[str, str]) -> str:
    """The string a signed HTTP API request covers (HTTP_API.md §2.2).

    ``METHOD\\nPATH\\nQUERY``, where QUERY is every parameter but ``auth_signature``, sorted by
    name, as ``name=value`` joined by ``&``. Names must already be lowercase and values decoded;
    nothing is re-escaped.
    """
    query = "&".join(
        [f"{name}={params[name]}" for name in sorted(params) if name != "auth_signature"]
    )
    return f"{method}\n{path}\n{query}"


def verify_request(
    secret: bytes, method: str, path: str, params: Mapping[str, str], signature: str
) -> bool:
    """Check ``signature`` (hex, any case) against the HMAC of :func:`string_to_sign`."""
    if not isinstance(signature, str) or not _well_formed(signature):
        return False
    return _matches(secret, string_to_sign(method, path, params), signature)


def _plain_query(raw_query: str) -> dict[str, str] | None:
    """``auth.parse_query(raw_query)`` for a query with nothing to decode (ASCII, no ``%``);
    None for any other."""
    if not raw_query.isascii() or "%" in raw_query:
        return None
    params: dict[str, str] = {}
    for field in raw_query.split("&"):
        if field:
            name, _, value = field.partition("=")
            params[name.lower()] = value
    return params


def _timestamp_ok(value: str, now: float, tolerance: int) -> bool:
    """``-?[0-9]{1,30}``, and within ``tolerance`` seconds of ``int(now)`` unless it is <= 0."""
    digits = value[1:] if value[:1] == "-" else value
    if not 0 < len(digits) <= _MAX_TIMESTAMP_DIGITS or not digits.isascii():
        return False
    if not digits.isdigit():
        return False
    return tolerance <= 0 or abs(int(now) - int(value)) <= tolerance


def check_request(
    secret: bytes,
    app_key: str,
    method: str,
    path: str,
    raw_query: str,
    body: bytes,
    now: float,
    tolerance: int,
) -> dict[str, str] | None:
    """The fast path of a signed HTTP API request (HTTP_API.md §2): its query parameters if it
    passes every check, else None.

    Covers a plain query only (ASCII, no ``%``) signed over ``path``: the four ``auth_*``
    parameters present, ``auth_key == app_key``, ``auth_timestamp`` an integer within
    ``tolerance`` seconds of ``now`` (not checked when ``tolerance <= 0``), ``body_md5``
    present and right when there is a body (right when given without one), and the signature.
    The parameters returned equal ``auth.parse_query(raw_query)``. None says only "not proven
    here": :func:`fastrelay.protocol.auth.authenticate_request` then runs the full checks,
    which find the problem (with its message) or a reading this path does not try.
    """
    params = _plain_query(raw_query)
    if params is None:
        return None
    key = params.get("auth_key")
    timestamp = params.get("auth_timestamp")
    signature = params.get("auth_signature")
    if key is None or timestamp is None or signature is None or "auth_version" not in params:
        return None
    if key != app_key or not _timestamp_ok(timestamp, now, tolerance):
        return None
    body_md5 = params.get("body_md5")
    if body_md5 is None:
        if body:
            return None
    else:
        body_hash = _EMPTY_BODY_MD5
        if body:
            body_hash = hashlib.md5(body, usedforsecurity=False).hexdigest()
        # Not secret: the client sent it with the request.
        if body_md5.lower() != body_hash:
            return None
    if not verify_request(secret, method, path, params, signature):
        return None
    return params
