"""Signed Pusher HTTP API calls over keep-alive HTTP/1.1, for load generation.

:class:`RestClient` keeps one TCP connection open and sends one request at a time on it (no
pipelining), so the requests of one client reach the server in order. A server that closes the
connection after a response (``Connection: close``, as Soketi does after every API call) is
followed: the next request opens a new connection, and :attr:`RestClient.reconnects` counts
them. Responses are parsed by ``httptools``; requests are signed with
:func:`fastrelay.protocol.signing.sign` exactly as the Pusher server libraries sign them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any, cast

import httptools

from ..protocol.signing import sign, string_to_sign

__all__ = ["PublishRequests", "RestClient", "RestError", "signed_request"]


class RestError(Exception):
    """A request that got no response (connection refused, reset or closed mid-request)."""


def signed_request(
    method: str,
    path: str,
    body: bytes,
    *,
    host: str,
    port: int,
    key: str,
    secret: bytes,
    timestamp: int | None = None,
) -> bytes:
    """The complete bytes of one signed request (HTTP_API.md §2): line, headers and body."""
    params = {
        "auth_key": key,
        "auth_timestamp": str(int(time.time()) if timestamp is None else timestamp),
        "auth_version": "1.0",
    }
    if body:
        params["body_md5"] = hashlib.md5(body).hexdigest()
    query = "&".join(f"{name}={params[name]}" for name in sorted(params))
    signature = sign(secret, string_to_sign(method, path, params))
    head = (
        f"{method} {path}?{query}&auth_signature={signature} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Connection: keep-alive\r\n"
    )
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


class PublishRequests:
    """Builds signed ``POST /apps/{id}/events`` requests for one target."""

    __slots__ = ("_cache", "host", "key", "path", "port", "secret")

    def __init__(
        self, host: str, port: int, app_id: str, key: str, secret: str, prefix: str = ""
    ) -> None:
        self.host = host
        self.port = port
        self.key = key
        self.secret = secret.encode()
        self.path = f"{prefix}/apps/{app_id}/events"
        self._cache: tuple[int, bytes, bytes] | None = None

    def build(self, channel: str, event: str, data: str, socket_id: str | None = None) -> bytes:
        item: dict[str, Any] = {"name": event, "channel": channel, "data": data}
        if socket_id is not None:
            item["socket_id"] = socket_id
        body = json.dumps(item, separators=(",", ":")).encode()
        return signed_request(
            "POST",
            self.path,
            body,
            host=self.host,
            port=self.port,
            key=self.key,
            secret=self.secret,
        )

    def cached(self, channel: str, event: str, data: str) -> bytes:
        """The same publish, signed again only when the clock moves to a new second (for the
        ``rest`` scenario, where the load generator must cost far less than the server)."""
        now = int(time.time())
        cache = self._cache
        body = json.dumps(
            {"name": event, "channel": channel, "data": data}, separators=(",", ":")
        ).encode()
        if cache is None or cache[0] != now or cache[1] != body:
            request = signed_request(
                "POST",
                self.path,
                body,
                host=self.host,
                port=self.port,
                key=self.key,
                secret=self.secret,
                timestamp=now,
            )
            self._cache = cache = (now, body, request)
        return cache[2]


class _HttpProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection; one outstanding request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.keep_alive = True
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # pragma: no cover - never asked for
            pass
        except httptools.HttpParserError as exc:
            self._finish_error(f"bad HTTP response: {exc}")
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._finish_error(f"connection closed: {exc}" if exc else "connection closed")

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()
        body = b"".join(self._body)
        self._body = []
        waiter = self._waiter
        self._waiter = None
        if not self.keep_alive and self.transport is not None:
            self.closed = True
            self.transport.close()
        if waiter is not None and not waiter.done():
            waiter.set_result((status, body))

    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None and self._waiter is None
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self.transport.write(request)
        return waiter

    def _finish_error(self, reason: str) -> None:
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(RestError(reason))


class RestClient:
    """Sequential requests to one server over a kept-alive connection (reopened if closed)."""

    def __init__(self, host: str, port: int, *, local_host: str | None = None) -> None:
        self.host = host
        self.port = port
        self.local_host = local_host
        self.reconnects = 0
        self._conn: _HttpProtocol | None = None
        self._opened = 0

    async def _connection(self) -> _HttpProtocol:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        loop = asyncio.get_running_loop()
        local_addr = (self.local_host, 0) if self.local_host else None
        _transport, conn = await loop.create_connection(
            _HttpProtocol, self.host, self.port, local_addr=local_addr
        )
        self._opened += 1
        if self._opened > 1:
            self.reconnects += 1
        self._conn = conn
        return conn

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send one complete request; returns ``(status, body)``. Raises :class:`RestError`."""
        try:
            conn = await self._connection()
        except OSError as exc:
            raise RestError(f"cannot connect: {exc}") from None
        return await conn.send(request)

    def close(self) -> None:
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.close()
        self._conn = None
