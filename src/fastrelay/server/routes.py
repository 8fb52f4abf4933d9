"""HTTP requests and responses as values, and a table of routes; no framework."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson

__all__ = [
    "EMPTY_OK",
    "Handler",
    "Request",
    "Response",
    "Router",
    "error_response",
    "json_response",
]

_CORS = (
    b"Access-Control-Allow-Origin: *\r\n"
    b"Access-Control-Allow-Methods: GET, POST, PUT, DELETE, OPTIONS\r\n"
    b"Access-Control-Allow-Headers: Origin, Content-Type, X-Auth-Token, X-Requested-With, "
    b"Accept, Authorization, X-CSRF-TOKEN, XSRF-TOKEN, X-Socket-Id\r\n"
)
_CORS_END = _CORS + b"\r\n"  # the CORS headers close every head


@dataclass(slots=True)
class Request:
    """One parsed HTTP request. ``path`` is exactly as sent, without the query string."""

    method: str
    path: str
    raw_query: str
    headers: dict[str, str]
    body: bytes
    remote_addr: str = ""
    params: dict[str, str] = field(default_factory=dict)  # path parameters from the route


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self, *, keep_alive: bool, head: bool = False, http10: bool = False) -> bytes:
        """Serialize to HTTP/1.1 bytes, with soketi's CORS headers on every response.

        ``http10``: the request was HTTP/1.0, whose clients assume the connection closes unless
        the response says ``Connection: keep-alive``.
        """
        status = self.status
        out = _STATUS_LINES.get(status) or _status_line(status)
        if status != 204:
            content_type = _CONTENT_TYPES.get(self.content_type) or _content_type(
                self.content_type
            )
            out += content_type + b"Content-Length: %d\r\n" % len(self.body)
        for name, value in self.headers:
            out += f"{name}: {value}\r\n".encode()
        if not keep_alive:
            out += b"Connection: close\r\n"
        elif http10:
            out += b"Connection: keep-alive\r\n"
        if head or status == 204:
            return out + _CORS_END
        return out + _CORS_END + self.body


# Encoded once per status and content type: building them costs more than the rest of a reply.
_STATUS_LINES: dict[int, bytes] = {}
_CONTENT_TYPES: dict[str, bytes] = {}
_MAX_CONTENT_TYPES = 64  # handlers use a handful; the bound is only a safety net


def _status_line(status: int) -> bytes:
    line = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()
    _STATUS_LINES[status] = line
    return line


def _content_type(content_type: str) -> bytes:
    line = f"Content-Type: {content_type}\r\n".encode()
    if len(_CONTENT_TYPES) < _MAX_CONTENT_TYPES:
        _CONTENT_TYPES[content_type] = line
    return line


EMPTY_OK = Response(200, b"{}")
"""``200 {}``, the answer of most API calls; shared, so never to be changed."""


def json_response(value: Any, status: int = 200) -> Response:
    return Response(status, orjson.dumps(value))


def error_response(
    status: int, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    """The error body every route uses: ``{"error": text, "code": status}`` (HTTP_API.md §1)."""
    return Response(status, orjson.dumps({"error": message, "code": status}), headers=headers)


Handler = Callable[[Request], "Response | Awaitable[Response]"]


class Router:
    """Routes ``(method, path pattern)`` to handlers; ``{name}`` matches one path segment.

    What a path resolves to is remembered (up to ROUTE_CACHE_SIZE paths, then forgotten all at
    once), so a client repeating one call costs a dictionary lookup instead of a walk through
    the patterns. The path parameters returned are then shared between requests: read them,
    never change them.
    """

    def __init__(self) -> None:
        self._routes: list[tuple[re.Pattern[str], dict[str, Handler]]] = []
        # path -> (handlers by method, path parameters, allowed methods)
        self._cache: dict[str, tuple[dict[str, Handler], dict[str, str], str]] = {}

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        self._cache.clear()
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")
        for existing, handlers in self._routes:
            if existing.pattern == regex.pattern:
                handlers[method] = handler
                return
        self._routes.append((regex, {method: handler}))

    def resolve(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], str]:
        """Return ``(handler, path params, allowed methods)``; handler None → 404 or 405."""
        found = self._cache.get(path)
        if found is None:
            found = self._match(path)
            if len(self._cache) >= ROUTE_CACHE_SIZE:
                self._cache.clear()  # any path may be asked for: the cache must stay bounded
            self._cache[path] = found
        handlers, params, allowed = found
        handler = handlers.get(method)
        if handler is None and method == "HEAD":
            handler = handlers.get("GET")
        return handler, params, allowed

    def _match(self, path: str) -> tuple[dict[str, Handler], dict[str, str], str]:
        for regex, handlers in self._routes:
            match = regex.match(path)
            if match is not None:
                return handlers, match.groupdict(), ", ".join(sorted(handlers))
        return {}, {}, ""


ROUTE_CACHE_SIZE = 1024
