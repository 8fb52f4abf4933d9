"""HTTP requests and responses as values, and a table of routes; no framework."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson

__all__ = ["Handler", "Request", "Response", "Router", "error_response", "json_response"]

_CORS = (
    b"Access-Control-Allow-Origin: *\r\n"
    b"Access-Control-Allow-Methods: GET, POST, PUT, DELETE, OPTIONS\r\n"
    b"Access-Control-Allow-Headers: Origin, Content-Type, X-Auth-Token, X-Requested-With, "
    b"Accept, Authorization, X-CSRF-TOKEN, XSRF-TOKEN, X-Socket-Id\r\n"
)


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
        reason = HTTPStatus(self.status).phrase
        lines = [f"HTTP/1.1 {self.status} {reason}\r\n".encode()]
        if self.status != 204:
            lines.append(f"Content-Type: {self.content_type}\r\n".encode())
            lines.append(f"Content-Length: {len(self.body)}\r\n".encode())
        for name, value in self.headers:
            lines.append(f"{name}: {value}\r\n".encode())
        if not keep_alive:
            lines.append(b"Connection: close\r\n")
        elif http10:
            lines.append(b"Connection: keep-alive\r\n")
        lines.append(_CORS)
        lines.append(b"\r\n")
        if not head and self.status != 204:
            lines.append(self.body)
        return b"".join(lines)


def json_response(value: Any, status: int = 200) -> Response:
    return Response(status, orjson.dumps(value))


def error_response(
    status: int, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    """The error body every route uses: ``{"error": text, "code": status}`` (HTTP_API.md §1)."""
    return Response(status, orjson.dumps({"error": message, "code": status}), headers=headers)


Handler = Callable[[Request], "Response | Awaitable[Response]"]


class Router:
    """Routes ``(method, path pattern)`` to handlers; ``{name}`` matches one path segment."""

    def __init__(self) -> None:
        self._routes: list[tuple[re.Pattern[str], dict[str, Handler]]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")
        for existing, handlers in self._routes:
            if existing.pattern == regex.pattern:
                handlers[method] = handler
                return
        self._routes.append((regex, {method: handler}))

    def resolve(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], str]:
        """Return ``(handler, path params, allowed methods)``; handler None → 404 or 405."""
        for regex, handlers in self._routes:
            match = regex.match(path)
            if match is None:
                continue
            handler = handlers.get(method)
            if handler is None and method == "HEAD":
                handler = handlers.get("GET")
            return handler, match.groupdict(), ", ".join(sorted(handlers))
        return None, {}, ""
