"""Bare-socket clients for the hostile-input, backpressure, churn and security tests.

Every byte sent is the test's own (no client library smooths anything over): a WebSocket client
built from a raw TCP stream, an HTTP/1.1 keep-alive connection, signed API requests over it,
and the server's resident memory read from /proc.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import sys
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from conftest import TIMEOUT, ServerProcess, signed_url
from fastrelay.wire.frames import OP_CLOSE, OP_TEXT, FrameParser, encode_frame, parse_close

MASK = b"\x5a\x17\xc3\x08"
KEY = base64.b64encode(b"fastrelay-tests!").decode()


def upgrade_request(path: str = "/app/app-key?protocol=7") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def client_frame(message: dict[str, Any] | bytes, opcode: int = OP_TEXT) -> bytes:
    payload = message if isinstance(message, bytes) else json.dumps(message).encode()
    return encode_frame(opcode, payload, MASK)


def subscribe_frame(channel: str, **data: Any) -> bytes:
    return client_frame({"event": "pusher:subscribe", "data": {"channel": channel, **data}})


class RawWs:
    """A WebSocket client on a bare TCP stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = FrameParser(1 << 26, require_mask=False)
        self.pending: list[tuple[int, bytes]] = []
        self.socket_id = ""

    @classmethod
    async def open(
        cls,
        server: ServerProcess,
        path: str = "/app/app-key?protocol=7",
        *,
        rcvbuf: int | None = None,
        sndbuf: int | None = None,
        established: bool = True,
    ) -> RawWs:
        """Connect and upgrade. ``rcvbuf``, ``sndbuf``: small kernel buffers, set before
        connecting so the window the kernel advertises stays small."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", server.port)), TIMEOUT)
        limit = 2**16 if rcvbuf is None else max(rcvbuf, 1024)
        reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
        client = cls(reader, writer)
        writer.write(upgrade_request(path))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 101 "), head
        if established:
            message = await client.recv_json()
            assert message["event"] == "pusher:connection_established", message
            client.socket_id = json.loads(message["data"])["socket_id"]
        return client

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def subscribe(self, channel: str, **data: Any) -> dict[str, Any]:
        self.send(subscribe_frame(channel, **data))
        return await self.recv_json()

    async def recv_frame(self, timeout: float = TIMEOUT) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(1 << 16), deadline - loop.time())
            if not data:
                raise EOFError("server closed TCP")
            self.pending.extend(self.parser.feed(data))
        return self.pending.pop(0)

    async def recv_json(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        opcode, payload = await self.recv_frame(timeout)
        assert opcode == OP_TEXT, (opcode, payload)
        return json.loads(payload)

    async def expect(self, event: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            message = await self.recv_json(max(0.01, deadline - loop.time()))
            if message.get("event") == event:
                return message

    async def recv_close(self, timeout: float = TIMEOUT) -> tuple[int, str]:
        """Skip data frames until the server's close frame; its (code, reason)."""
        while True:
            opcode, payload = await self.recv_frame(timeout)
            if opcode == OP_CLOSE:
                return parse_close(payload)

    async def ping_pong(self) -> None:
        """The connection still works: a pusher:ping is answered."""
        self.send(client_frame({"event": "pusher:ping", "data": {}}))
        assert (await self.expect("pusher:pong"))["data"] == {}

    def close(self) -> None:
        self.writer.close()


class HttpConn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, server: ServerProcess) -> HttpConn:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", server.port, limit=1 << 20), TIMEOUT
        )
        return cls(reader, writer)

    async def request(
        self, method: str, target: str, body: bytes = b"", headers: tuple[str, ...] = ()
    ) -> tuple[int, dict[str, str], bytes]:
        self.send(raw_request(method, target, body, headers))
        return await self.response()

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def response(self, timeout: float = TIMEOUT) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        return int(status_line.split()[1]), headers, body

    async def eof(self, timeout: float = TIMEOUT) -> bytes:
        """Everything until the server closes (fails if it does not within ``timeout``)."""
        return await asyncio.wait_for(self.reader.read(), timeout)

    def close(self) -> None:
        self.writer.close()


def raw_request(
    method: str, target: str, body: bytes = b"", headers: tuple[str, ...] = ()
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *headers]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def signed_target(
    server: ServerProcess,
    method: str,
    path: str,
    body: bytes = b"",
    params: dict[str, str] | None = None,
    **kwargs: Any,
) -> str:
    """Path and query of a signed API request (conftest.signed_url without the origin)."""
    url = urllib.parse.urlsplit(signed_url(server, method, path, body, params, **kwargs))
    return f"{url.path}?{url.query}"


async def api_call(
    conn: HttpConn, server: ServerProcess, method: str, path: str, body: bytes = b"", **kw: Any
) -> tuple[int, dict[str, str], Any]:
    """A signed request on ``conn``; (status, headers, parsed JSON body)."""
    status, headers, raw = await conn.request(
        method, signed_target(server, method, path, body, **kw), body
    )
    return status, headers, json.loads(raw) if raw else None


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc), in bytes."""
    if not sys.platform.startswith("linux"):
        pytest.skip("resident memory is read from /proc")
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


async def wait_until(
    probe: Callable[[], Awaitable[Any]], accept: Callable[[Any], bool], timeout: float = TIMEOUT
) -> Any:
    """Run ``probe`` until ``accept`` takes its result; fail with the last one after
    ``timeout``. For state only visible by asking (the server's /stats)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if accept(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"still {value!r} after {timeout}s")
        await asyncio.sleep(0.02)


async def stats(server: ServerProcess) -> dict[str, int]:
    conn = await HttpConn.open(server)
    try:
        status, _, body = await conn.request("GET", "/stats", headers=("Connection: close",))
        assert status == 200
        return json.loads(body)
    finally:
        conn.close()


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)
