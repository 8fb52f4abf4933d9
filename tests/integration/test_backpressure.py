"""Backpressure against a real server: a client that stops reading is cut off, nobody else slows.

The slow client completes the handshake, subscribes, and then never reads again, with a small
receive buffer so the kernel soon stops taking data for it. A reader on the same channel reads
normally. The server (with a small ``RELAY_WRITE_BUFFER_HIGH_WATER``) must deliver everything
to the reader, in order; close the slow one (4100 "Client is too slow: outgoing buffer over the
limit", then TCP aborted when that close cannot be flushed within a second); keep its memory
bounded (no copy of the stream queued for the slow client); and keep answering everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import datetime

from rawwire import HttpConn, RawWs, api_call, client_frame, rss_bytes, stats

from conftest import TIMEOUT, ServerProcess

HIGH_WATER = 256 * 1024
EVENTS = 2000
SIZE = 8 * 1024
BATCH = 10  # the default RELAY_MAX_BATCH_SIZE
CHANNEL = "firehose"
PONG = b'{"event":"pusher:pong","data":{}}'


def log_time(line: str) -> float:
    """The Unix time of a server log line ("2026-01-02 03:04:05,678 LEVEL ...", local time)."""
    stamp = datetime.strptime(" ".join(line.split()[:2]), "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


async def read_all(client: RawWs, count: int) -> list[int]:
    """The sequence numbers of ``count`` events on CHANNEL, in arrival order."""
    seen: list[int] = []
    while len(seen) < count:
        message = await client.recv_json()
        if message.get("channel") == CHANNEL and message["event"] == "tick":
            seen.append(json.loads(message["data"])["n"])
    return seen


async def publish(server: ServerProcess, first: int, count: int) -> None:
    """``count`` events of SIZE bytes in batches, one request after the other."""
    conn = await HttpConn.open(server)
    pad = "x" * (SIZE - 40)
    try:
        for start in range(first, first + count, BATCH):
            batch = [
                {"name": "tick", "channel": CHANNEL, "data": json.dumps({"n": n, "pad": pad})}
                for n in range(start, min(start + BATCH, first + count))
            ]
            body = json.dumps({"batch": batch}).encode()
            status, _, answer = await api_call(conn, server, "POST", "/apps/1/batch_events", body)
            assert (status, answer) == (200, {}), answer
    finally:
        conn.close()


async def drain_until_closed(client: RawWs) -> tuple[int, list[tuple[int, bytes]]]:
    """Read what the kernel still holds for the slow client until the server's RST or FIN."""
    received = 0
    frames: list[tuple[int, bytes]] = []
    try:
        while True:
            data = await asyncio.wait_for(client.reader.read(1 << 16), TIMEOUT)
            if not data:
                break
            received += len(data)
            frames.extend(client.parser.feed(data))
    except ConnectionResetError:
        pass
    return received, frames


async def test_slow_consumer_is_cut_off_and_others_get_everything(make_server) -> None:
    server = make_server({"RELAY_WRITE_BUFFER_HIGH_WATER": str(HIGH_WATER)})
    reader = await RawWs.open(server)
    assert (await reader.subscribe(CHANNEL))["event"] == "pusher_internal:subscription_succeeded"
    slow = await RawWs.open(server, rcvbuf=4096)
    assert (await slow.subscribe(CHANNEL))["event"] == "pusher_internal:subscription_succeeded"
    # Warm up (allocator pools, code paths) before the memory baseline.
    received = asyncio.ensure_future(read_all(reader, 50))
    await publish(server, 0, 50)
    assert await received == list(range(50))
    assert (await stats(server))["connections"] == 2
    before = rss_bytes(server.proc.pid)

    started = time.monotonic()
    wall_started = time.time()
    received = asyncio.ensure_future(read_all(reader, EVENTS))
    await publish(server, 50, EVENTS)
    assert await asyncio.wait_for(received, TIMEOUT) == list(range(50, 50 + EVENTS))
    delivered = time.monotonic() - started

    # The slow client was cut off with 4100, and only it: it left the hub at once, its TCP
    # was aborted a second later (it read nothing, so its close could not be flushed).
    closing = await asyncio.to_thread(server.wait_for_log, f"closing {slow.socket_id}: too slow")
    assert "(4100)" in closing
    assert (await stats(server))["connections"] == 1
    aborted = await asyncio.to_thread(server.wait_for_log, f"aborting {slow.socket_id}:")
    overflow_at = log_time(closing) - wall_started
    grace = log_time(aborted) - log_time(closing)
    assert 0.9 <= grace <= 1.9, grace
    got, frames = await drain_until_closed(slow)
    assert got < EVENTS * SIZE // 2, got  # what the kernels held, then the reset
    for opcode, payload in frames:  # whatever it got is well-formed; a close says 4100
        if opcode == 8:
            assert payload[:2] == (4100).to_bytes(2, "big"), payload
    # Its buffer was freed, not kept: the server grew by far less than the 16 MB it was sent.
    after = rss_bytes(server.proc.pid)
    growth = after - before
    assert growth < 8 * 1024 * 1024, (before, after)
    print(
        f"\nbackpressure: {EVENTS} x {SIZE} B delivered in {delivered:.2f}s; slow client over"
        f" the mark {overflow_at:.2f}s in, TCP aborted {grace:.2f}s later, it had received"
        f" {got} B; RSS {before // 1024} KiB -> {after // 1024} KiB ({growth // 1024:+d} KiB)"
    )

    # The others carry on: the reader, a new connection, the HTTP API.
    await reader.ping_pong()
    other = await RawWs.open(server)
    assert (await other.subscribe(CHANNEL))["event"] == "pusher_internal:subscription_succeeded"
    received = asyncio.ensure_future(read_all(other, 10))
    await publish(server, 5000, 10)
    assert await received == list(range(5000, 5010))
    for client in (reader, other, slow):
        client.close()


async def test_a_fast_reader_under_the_same_limit_is_never_cut_off(make_server) -> None:
    # Bursts below the high-water mark never trip it, however many there are.
    server = make_server({"RELAY_WRITE_BUFFER_HIGH_WATER": str(HIGH_WATER)})
    readers = [await RawWs.open(server) for _ in range(3)]
    for client in readers:
        await client.subscribe(CHANNEL)
    results = [asyncio.ensure_future(read_all(client, 500)) for client in readers]
    await publish(server, 0, 500)
    for result in results:
        assert await asyncio.wait_for(result, TIMEOUT) == list(range(500))
    assert (await stats(server))["connections"] == 3
    assert not any("too slow" in line for line in server.lines)
    for client in readers:
        client.close()


async def test_a_client_that_sends_but_never_reads_is_not_read_either(make_server) -> None:
    # Inbound backpressure: pings whose pongs pile up unread make the server stop reading the
    # connection (its requests wait in the kernel) instead of queueing answers without end.
    # With a 1 MiB mark reading pauses at 512 KiB and one read adds at most ~256 KiB of
    # pongs, so this client is paused, never cut off; once it reads, it is served again.
    server = make_server({"RELAY_WRITE_BUFFER_HIGH_WATER": str(1 << 20)})
    greedy = await RawWs.open(server, rcvbuf=4096, sndbuf=32768)
    ping = client_frame({"event": "pusher:ping", "data": {}})
    before = rss_bytes(server.proc.pid)
    sent = 0
    with contextlib.suppress(asyncio.TimeoutError):  # the server stopped reading: we block
        for _ in range(200):  # up to 400,000 pings (~15 MB of pongs) if nothing pushed back
            greedy.send(ping * 2000)
            await asyncio.wait_for(greedy.writer.drain(), 0.5)
            sent += 2000
    assert sent < 400_000, "the server kept reading a client that reads nothing"
    assert rss_bytes(server.proc.pid) - before < 8 * 1024 * 1024
    # Meanwhile everyone else is served.
    conn = await HttpConn.open(server)
    assert (await conn.request("GET", "/health"))[0] == 200
    other = await RawWs.open(server)
    await other.ping_pong()
    # The greedy client reads at last: every pong arrives, then the answer to a new request.
    greedy.send(client_frame({"event": "pusher:subscribe", "data": {"channel": "late"}}))
    stream = bytearray()
    while b"subscription_succeeded" not in stream[-200:]:
        data = await asyncio.wait_for(greedy.reader.read(1 << 20), TIMEOUT)
        assert data, "closed"
        stream += data
    pong_frame = bytes((0x81, len(PONG))) + PONG
    assert stream.count(pong_frame) >= sent
    assert stream.endswith(b'"channel":"late","data":"{}"}')
    assert not any("too slow" in line for line in server.lines)
    for client in (greedy, other, conn):
        client.close()
