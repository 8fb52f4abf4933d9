"""HTTP/1.1 on the wire (server/http.py): keep-alive, pipelining, limits, malformed input.

Raw asyncio streams against a real ``python -m fastrelay``, so every byte sent and received is
the test's own: nothing here depends on an HTTP client's habits.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest

from conftest import APP_ID, TIMEOUT, ServerProcess, http, signed_url, start_server

SMALL_LIMIT = 4096  # RELAY_MAX_REQUEST_SIZE of the small server
EVENTS = f"/apps/{APP_ID}/events"
CORS_ORIGIN = "access-control-allow-origin"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lowercase names
    body: bytes

    def json(self) -> object:
        assert self.headers["content-type"] == "application/json", self.headers
        return json.loads(self.body)


@pytest.fixture(scope="module")
def small_server() -> Iterator[ServerProcess]:
    """A server whose request bodies may not exceed SMALL_LIMIT bytes."""
    srv = start_server({"RELAY_MAX_REQUEST_SIZE": str(SMALL_LIMIT)})
    yield srv
    assert srv.stop() == 0, "\n".join(srv.lines)


class Conn:
    """One raw TCP connection to the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, *, head: bool = False) -> Answer:
        """Read one response (``head``: a HEAD answer, no body despite Content-Length)."""
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        status_line, *lines = raw.decode("latin-1").split("\r\n")
        version, status, _reason = status_line.split(" ", 2)
        assert version == "HTTP/1.1"
        headers: dict[str, str] = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = 0 if head else int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), TIMEOUT)
        return Answer(int(status), headers, body)

    async def assert_closed(self) -> None:
        """The server closed the connection and sent nothing more."""
        assert await asyncio.wait_for(self.reader.read(), TIMEOUT) == b""

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


Dial = Callable[[ServerProcess], Awaitable[Conn]]


@pytest.fixture
async def dial() -> AsyncIterator[Dial]:
    """Open raw connections (TCP_NODELAY, so small writes leave as written); closed after."""
    opened: list[Conn] = []

    async def open_(server: ServerProcess) -> Conn:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", server.port), TIMEOUT
        )
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Conn(reader, writer)
        opened.append(conn)
        return conn

    yield open_
    for conn in opened:
        await conn.close()


def request(method: str, target: str, body: bytes = b"", headers: tuple[str, ...] = ()) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: localhost", *headers]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def signed_target(
    server: ServerProcess, method: str, path: str, body: bytes = b"", **params: str
) -> str:
    """Path and signed query string, for a request line."""
    parts = urllib.parse.urlsplit(signed_url(server, method, path, body, params or None))
    return f"{parts.path}?{parts.query}"


def err(status: int, message: str) -> dict[str, object]:
    return {"error": message, "code": status}


async def assert_serves(dial: Dial, server: ServerProcess) -> None:
    """A fresh connection still gets a good answer."""
    conn = await dial(server)
    await conn.send(request("GET", "/health", headers=("Connection: close",)))
    answer = await conn.answer()
    assert (answer.status, answer.body) == (200, b"OK")
    await conn.assert_closed()


# -- keep-alive and pipelining ---------------------------------------------------------------


async def test_keep_alive(server: ServerProcess, dial: Dial) -> None:
    conn = await dial(server)
    await conn.send(request("GET", "/health"))
    first = await conn.answer()
    assert (first.status, first.headers["content-type"], first.body) == (200, "text/plain", b"OK")
    assert "connection" not in first.headers  # HTTP/1.1 stays open
    await conn.send(request("GET", signed_target(server, "GET", f"/apps/{APP_ID}/channels")))
    second = await conn.answer()
    assert second.status == 200
    assert list(second.json()) == ["channels"]  # type: ignore[call-overload]
    body = json.dumps({"name": "e", "channel": "keep-alive", "data": "x"}).encode()
    await conn.send(request("POST", signed_target(server, "POST", EVENTS, body), body))
    third = await conn.answer()
    assert (third.status, third.json()) == (200, {})
    assert "connection" not in third.headers


async def test_pipelined_requests_answered_in_order(server: ServerProcess, dial: Dial) -> None:
    conn = await dial(server)
    expected: list[tuple[int, object]] = []
    batch = b""
    for i in range(10):
        channel = f"pipe!{i}"  # invalid, so the error names it and shows the order
        if i == 4:
            batch += request("GET", "/health")
            expected.append((200, b"OK"))
        elif i % 2:
            body = json.dumps({"name": "e", "channel": channel, "data": "x" * i}).encode()
            batch += request("POST", signed_target(server, "POST", EVENTS, body), body)
            expected.append((400, err(400, f"Invalid channel name: {channel}")))
        else:
            path = f"/apps/{APP_ID}/channels/{channel}"
            batch += request("GET", signed_target(server, "GET", path))
            expected.append((400, err(400, f"Invalid channel name: {channel}")))
    await conn.send(batch)  # all ten in one write
    answers = [await conn.answer() for _ in range(10)]
    got = [(a.status, a.body if a.status == 200 else a.json()) for a in answers]
    assert got == expected
    # The connection is still usable afterwards.
    await conn.send(request("GET", "/up"))
    assert (await conn.answer()).json() == {"health": "OK"}


async def test_pipelined_after_connection_close_are_dropped(
    server: ServerProcess, dial: Dial
) -> None:
    conn = await dial(server)
    await conn.send(
        request("GET", "/health", headers=("Connection: close",)) + request("GET", "/up")
    )
    answer = await conn.answer()
    assert (answer.status, answer.headers["connection"]) == (200, "close")
    await conn.assert_closed()


# -- closing ---------------------------------------------------------------------------------


async def test_connection_close_honoured(server: ServerProcess, dial: Dial) -> None:
    conn = await dial(server)
    body = json.dumps({"name": "e", "channel": "closing", "data": "x"}).encode()
    target = signed_target(server, "POST", EVENTS, body)
    await conn.send(request("POST", target, body, headers=("Connection: close",)))
    answer = await conn.answer()
    assert (answer.status, answer.json(), answer.headers["connection"]) == (200, {}, "close")
    await conn.assert_closed()


async def test_http_1_0_closes(server: ServerProcess, dial: Dial) -> None:
    conn = await dial(server)
    await conn.send(b"GET /health HTTP/1.0\r\n\r\n")
    answer = await conn.answer()
    assert (answer.status, answer.body, answer.headers["connection"]) == (200, b"OK", "close")
    await conn.assert_closed()


async def test_http_1_0_keep_alive(server: ServerProcess, dial: Dial) -> None:
    """An HTTP/1.0 client asking for keep-alive must be told it got it, or it waits for EOF."""
    conn = await dial(server)
    await conn.send(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    answer = await conn.answer()
    assert (answer.status, answer.body) == (200, b"OK")
    assert answer.headers["connection"].lower() == "keep-alive"
    await conn.send(b"GET /up HTTP/1.0\r\n\r\n")
    second = await conn.answer()
    assert (second.json(), second.headers["connection"]) == ({"health": "OK"}, "close")
    await conn.assert_closed()


# -- limits ----------------------------------------------------------------------------------


async def test_body_over_limit(small_server: ServerProcess, dial: Dial) -> None:
    conn = await dial(small_server)
    body = b'{"pad":"' + b"x" * SMALL_LIMIT + b'"}'
    await conn.send(request("POST", EVENTS, body))
    answer = await conn.answer()
    assert (answer.status, answer.json()) == (413, err(413, "The payload size is too big."))
    assert (answer.headers["connection"], answer.headers[CORS_ORIGIN]) == ("close", "*")
    await conn.assert_closed()
    await assert_serves(dial, small_server)


async def test_body_at_limit_is_read(small_server: ServerProcess, dial: Dial) -> None:
    conn = await dial(small_server)
    prefix = b'{"name":"e","channel":"at-limit","data":"'
    body = prefix + b"x" * (SMALL_LIMIT - len(prefix) - 2) + b'"}'
    assert len(body) == SMALL_LIMIT
    await conn.send(request("POST", signed_target(small_server, "POST", EVENTS, body), body))
    answer = await conn.answer()
    assert (answer.status, answer.json()) == (200, {})


async def test_declared_length_over_limit_answered_at_once(
    small_server: ServerProcess, dial: Dial
) -> None:
    """Content-Length alone decides: no need to wait for (or read) a body that is too big."""
    conn = await dial(small_server)
    await conn.send(
        b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n{"
    )
    answer = await conn.answer()
    assert (answer.status, answer.json()) == (413, err(413, "The payload size is too big."))
    await conn.assert_closed()


async def test_large_body_over_limit_is_answered_not_reset(
    small_server: ServerProcess, dial: Dial
) -> None:
    """A client still sending a big body must get the 413, not a connection reset."""
    conn = await dial(small_server)
    body = b"x" * (8 * 1024 * 1024)
    sending = asyncio.ensure_future(conn.send(request("POST", EVENTS, body)))
    answer = await conn.answer()
    assert (answer.status, answer.json()) == (413, err(413, "The payload size is too big."))
    await asyncio.wait_for(sending, TIMEOUT)
    await conn.assert_closed()


def test_large_body_over_limit_with_a_plain_client(small_server: ServerProcess) -> None:
    status, headers, raw = http("POST", small_server.http + EVENTS, b"x" * (2 * 1024 * 1024))
    assert (status, json.loads(raw)) == (413, err(413, "The payload size is too big."))
    assert headers["Content-Type"] == "application/json"


async def test_expect_100_continue(small_server: ServerProcess, dial: Dial) -> None:
    conn = await dial(small_server)
    body = json.dumps({"name": "e", "channel": "expect", "data": "x"}).encode()
    target = signed_target(small_server, "POST", EVENTS, body)
    head = request("POST", target, body, headers=("Expect: 100-continue",))[: -len(body)]
    await conn.send(head)
    interim = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    await conn.send(body)
    answer = await conn.answer()
    assert (answer.status, answer.json()) == (200, {})
    # Too big: the final answer comes instead of the go-ahead.
    await conn.send(
        b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"Content-Length: %d\r\n\r\n" % (SMALL_LIMIT + 1)
    )
    answer = await conn.answer()
    assert (answer.status, answer.json()) == (413, err(413, "The payload size is too big."))
    await conn.assert_closed()


async def test_chunked_body(small_server: ServerProcess, dial: Dial) -> None:
    conn = await dial(small_server)
    body = json.dumps({"name": "e", "channel": "chunked", "data": "x"}).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:]))
    head = f"POST {signed_target(small_server, 'POST', EVENTS, body)} HTTP/1.1\r\n"
    await conn.send(
        head.encode() + b"Host: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    )
    answer = await conn.answer()
    assert (answer.status, answer.json()) == (200, {})
    # Chunked bodies count against the limit too.
    big = b"a" * 3000
    await conn.send(
        b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + (b"%x\r\n%s\r\n" % (len(big), big)) * 2
        + b"0\r\n\r\n"
    )
    answer = await conn.answer()
    assert (answer.status, answer.json()) == (413, err(413, "The payload size is too big."))
    await conn.assert_closed()


async def test_header_flood(server: ServerProcess, dial: Dial) -> None:
    many = tuple(f"X-Flood-{i}: {i}" for i in range(150))
    conn = await dial(server)
    await conn.send(request("GET", "/health", headers=many))
    answer = await conn.answer()
    assert (answer.status, answer.json()) == (431, err(431, "Too many headers"))
    assert answer.headers[CORS_ORIGIN] == "*"
    await conn.assert_closed()
    # Just under the limit (with Host) is fine.
    conn = await dial(server)
    await conn.send(request("GET", "/health", headers=many[:99]))
    answer = await conn.answer()
    assert (answer.status, answer.body) == (200, b"OK")


# -- malformed and unusual input -------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"NOT A REQUEST\r\n\r\n",
        b"GET\r\n\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
        b"GET /health HTTP/1.1\r\nBad Header Line\r\n\r\n",
        b"POST /apps/1/events HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"POST /apps/1/events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["words", "no-target", "binary", "header-line", "bad-length", "bad-chunk"],
)
async def test_malformed_request(server: ServerProcess, dial: Dial, raw: bytes) -> None:
    conn = await dial(server)
    await conn.send(raw)
    answer = await conn.answer()
    assert (answer.status, answer.json()) == (400, err(400, "Bad request"))
    assert (answer.headers["connection"], answer.headers[CORS_ORIGIN]) == ("close", "*")
    await conn.assert_closed()
    await assert_serves(dial, server)


async def test_malformed_after_good_request(server: ServerProcess, dial: Dial) -> None:
    conn = await dial(server)
    await conn.send(request("GET", "/health") + b"BROKEN\r\n\r\n")
    assert (await conn.answer()).body == b"OK"
    answer = await conn.answer()
    assert (answer.status, answer.json()) == (400, err(400, "Bad request"))
    await conn.assert_closed()


async def test_one_byte_writes(server: ServerProcess, dial: Dial) -> None:
    conn = await dial(server)
    body = json.dumps({"name": "e", "channel": "trickle", "data": "slow"}).encode()
    raw = request("POST", signed_target(server, "POST", EVENTS, body), body)
    raw += request("GET", "/health")
    for i in range(len(raw)):
        await conn.send(raw[i : i + 1])
    first = await conn.answer()
    assert (first.status, first.json()) == (200, {})
    second = await conn.answer()
    assert (second.status, second.body) == (200, b"OK")


async def test_head_request(server: ServerProcess, dial: Dial) -> None:
    conn = await dial(server)
    await conn.send(request("HEAD", "/health") + request("GET", "/health"))
    head = await conn.answer(head=True)
    assert (head.status, head.headers["content-length"], head.body) == (200, "2", b"")
    get = await conn.answer()  # the HEAD answer carried no body bytes
    assert (get.status, get.body) == (200, b"OK")


async def test_websocket_path_without_upgrade(server: ServerProcess, dial: Dial) -> None:
    conn = await dial(server)
    await conn.send(request("GET", "/app/app-key?protocol=7"))
    answer = await conn.answer()
    assert (answer.status, answer.json()) == (426, err(426, "Upgrade Required"))
    assert (answer.headers["upgrade"], answer.headers[CORS_ORIGIN]) == ("websocket", "*")
    # A plain-HTTP refusal does not cost the connection.
    await conn.send(request("GET", "/health"))
    assert (await conn.answer()).body == b"OK"


async def test_options_and_unknown_route(server: ServerProcess, dial: Dial) -> None:
    conn = await dial(server)
    await conn.send(request("OPTIONS", EVENTS) + request("GET", "/missing"))
    options = await conn.answer()
    assert (options.status, options.body, options.headers[CORS_ORIGIN]) == (204, b"", "*")
    assert "content-length" not in options.headers
    missing = await conn.answer()
    assert (missing.status, missing.json()) == (404, err(404, "Not found"))
