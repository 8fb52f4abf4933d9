"""The exceptions fastrelay raises.

Each error carries the answer the client gets, so the code that catches it looks nothing up::

    FastRelayError                  base of everything fastrelay raises
    ├── ConfigError                 bad configuration; raised at start-up only (exit code 2)
    ├── WebSocketError              a broken WebSocket stream; carries close_code (RFC 6455 §7.4)
    │   └── PayloadTooBig           close_code = 1009
    ├── HandshakeError              a refused HTTP upgrade; carries status
    ├── PusherError                 a fatal Pusher error; carries code and message, then close
    │   ├── AppNotFound             4001
    │   ├── AppDisabled             4003
    │   ├── PathNotFound            4005
    │   ├── InvalidVersion          4006
    │   ├── UnsupportedVersion      4007
    │   ├── NoVersion               4008
    │   ├── Unauthorized            4009
    │   ├── OverCapacity            4100
    │   ├── ReconnectNow            4200
    │   ├── PongTimeout             4201
    │   └── ClientEventRejected     4301
    ├── SubscriptionError           per channel: pusher:subscription_error; the connection stays
    └── RestError                   an HTTP API failure; carries status and message
"""

from __future__ import annotations

__all__ = [
    "AppDisabled",
    "AppNotFound",
    "ClientEventRejected",
    "ConfigError",
    "FastRelayError",
    "HandshakeError",
    "InvalidVersion",
    "NoVersion",
    "OverCapacity",
    "PathNotFound",
    "PayloadTooBig",
    "PongTimeout",
    "PusherError",
    "ReconnectNow",
    "RestError",
    "SubscriptionError",
    "Unauthorized",
    "UnsupportedVersion",
    "WebSocketError",
]


class FastRelayError(Exception):
    """Base class of every exception fastrelay raises."""


class ConfigError(FastRelayError):
    """A configuration value is invalid; the message names the key, value and expectation."""


class WebSocketError(FastRelayError):
    """The peer broke the WebSocket protocol; the connection closes with ``close_code``."""

    def __init__(self, close_code: int, reason: str) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason


class PayloadTooBig(WebSocketError):
    """A message exceeded the configured maximum size (close 1009)."""

    def __init__(self, reason: str = "Message too big") -> None:
        super().__init__(1009, reason)


class HandshakeError(FastRelayError):
    """The HTTP upgrade request cannot become a WebSocket; answered with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class PusherError(FastRelayError):
    """A Pusher protocol error: sent as ``pusher:error``, then closes with ``code`` if ``close``.

    ``code`` follows the Pusher ranges: 4000–4099 do not reconnect, 4100–4199 back off,
    4200–4299 reconnect at once, 4300–4399 other.
    """

    code: int | None = None
    message: str = ""
    close: bool = True

    def __init__(self, message: str | None = None, code: int | None = None) -> None:
        if message is not None:
            self.message = message
        if code is not None:
            self.code = code
        super().__init__(self.message)

    @property
    def reconnect(self) -> str:
        """What a Pusher client does after this code: ``never``, ``backoff`` or ``now``."""
        code = self.code or 0
        if 4100 <= code < 4200:
            return "backoff"
        if 4200 <= code < 4300:
            return "now"
        return "never"


class AppNotFound(PusherError):
    code = 4001


class AppDisabled(PusherError):
    code = 4003
    message = "The app is not enabled."


class PathNotFound(PusherError):
    code = 4005
    message = "Path not found"


class InvalidVersion(PusherError):
    code = 4006
    message = "Invalid version string format"


class UnsupportedVersion(PusherError):
    code = 4007


class NoVersion(PusherError):
    code = 4008
    message = "No protocol version supplied"


class Unauthorized(PusherError):
    code = 4009
    message = "Connection not authorized."


class OverCapacity(PusherError):
    code = 4100
    message = "The current concurrent connections quota has been reached."


class ReconnectNow(PusherError):
    code = 4200
    message = "Server is closing. Please reconnect shortly."


class PongTimeout(PusherError):
    code = 4201
    message = "Pong reply not received in time"


class ClientEventRejected(PusherError):
    """A client event was refused (4301); the connection stays open unless configured otherwise."""

    code = 4301
    close = False


class SubscriptionError(FastRelayError):
    """A subscription failed: ``pusher:subscription_error`` with ``{type, error, status}``."""

    def __init__(self, type_: str, error: str, status: int, *, pusher_error: bool = False) -> None:
        super().__init__(error)
        self.type = type_
        self.error = error
        self.status = status
        # Real Pusher also sends pusher:error (code null) for bad signatures (PROTOCOL.md §5.4).
        self.pusher_error = pusher_error


class RestError(FastRelayError):
    """An HTTP API request failed: answered with ``status`` and ``{"error", "code"}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
