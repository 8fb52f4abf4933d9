"""HMAC-SHA256 signing for Pusher tokens and signed requests (PROTOCOL.md §7, HTTP_API.md §2).

Selects the compiled twin (``_signing_c``) unless ``FASTRELAY_NO_EXTENSIONS`` is set or it is not
built; type checkers always see the pure twin (``_signing_py``), which is the reference. The
Pusher rules built on these (tokens, signed requests, the auth endpoint) are in
:mod:`fastrelay.protocol.auth`.
"""

from typing import TYPE_CHECKING

from .._accel import NO_EXTENSIONS, record

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._signing_py import check_request, sign, string_to_sign, verify_request, verify_token
else:
    try:
        from ._signing_c import check_request, sign, string_to_sign, verify_request, verify_token
    except ImportError:  # pragma: no cover
        from ._signing_py import check_request, sign, string_to_sign, verify_request, verify_token

record(__name__, verify_token)

__all__ = ["check_request", "sign", "string_to_sign", "verify_request", "verify_token"]
