"""Hostile input against a real server: every case gets its documented answer, nobody else
notices, and the server is as good as new afterwards.

- HTTP API, signed so the bodies reach validation: garbage JSON, wrong types, huge numbers, deep
  nesting, invalid UTF-8 → 400 ``{"error","code"}``; oversized → 413 (HTTP_API.md §7).
- HTTP transport: a header bigger than 64 KiB → 431; slowloris (a request trickled in, or
  never finished) → 408 after ``RELAY_HTTP_REQUEST_TIMEOUT`` while others are served; 10,000
  pipelined requests on one connection → all answered, in order.
- WebSocket: malformed frames and messages on one connection → its documented close code or
  ``pusher:error``; an unrelated connection keeps receiving and answering throughout.
- Churn: connect/subscribe/disconnect cycles over bare sockets; afterwards ``/stats`` is back
  to zero and the server's resident memory is where it was (FASTRELAY_CHURN_CYCLES sets the
  count: 20,000 in CI, 100,000 for the full run).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from rawwire import (
    HttpConn,
    RawWs,
    api_call,
    client_frame,
    env_int,
    raw_request,
    rss_bytes,
    stats,
    subscribe_frame,
    upgrade_request,
    wait_until,
)

from conftest import APP_ID, TIMEOUT, ServerProcess, start_server
from fastrelay.wire.frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT, encode_close

EVENTS = f"/apps/{APP_ID}/events"
BATCH = f"/apps/{APP_ID}/batch_events"
BAD_DATA = {"error": "The received data is incorrect", "code": 400}
REQUEST_TIMEOUT = 1.0  # RELAY_HTTP_REQUEST_TIMEOUT of the hostile server


def err(code: int, message: str) -> dict[str, Any]:
    return {"error": message, "code": code}


@pytest.fixture(scope="module")
def hostile() -> Iterator[ServerProcess]:
    """One server for the cases below, with a short request timeout and a 256 KiB body limit."""
    srv = start_server(
        {"RELAY_HTTP_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT), "RELAY_MAX_REQUEST_SIZE": "262144"}
    )
    yield srv
    assert srv.stop() == 0, "\n".join(srv.lines)


@pytest.fixture
async def bystander(hostile: ServerProcess) -> AsyncIterator[RawWs]:
    """An unrelated connection, subscribed to "bystander"; after the test it must still get a
    published event and answer a ping, and the server must still serve HTTP."""
    client = await RawWs.open(hostile)
    assert (await client.subscribe("bystander"))["event"].endswith("subscription_succeeded")
    yield client
    conn = await HttpConn.open(hostile)
    body = json.dumps({"name": "still-here", "channel": "bystander", "data": "1"}).encode()
    assert (await api_call(conn, hostile, "POST", EVENTS, body))[0] == 200
    assert (await client.expect("still-here"))["data"] == "1"
    await client.ping_pong()
    assert (await conn.request("GET", "/health"))[:3:2] == (200, b"OK")
    conn.close()
    client.close()


# -- the HTTP API: bodies that reach validation ----------------------------------------------


def deep(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


HOSTILE_BODIES: dict[str, tuple[str, bytes, int, dict[str, Any]]] = {
    "not-json": (EVENTS, b"{not json", 400, BAD_DATA),
    "empty": (EVENTS, b" ", 400, BAD_DATA),
    "array": (EVENTS, b"[1,2,3]", 400, BAD_DATA),
    "string": (EVENTS, b'"event"', 400, BAD_DATA),
    "invalid-utf8": (EVENTS, b'{"name":"e\xff","channel":"c","data":"x"}', 400, BAD_DATA),
    "lone-surrogate": (EVENTS, b'{"name":"\\ud800","channel":"c","data":"x"}', 400, BAD_DATA),
    "nan": (EVENTS, b'{"name":"e","channel":"c","data":NaN}', 400, BAD_DATA),
    "1e400": (EVENTS, b'{"name":"e","channel":"c","data":1e400}', 400, BAD_DATA),
    "100k-brackets": (EVENTS, b"[" * 100_000, 400, BAD_DATA),
    "deep-data": (
        EVENTS,
        f'{{"name":"e","channel":"c","data":{deep(200)}}}'.encode(),
        400,
        BAD_DATA,
    ),
    "deep-past-orjson": (EVENTS, f'{{"data":{deep(1100)}}}'.encode(), 400, BAD_DATA),
    "name-number": (
        EVENTS,
        b'{"name":12345678901234567890123,"channel":"c","data":"x"}',
        400,
        err(400, "The event name is required"),
    ),
    "name-object": (
        EVENTS,
        b'{"name":{"a":1},"channel":"c","data":"x"}',
        400,
        err(400, "The event name is required"),
    ),
    "channels-string": (
        EVENTS,
        b'{"name":"e","channels":"c","data":"x"}',
        400,
        err(400, "The channels field is required"),
    ),
    "channels-numbers": (
        EVENTS,
        b'{"name":"e","channels":[1e308],"data":"x"}',
        400,
        err(400, "Each channel must be a string"),
    ),
    "channels-nested": (
        EVENTS,
        b'{"name":"e","channels":[["c"]],"data":"x"}',
        400,
        err(400, "Each channel must be a string"),
    ),
    "socket-id-number": (
        EVENTS,
        b'{"name":"e","channel":"c","data":"x","socket_id":1.5}',
        400,
        err(400, "Invalid socket_id"),
    ),
    "no-data": (EVENTS, b'{"name":"e","channel":"c"}', 400, err(400, "The data field is required")),
    "data-too-big": (
        EVENTS,
        json.dumps({"name": "e", "channel": "c", "data": "x" * (100 * 1024 + 1)}).encode(),
        413,
        err(413, "The event data should be less than 100 KB."),
    ),
    "batch-object": (
        BATCH,
        b'{"batch":{"0":{}}}',
        400,
        err(400, "The batch field must be an array"),
    ),
    "batch-item-number": (BATCH, b'{"batch":[7]}', 400, BAD_DATA),
    "batch-deep": (BATCH, f'{{"batch":{deep(150)}}}'.encode(), 400, BAD_DATA),
    "auth-deep-channel-data": (
        f"/apps/{APP_ID}/auth",
        json.dumps(
            {"socket_id": "1.1", "channel_name": "presence-x", "channel_data": deep(300)}
        ).encode(),
        400,
        err(400, "The channel_data field must be a JSON object"),
    ),
}


@pytest.mark.parametrize("case", HOSTILE_BODIES)
async def test_hostile_api_bodies(hostile: ServerProcess, bystander: RawWs, case: str) -> None:
    path, body, status, answer = HOSTILE_BODIES[case]
    conn = await HttpConn.open(hostile)
    got_status, headers, got = await api_call(conn, hostile, "POST", path, body)
    assert (got_status, got) == (status, answer)
    assert headers["content-type"] == "application/json"
    # The connection survives a refused body (only transport errors close it).
    assert (await conn.request("GET", "/health"))[0] == 200
    conn.close()


async def test_huge_numbers_in_data_are_serialized(
    hostile: ServerProcess, bystander: RawWs
) -> None:
    # A number past 64 bits is a float to JSON parsers; non-string data is sent as its JSON.
    conn = await HttpConn.open(hostile)
    body = b'{"name":"big","channel":"bystander","data":{"n":123456789012345678901234567890}}'
    assert (await api_call(conn, hostile, "POST", EVENTS, body))[::2] == (200, {})
    # orjson versions spell the exponent differently ("e+29", "e29"): compare the value.
    data = (await bystander.expect("big"))["data"]
    assert isinstance(data, str)
    assert json.loads(data) == {"n": 1.2345678901234568e29}
    # Nesting up to the bound is fine.
    body = f'{{"name":"nest","channel":"bystander","data":{deep(100)}}}'.encode()
    assert (await api_call(conn, hostile, "POST", EVENTS, body))[::2] == (200, {})
    assert (await bystander.expect("nest"))["data"] == deep(100)
    conn.close()


async def test_body_over_the_limit_is_413(hostile: ServerProcess, bystander: RawWs) -> None:
    conn = await HttpConn.open(hostile)
    body = b'{"name":"e","channel":"c","data":"' + b"x" * 300_000 + b'"}'
    status, _, got = await api_call(conn, hostile, "POST", EVENTS, body)
    assert (status, got) == (413, err(413, "The payload size is too big."))
    conn.close()


@pytest.mark.parametrize(
    "path", ["/apps/1/channels/%ff%fe", "/apps/1/channels/" + "a" * 5000, "/apps/1/channels/%00"]
)
async def test_hostile_paths(hostile: ServerProcess, bystander: RawWs, path: str) -> None:
    conn = await HttpConn.open(hostile)
    status, _, got = await api_call(conn, hostile, "GET", path)
    assert status == 400 and got["code"] == 400 and got["error"].startswith("Invalid channel name")
    conn.close()


# -- the HTTP transport ----------------------------------------------------------------------


async def test_one_huge_header_is_431(hostile: ServerProcess, bystander: RawWs) -> None:
    # httptools keeps a header in memory until it ends; the server must cut it short.
    conn = await HttpConn.open(hostile)
    conn.send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Huge: ")

    async def flood() -> None:
        for _ in range(64):  # 4 MiB if nothing stops it
            conn.send(b"a" * 65536)
            await conn.writer.drain()

    flooding = asyncio.ensure_future(flood())
    status, headers, body = await conn.response()
    assert (status, json.loads(body)) == (431, err(431, "Request header fields too large"))
    assert headers["connection"] == "close"
    flooding.cancel()
    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
        await flooding
    conn.close()


async def test_slowloris_times_out_and_others_are_served(
    hostile: ServerProcess, bystander: RawWs
) -> None:
    loop = asyncio.get_running_loop()
    # Trickled: one byte every 50 ms never completes the head within the timeout...
    trickler = await HttpConn.open(hostile)
    # ...a request cut short of its body...
    half = await HttpConn.open(hostile)
    half.send(b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    # ...and a connection that says nothing.
    silent = await HttpConn.open(hostile)
    started = loop.time()

    async def trickle() -> None:
        for byte in raw_request("GET", "/health", headers=("X-Pad: " + "p" * 200,)):
            trickler.send(bytes([byte]))
            await asyncio.sleep(0.05)  # the attack itself: a byte at a time, slowly

    trickling = asyncio.ensure_future(trickle())
    # Others are served meanwhile, promptly.
    for _ in range(20):
        conn = await HttpConn.open(hostile)
        assert (await conn.request("GET", "/health"))[0] == 200
        conn.close()
    assert loop.time() - started < REQUEST_TIMEOUT
    for client in (trickler, half):
        status, headers, body = await client.response(timeout=REQUEST_TIMEOUT + TIMEOUT)
        assert (status, json.loads(body)) == (408, err(408, "Request timeout"))
        assert headers["connection"] == "close"
    assert await silent.eof() == b""  # nothing was asked, nothing is answered
    elapsed = loop.time() - started
    assert REQUEST_TIMEOUT * 0.9 <= elapsed < REQUEST_TIMEOUT + 2, elapsed
    trickling.cancel()
    for client in (trickler, half, silent):
        client.close()


async def test_idle_keep_alive_is_not_timed_out(hostile: ServerProcess, bystander: RawWs) -> None:
    # The deadline covers a request being received, not the wait between requests.
    conn = await HttpConn.open(hostile)
    assert (await conn.request("GET", "/health"))[0] == 200
    await bystander.ping_pong()
    started = asyncio.get_running_loop().time()
    for _ in range(3):  # idle longer than the timeout, with the bystander as the clock
        await asyncio.sleep(REQUEST_TIMEOUT / 2)
        await bystander.ping_pong()
    assert asyncio.get_running_loop().time() - started > REQUEST_TIMEOUT
    assert (await conn.request("GET", "/health"))[0] == 200
    conn.close()


async def test_ten_thousand_pipelined_requests(hostile: ServerProcess, bystander: RawWs) -> None:
    count = 10_000
    conn = await HttpConn.open(hostile)
    # Mostly /health; every 100th is /up, so the order of the answers is checked too.
    requests = [
        raw_request("GET", "/up" if i % 100 == 0 else "/health", headers=()) for i in range(count)
    ]

    async def send() -> None:
        conn.send(b"".join(requests))
        await conn.writer.drain()

    sending = asyncio.ensure_future(send())
    for i in range(count):
        status, _, body = await conn.response()
        assert status == 200
        assert body == (b'{"health":"OK"}' if i % 100 == 0 else b"OK"), (i, body)
    await sending
    assert (await conn.request("GET", "/health"))[0] == 200
    conn.close()


# -- WebSocket: broken frames and messages on one connection ---------------------------------


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0):
    """A client frame (payload under 126 bytes) that may break the rules: any opcode, not
    final, reserved bits, unmasked."""
    key = b"\x01\x02\x03\x04"
    head = bytes(((0x80 if fin else 0) | rsv << 4 | opcode, (0x80 if mask else 0) | len(payload)))
    if not mask:
        return head + payload
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


MALFORMED_FRAMES = {
    "unmasked": (frame(OP_TEXT, b"{}", mask=False), 1002),
    "rsv-bits": (frame(OP_TEXT, b"{}", rsv=4), 1002),
    "opcode-3": (frame(3, b"{}"), 1002),
    "lone-continuation": (frame(OP_CONT, b"{}"), 1002),
    "fragmented-ping": (frame(OP_PING, b"", fin=False), 1002),
    "text-in-text": (frame(OP_TEXT, b"{", fin=False) + frame(OP_TEXT, b"}"), 1002),
    "bad-utf8": (frame(OP_TEXT, b'{"event":"\xff"}'), 1007),
    "surrogate": (frame(OP_TEXT, b'"\xed\xa0\x80"'), 1007),
    "length-lie-64": (bytes((0x81, 0xFF)) + (1 << 62).to_bytes(8, "big") + b"mask", 1009),
    "length-msb": (bytes((0x81, 0xFF)) + (1 << 63).to_bytes(8, "big") + b"mask", 1002),
    "length-not-shortest": (bytes((0x81, 0xFE, 0, 3)) + b"\0\0\0\0{}}", 1002),
    "close-bad-code": (frame(OP_CLOSE, (1005).to_bytes(2, "big")), 1002),
    "close-one-byte": (frame(OP_CLOSE, b"\x03"), 1002),
    "close-bad-reason": (frame(OP_CLOSE, b"\x03\xe8\xff"), 1007),
    "garbage": (b"\xde\xad\xbe\xef" * 64, 1002),
}


@pytest.mark.parametrize("case", MALFORMED_FRAMES)
async def test_malformed_frames(hostile: ServerProcess, bystander: RawWs, case: str) -> None:
    data, code = MALFORMED_FRAMES[case]
    attacker = await RawWs.open(hostile)
    await attacker.subscribe("bystander")
    attacker.send(data)
    assert (await attacker.recv_close())[0] == code
    attacker.writer.write_eof()  # a failed connection: the client hangs up too
    assert await asyncio.wait_for(attacker.reader.read(), TIMEOUT) == b""
    attacker.close()


async def test_close_followed_by_garbage_is_still_a_close(
    hostile: ServerProcess, bystander: RawWs
) -> None:
    # Nothing after a Close is parsed (RFC 6455 §5.5.1): the close is echoed, not a 1002.
    attacker = await RawWs.open(hostile)
    attacker.send(encode_close(4000, "bye", b"\x01\x02\x03\x04") + b"\xff" * 100)
    assert await attacker.recv_close() == (4000, "")
    attacker.close()


MALFORMED_MESSAGES: dict[str, tuple[bytes, Any]] = {
    "not-json": (b"{nope", "Invalid message format"),
    "array": (b"[]", "Invalid message format"),
    "event-number": (b'{"event":1e400}', "Invalid message format"),
    "deep": (f'{{"event":"client-x","data":{deep(500)}}}'.encode(), "Invalid message format"),
    "100k-brackets": (b"[" * 100_000, "Invalid message format"),
    "subscribe-no-data": (b'{"event":"pusher:subscribe"}', "missing channel"),
    "subscribe-channel-number": (
        b'{"event":"pusher:subscribe","data":{"channel":7}}',
        "missing channel",
    ),
    "subscribe-data-string": (b'{"event":"pusher:subscribe","data":"[1]"}', "missing channel"),
    "client-event-no-channel": (b'{"event":"client-x","data":{}}', "Invalid message format"),
    "client-event-public": (
        b'{"event":"client-x","channel":"bystander","data":{"n":1e308}}',
        4301,
    ),
    "binary-not-utf8": (b"\xff\xfe", "Invalid message format"),
}


@pytest.mark.parametrize("case", MALFORMED_MESSAGES)
async def test_malformed_messages(hostile: ServerProcess, bystander: RawWs, case: str) -> None:
    payload, expected = MALFORMED_MESSAGES[case]
    attacker = await RawWs.open(hostile)
    await attacker.subscribe("bystander")
    opcode = OP_BINARY if case == "binary-not-utf8" else OP_TEXT
    attacker.send(client_frame(payload, opcode))
    error = (await attacker.expect("pusher:error"))["data"]
    if isinstance(expected, int):
        assert error["code"] == expected
    else:
        assert error["code"] is None and expected in error["message"], error
    await attacker.ping_pong()  # not fatal: the connection stays open
    attacker.close()


async def test_soketi_crash_message_then_normal_use(
    hostile: ServerProcess, bystander: RawWs
) -> None:
    # soketi exits on a pusher:subscribe without data; here it is one error among others.
    attacker = await RawWs.open(hostile)
    for _ in range(50):
        attacker.send(client_frame(b'{"event":"pusher:subscribe"}'))
    for _ in range(50):
        assert (await attacker.expect("pusher:error"))["data"]["code"] is None
    assert (await attacker.subscribe("after"))["event"].endswith("subscription_succeeded")
    attacker.close()


# -- churn -----------------------------------------------------------------------------------

CLOSE_FRAME = encode_close(1000, "", b"\x0f\x0f\x0f\x0f")
RST = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")  # SO_LINGER on, 0 s


async def churn(port: int, cycles: int, first: int = 0, workers: int = 32) -> None:
    """Connect, subscribe to a fresh channel, and go: with a close frame, a plain FIN or a
    reset, in turn. Bare non-blocking sockets, the upgrade and the subscribe in one write."""
    loop = asyncio.get_running_loop()
    handshake = upgrade_request()
    numbers = iter(range(first, first + cycles))

    async def cycle(n: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, handshake + subscribe_frame(f"churn-{n}"))
            seen = b""
            while b"subscription_succeeded" not in seen:
                data = await loop.sock_recv(sock, 4096)
                if not data:
                    raise AssertionError(f"closed during cycle {n}: {seen!r}")
                seen = seen[-64:] + data
            if n % 3 == 0:
                await loop.sock_sendall(sock, CLOSE_FRAME)
            elif n % 3 == 2:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
        finally:
            sock.close()

    async def worker() -> None:
        for n in numbers:
            await asyncio.wait_for(cycle(n), TIMEOUT)

    await asyncio.gather(*(worker() for _ in range(workers)))


def run_loop(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.run(coro)
    return uvloop.run(coro)


def test_churn_leaves_nothing_behind(make_server) -> None:
    cycles = env_int("FASTRELAY_CHURN_CYCLES", 20_000)
    server = make_server()

    async def settled() -> dict[str, int]:
        return await wait_until(
            lambda: stats(server), lambda s: s == {"connections": 0, "channels": 0}
        )

    run_loop(churn(server.port, 3000))  # warm up: allocator pools, the event log's ring
    run_loop(settled())
    before = rss_bytes(server.proc.pid)
    started = time.monotonic()
    run_loop(churn(server.port, cycles // 2, 10_000_000))
    run_loop(settled())
    middle = rss_bytes(server.proc.pid)
    run_loop(churn(server.port, cycles - cycles // 2, 20_000_000))
    run_loop(settled())
    elapsed = time.monotonic() - started
    after = rss_bytes(server.proc.pid)
    print(
        f"\nchurn: {cycles} cycles in {elapsed:.1f}s ({cycles / elapsed:.0f}/s); RSS before"
        f" {before // 1024} KiB, halfway {middle // 1024} KiB, after {after // 1024} KiB"
        f" ({(after - before) // 1024:+d} KiB)"
    )
    # A leak of 200 bytes a cycle would show as 4 MB over 20,000 cycles; the second half,
    # with every pool already warm, must not grow on its own.
    assert after - before < 4 * 1024 * 1024, (before, middle, after)
    assert after - middle < 2 * 1024 * 1024, (before, middle, after)
