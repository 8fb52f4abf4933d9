"""HMAC-SHA256 signatures for Pusher tokens and signed HTTP requests: stub of the compiled twin.

Same API and results as ``_signing_py`` (the reference). Text is signed as UTF-8; a ``verify_*``
call whose inputs cannot be encoded returns ``False`` and :func:`sign` raises
:class:`UnicodeEncodeError`; a received signature is 64 hex digits compared case-insensitively in
constant time; a non-``str`` ``auth`` or ``signature`` is ``False``.
"""

from collections.abc import Mapping

__all__ = ["check_request", "sign", "string_to_sign", "verify_request", "verify_token"]

def sign(secret: bytes, message: str | bytes) -> str:
    """Lowercase hex HMAC-SHA256 of ``message`` (UTF-8 if text) keyed with ``secret``."""

def verify_token(secret: bytes, app_key: str, auth: str, message: str) -> bool:
    """Check a token ``"{app_key}:{hex}"`` against ``message`` (PROTOCOL.md §7.2).

    The part before the first ``:`` must equal ``app_key``; the rest must be the 64-digit hex
    HMAC-SHA256 of ``message``, in either case.
    """

def string_to_sign(method: str, path: str, params: Mapping[str, str]) -> str:
    """The string a signed HTTP API request covers (HTTP_API.md §2.2).

    ``METHOD\\nPATH\\nQUERY``, where QUERY is every parameter but ``auth_signature``, sorted by
    name, as ``name=value`` joined by ``&``. Names must already be lowercase and values decoded;
    nothing is re-escaped.
    """

def verify_request(
    secret: bytes, method: str, path: str, params: Mapping[str, str], signature: str
) -> bool:
    """Check ``signature`` (hex, any case) against the HMAC of :func:`string_to_sign`."""

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
    """The fast path of a signed HTTP API request: its query parameters if a plain query (ASCII,
    no ``%``) passes every check of ``auth.authenticate_request`` over ``path``, else None."""
