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

import hmac
from collections.abc import Mapping

__all__ = ["sign", "string_to_sign", "verify_request", "verify_token"]

_HEX_LENGTH = 64  # SHA-256 digest as hex


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
