"""The WebSocket opening handshake (RFC 6455 §4.2), sans-I/O."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from wsproto.utilities import generate_accept_token

from ..errors import HandshakeError

__all__ = ["accept_response", "validate_upgrade"]


def validate_upgrade(method: str, headers: Mapping[str, str]) -> str:
    """Check an upgrade request; return its ``Sec-WebSocket-Key``.

    ``headers`` has lowercase names. Raises :class:`HandshakeError` with the status to answer.
    """
    if method != "GET":
        raise HandshakeError(400, "WebSocket upgrade requires GET")
    if "websocket" not in headers.get("upgrade", "").lower():
        raise HandshakeError(426, "Upgrade Required")
    connection = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    if "upgrade" not in connection:
        raise HandshakeError(400, "Missing Connection: Upgrade")
    if headers.get("sec-websocket-version", "").strip() != "13":
        raise HandshakeError(426, "Unsupported Sec-WebSocket-Version (13 expected)")
    key = headers.get("sec-websocket-key", "").strip()
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(400, "Invalid Sec-WebSocket-Key")
    return key


def accept_response(key: str) -> bytes:
    """The ``101 Switching Protocols`` response for a validated key."""
    accept = generate_accept_token(key.encode()).decode()
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n"
        "\r\n"
    ).encode()
