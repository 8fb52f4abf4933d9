"""WebSocket framing (RFC 6455) at the byte level: a raw TCP client with its own handshake.

Client frames are built with ``fastrelay.wire.frames.encode_frame(..., mask_key=...)``; server
frames are read with a client-side ``FrameParser`` (``require_mask=False``), so each test sees
exactly which frames and close codes the server put on the wire.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
from typing import Any

from conftest import TIMEOUT, ServerProcess, connect, token
from fastrelay.wire.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    encode_close,
    encode_frame,
    parse_close,
)

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MASK = b"\x37\xfa\x21\x3d"
PING = b'{"event":"pusher:ping","data":{}}'
PONG = {"event": "pusher:pong", "data": {}}
CLOSING_ERROR = {
    "event": "pusher:error",
    "data": {"code": 4200, "message": "Server is closing. Please reconnect shortly."},
}


def masked(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A client frame; ``fin=False`` clears the FIN bit for a non-final fragment."""
    frame = bytearray(encode_frame(opcode, payload, mask_key=MASK))
    if not fin:
        frame[0] &= 0x7F
    return bytes(frame)


class RawClient:
    """A WebSocket client on a bare TCP stream: nothing is answered unless a test says so."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = FrameParser(1 << 24, require_mask=False)
        self.pending: list[tuple[int, bytes]] = []
        self.socket_id = ""

    @classmethod
    async def open(
        cls,
        server: ServerProcess,
        path: str = "/app/app-key?protocol=7",
        *,
        first_frames: bytes = b"",
        established: bool = True,
    ) -> RawClient:
        """Connect and upgrade; ``first_frames`` go out in the same write as the request."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", server.port), TIMEOUT
        )
        client = cls(reader, writer)
        await client.upgrade(path, first_frames)
        if established:
            message = await client.recv_json()
            assert message["event"] == "pusher:connection_established", message
            client.socket_id = json.loads(message["data"])["socket_id"]
        return client

    async def upgrade(self, path: str, first_frames: bytes = b"") -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\n"
            "Host: 127.0.0.1\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "\r\n"
        )
        self.writer.write(request.encode() + first_frames)
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 101"), head
        headers = {n.lower(): v.strip() for n, _, v in (h.partition(":") for h in lines[1:] if h)}
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        assert headers["sec-websocket-accept"] == accept

    def send(self, frame: bytes) -> None:
        self.writer.write(frame)

    def send_json(self, message: dict[str, Any], opcode: int = OP_TEXT) -> None:
        self.send(masked(opcode, json.dumps(message).encode()))

    async def recv_frame(self, timeout: float = TIMEOUT) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(65536), deadline - loop.time())
            if not data:
                raise EOFError("server closed TCP")
            self.pending.extend(self.parser.feed(data))
        return self.pending.pop(0)

    async def recv_json(self) -> dict[str, Any]:
        opcode, payload = await self.recv_frame()
        assert opcode == OP_TEXT, (opcode, payload)
        return json.loads(payload)

    async def recv_close(self) -> tuple[int, str]:
        """Skip data frames until the server's close frame; return its (code, reason)."""
        while True:
            opcode, payload = await self.recv_frame()
            if opcode == OP_CLOSE:
                return parse_close(payload)

    async def eof(self) -> bool:
        """True once the server has closed TCP (nothing more arrives)."""
        rest = await asyncio.wait_for(self.reader.read(), TIMEOUT)
        return rest == b"" or not self.parser.feed(rest)

    async def quiet_ping(self) -> None:
        self.send(masked(OP_TEXT, PING))
        assert await self.recv_json() == PONG

    def close(self) -> None:
        self.writer.close()


async def test_handshake_and_connection_established(server: ServerProcess) -> None:
    client = await RawClient.open(server)
    await client.quiet_ping()
    client.send(encode_close(1000, mask_key=MASK))
    assert await client.recv_close() == (1000, "")
    client.close()


async def test_fragmented_message_with_ping_in_between(server: ServerProcess) -> None:
    client = await RawClient.open(server)
    channel = "frag-" + os.urandom(4).hex()
    message = json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}).encode()
    a, b, c = message[:10], message[10:25], message[25:]
    client.send(masked(OP_TEXT, a, fin=False))
    client.send(masked(OP_CONT, b, fin=False))
    client.send(masked(OP_PING, b"mid-message"))
    client.send(masked(OP_CONT, c))
    # The ping is answered at once, before the message it interrupted completes.
    assert await client.recv_frame() == (OP_PONG, b"mid-message")
    assert await client.recv_json() == {
        "event": "pusher_internal:subscription_succeeded",
        "channel": channel,
        "data": "{}",
    }
    client.close()


async def test_fragment_split_inside_a_utf8_character(server: ServerProcess) -> None:
    client = await RawClient.open(server)
    channel = "utf8-" + os.urandom(4).hex()
    message = json.dumps(
        {"event": "pusher:subscribe", "data": {"channel": channel, "x": "é€"}}, ensure_ascii=False
    ).encode()
    cut = message.index("€".encode()) + 1  # inside the 3-byte sequence
    client.send(masked(OP_TEXT, message[:cut], fin=False))
    client.send(masked(OP_CONT, message[cut:]))
    assert (await client.recv_json())["channel"] == channel
    client.close()


async def test_unmasked_client_frame_closes_1002(server: ServerProcess) -> None:
    client = await RawClient.open(server)
    client.send(encode_frame(OP_TEXT, PING))
    opcode, payload = await client.recv_frame()
    assert opcode == OP_CLOSE
    assert parse_close(payload)[0] == 1002
    client.close()


async def test_invalid_utf8_text_closes_1007(server: ServerProcess) -> None:
    client = await RawClient.open(server)
    client.send(masked(OP_TEXT, b'{"event":"\xff\xfe"}'))
    opcode, payload = await client.recv_frame()
    assert opcode == OP_CLOSE
    assert parse_close(payload)[0] == 1007
    client.close()


async def test_message_over_max_size_closes_1009_others_unaffected(make_server: Any) -> None:
    srv = make_server({"RELAY_MAX_MESSAGE_SIZE": "1024"})
    bystander = await connect(srv)
    channel = "big-" + os.urandom(4).hex()
    await bystander.subscribe(channel)
    client = await RawClient.open(srv)
    client.send_json({"event": "pusher:subscribe", "data": {"channel": channel}})
    assert (await client.recv_json())["event"] == "pusher_internal:subscription_succeeded"
    exact = b'{"event":"pusher:ping","data":"' + b"x" * (1024 - 33) + b'"}'
    assert len(exact) == 1024
    client.send(masked(OP_TEXT, exact))  # exactly the limit: fine
    assert await client.recv_json() == PONG
    client.send(masked(OP_TEXT, b" " * 1025))
    opcode, payload = await client.recv_frame()
    assert opcode == OP_CLOSE
    assert parse_close(payload)[0] == 1009
    client.close()
    # The others keep working, new ones get in.
    await bystander.send("pusher:ping", {})
    assert await bystander.recv() == PONG
    fresh = await RawClient.open(srv)
    await fresh.quiet_ping()
    fresh.close()
    await bystander.close()


async def test_fragmented_message_over_max_size_closes_1009(make_server: Any) -> None:
    srv = make_server({"RELAY_MAX_MESSAGE_SIZE": "1024"})
    client = await RawClient.open(srv)
    client.send(masked(OP_TEXT, b" " * 600, fin=False))
    client.send(masked(OP_CONT, b" " * 600))
    assert (await client.recv_close())[0] == 1009
    client.close()


async def test_client_close_is_echoed_and_tcp_closed(server: ServerProcess) -> None:
    client = await RawClient.open(server)
    client.send(encode_close(1000, "bye", mask_key=MASK))
    opcode, payload = await client.recv_frame()
    assert opcode == OP_CLOSE
    assert parse_close(payload)[0] == 1000
    assert await client.eof()
    client.close()


async def test_client_close_without_code_is_echoed_empty(server: ServerProcess) -> None:
    client = await RawClient.open(server)
    client.send(masked(OP_CLOSE, b""))
    assert await client.recv_frame() == (OP_CLOSE, b"")
    assert await client.eof()
    client.close()


async def test_client_close_with_invalid_code_is_1002(server: ServerProcess) -> None:
    client = await RawClient.open(server)
    client.send(masked(OP_CLOSE, (1005).to_bytes(2, "big")))
    assert (await client.recv_close())[0] == 1002
    client.close()


async def test_close_removes_presence_member(server: ServerProcess) -> None:
    channel = "presence-raw-" + os.urandom(4).hex()
    observer = await connect(server)
    data = '{"user_id":"raw"}'
    obs_data = '{"user_id":"observer"}'
    await observer.subscribe(
        channel, auth=token(observer.socket_id, channel, obs_data), channel_data=obs_data
    )
    client = await RawClient.open(server)
    client.send_json(
        {
            "event": "pusher:subscribe",
            "data": {
                "channel": channel,
                "auth": token(client.socket_id, channel, data),
                "channel_data": data,
            },
        }
    )
    assert (await client.recv_json())["event"] == "pusher_internal:subscription_succeeded"
    assert (await observer.recv())["event"] == "pusher_internal:member_added"
    client.send(encode_close(1001, mask_key=MASK))
    assert (await client.recv_close())[0] == 1001
    assert await observer.recv() == {
        "event": "pusher_internal:member_removed",
        "channel": channel,
        "data": data,
    }
    client.close()
    await observer.close()


async def test_binary_frame_with_json_is_handled_like_text(server: ServerProcess) -> None:
    client = await RawClient.open(server)
    client.send(masked(OP_BINARY, PING))
    assert await client.recv_json() == PONG
    channel = "bin-" + os.urandom(4).hex()
    client.send_json({"event": "pusher:subscribe", "data": {"channel": channel}}, OP_BINARY)
    assert (await client.recv_json())["channel"] == channel
    # Binary that is not UTF-8 is malformed JSON, not a protocol error (PROTOCOL.md §1.1).
    client.send(masked(OP_BINARY, b"\xff\xfe"))
    assert await client.recv_json() == {
        "event": "pusher:error",
        "data": {"code": None, "message": "Invalid message format"},
    }
    await client.quiet_ping()
    client.close()


async def test_one_byte_writes(server: ServerProcess) -> None:
    client = await RawClient.open(server)
    channel = "bytewise-" + os.urandom(4).hex()
    frame = masked(
        OP_TEXT, json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}).encode()
    )
    for i in range(len(frame)):
        client.send(frame[i : i + 1])
        await client.writer.drain()
    assert await client.recv_json() == {
        "event": "pusher_internal:subscription_succeeded",
        "channel": channel,
        "data": "{}",
    }
    client.close()


async def test_large_message_with_64_bit_length(server: ServerProcess) -> None:
    client = await RawClient.open(server)
    channel = "long-" + os.urandom(4).hex()
    payload = json.dumps(
        {"event": "pusher:subscribe", "data": {"channel": channel, "pad": "x" * 70000}}
    ).encode()
    assert len(payload) > 0xFFFF
    client.send(masked(OP_TEXT, payload))
    assert (await client.recv_json())["channel"] == channel
    client.close()


async def test_pipelined_frames_in_one_write(server: ServerProcess) -> None:
    client = await RawClient.open(server)
    client.send(masked(OP_TEXT, PING) * 3 + masked(OP_PING, b"p"))
    assert [await client.recv_frame() for _ in range(4)] == [
        (OP_TEXT, json.dumps(PONG, separators=(",", ":")).encode()),
    ] * 3 + [(OP_PONG, b"p")]
    client.close()


async def test_reserved_bits_and_unknown_opcode_close_1002(server: ServerProcess) -> None:
    for frame in (bytes([0xC1]) + masked(OP_TEXT, PING)[1:], bytes([0x83, 0x80]) + MASK):
        client = await RawClient.open(server)
        client.send(frame)
        assert (await client.recv_close())[0] == 1002
        client.close()


async def test_shutdown_health_503_while_draining(make_server: Any) -> None:
    """SIGTERM: 4200 on the wire, /health says 503 while a client has not closed yet, exit 0."""
    srv = make_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)  # HTTP keep-alive

    async def health() -> bytes:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await asyncio.wait_for(reader.readexactly(length), TIMEOUT)
        return head.split(b"\r\n")[0]

    assert b" 200 " in await health()
    client = await RawClient.open(srv)
    srv.proc.send_signal(signal.SIGTERM)
    assert await client.recv_json() == CLOSING_ERROR
    assert (await client.recv_close())[0] == 4200
    # This client has not answered the close yet, so the server is still draining.
    assert b" 503 " in await health()
    assert srv.proc.poll() is None
    # An upgrade arriving now (on the kept-alive connection) fails check 1 of §1.2.
    late = RawClient(reader, writer)
    await late.upgrade("/app/app-key?protocol=7")
    assert await late.recv_json() == CLOSING_ERROR
    assert (await late.recv_close())[0] == 4200
    late.send(encode_close(4200, mask_key=MASK))
    assert await late.eof()
    client.send(encode_close(4200, mask_key=MASK))
    assert await client.eof()
    client.close()
    writer.close()
    assert await asyncio.to_thread(srv.proc.wait, TIMEOUT) == 0


async def test_shutdown_does_not_wait_for_a_silent_client_forever(make_server: Any) -> None:
    srv = make_server({"RELAY_SHUTDOWN_GRACE_PERIOD": "1"})
    client = await RawClient.open(srv)
    srv.proc.send_signal(signal.SIGTERM)
    assert (await client.recv_close())[0] == 4200
    assert await client.eof()  # never answered: TCP dropped anyway
    client.close()
    assert await asyncio.to_thread(srv.proc.wait, TIMEOUT) == 0


async def test_frames_sent_with_the_upgrade_request(server: ServerProcess) -> None:
    channel = "early-" + os.urandom(4).hex()
    subscribe = json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}).encode()
    client = await RawClient.open(
        server, first_frames=masked(OP_TEXT, subscribe) + masked(OP_PING, b"early")
    )
    assert (await client.recv_json())["channel"] == channel
    assert await client.recv_frame() == (OP_PONG, b"early")
    client.close()


async def test_path_prefix(make_server: Any) -> None:
    srv = make_server({"RELAY_PATH_PREFIX": "/ws"})
    client = await RawClient.open(srv, "/ws/app/app-key?protocol=7")
    await client.quiet_ping()
    client.close()
    for path in ("/app/app-key", "/xx/app/app-key", "/wsx/app/app-key", "/ws/app/"):
        refused = await RawClient.open(srv, path, established=False)
        assert await refused.recv_json() == {
            "event": "pusher:error",
            "data": {"code": 4005, "message": "Path not found"},
        }
        assert (await refused.recv_close())[0] == 4005
        refused.close()
