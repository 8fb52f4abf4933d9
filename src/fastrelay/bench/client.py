"""A minimal Pusher WebSocket client for load generation, built on fastrelay's own frame codec.

One :class:`PusherSocket` is one raw ``asyncio.Protocol``: the HTTP upgrade is written by hand,
frames are parsed by the (compiled) :class:`~fastrelay.wire.frames.FrameParser` with
``require_mask=False`` and sent masked with :func:`~fastrelay.wire.frames.encode_frame`. There
are no per-connection tasks or queues: a subscriber's whole cost is :meth:`data_received`.

Benchmark messages carry ``fr|<stream>|<seq>|<sent_ns>|<padding>`` as their ``data`` string
(see :func:`bench_data`). The hot path splits the raw frame on ``|``, reads three integers
and accounts the message: one latency sample into the shared :class:`DeliverySink`, one ordering
step in the socket's :class:`~fastrelay.bench.stats.SequenceTracker`. Anything else is a Pusher
control message, decoded as JSON and handled off the hot path.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import time
from collections.abc import Callable
from typing import Any, cast

import orjson

from ..protocol.auth import channel_auth_message
from ..protocol.signing import sign
from ..wire.frames import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    encode_close,
    encode_frame,
)
from .stats import LatencyRecorder, SequenceTracker

__all__ = [
    "MARKER",
    "BenchError",
    "DeliverySink",
    "PusherSocket",
    "bench_data",
    "channel_auth",
    "open_socket",
]

MARKER = b"fr|"
_MARKER_END = b'"fr'  # the data string's opening quote, then the marker without its "|"
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_MESSAGE = 16 * 1024 * 1024
_monotonic_ns = time.monotonic_ns


class BenchError(Exception):
    """A connection or protocol failure the load tool reports (not a bug in the tool)."""


def bench_data(stream: int, seq: int, sent_ns: int, padding: str = "") -> str:
    """The ``data`` string of one benchmark message."""
    return f"fr|{stream}|{seq}|{sent_ns}|{padding}"


def channel_auth(
    key: str, secret: bytes, socket_id: str, channel: str, channel_data: str | None = None
) -> str:
    """The ``auth`` field for a private or presence subscription, signed like an auth endpoint."""
    return f"{key}:{sign(secret, channel_auth_message(socket_id, channel, channel_data))}"


class DeliverySink:
    """What every subscriber of one scenario adds to: deliveries, latencies, disconnects.

    A publisher that must not run ahead of the deliveries awaits :meth:`wait_for`; subscribers
    wake it from :meth:`PusherSocket.data_received` once ``delivered`` reaches the threshold.
    """

    __slots__ = ("_waiter", "_wake_at", "delivered", "disconnects", "errors", "recorder")

    def __init__(self) -> None:
        self.delivered = 0
        self.recorder = LatencyRecorder()
        self.disconnects = 0
        self.errors: list[str] = []
        self._wake_at = 1 << 62
        self._waiter: asyncio.Future[None] | None = None

    def error(self, text: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(text)

    def check(self) -> None:
        """Called after each batch of deliveries: wakes a waiter whose threshold is reached."""
        if self.delivered >= self._wake_at:
            self._wake_at = 1 << 62
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def wait_for(self, delivered: int, timeout: float) -> bool:
        """Wait until ``delivered`` messages arrived in all; False after ``timeout`` seconds."""
        if self.delivered >= delivered:
            return True
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._wake_at = delivered
        try:
            await asyncio.wait_for(self._waiter, timeout)
        except asyncio.TimeoutError:
            return self.delivered >= delivered
        finally:
            self._wake_at = 1 << 62
            self._waiter = None
        return True


class PusherSocket(asyncio.Protocol):
    """One client connection: upgrade, ``connection_established``, subscriptions, messages."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        sink: DeliverySink,
        on_event: Callable[[PusherSocket, dict[str, Any]], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.sink = sink
        self.on_event = on_event
        self.tracker = SequenceTracker()
        self.socket_id = ""
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.close_reason = ""
        loop = asyncio.get_running_loop()
        self.established: asyncio.Future[str] = loop.create_future()
        self._subscriptions: dict[str, asyncio.Future[Any]] = {}
        self._closing = False
        self._handshake = bytearray()
        self._key = base64.b64encode(random.randbytes(16))
        self._parser: FrameParser | None = None
        self._feed: Callable[[bytes], list[tuple[int, bytes]]] | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        request = (
            f"GET {self.path} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self._key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "\r\n"
        )
        transport.write(request.encode())

    def data_received(self, data: bytes) -> None:
        feed = self._feed
        if feed is None:
            data = self._upgrade(data)
            feed = self._feed
            if feed is None or not data:
                return
        try:
            messages = feed(data)
        except Exception as exc:  # a protocol violation by the server: report and drop
            self._fail(f"bad frame from server: {exc}")
            return
        if not messages:
            return
        now = _monotonic_ns()
        sink = self.sink
        samples = sink.recorder.samples
        record = samples.append if len(samples) < sink.recorder.limit else None
        tracker = self.tracker
        expected = tracker.expected
        count = 0
        in_order = 0
        for opcode, payload in messages:
            if opcode == OP_TEXT:
                # '{"event":…,"data":"fr|stream|seq|sent_ns|padding"}': one split, no search.
                # Channel and event names cannot hold "|", so the marker ends the first part.
                parts = payload.split(b"|", 4)
                if len(parts) != 5 or not parts[0].endswith(_MARKER_END):
                    # Another field with a "|" before "data" (a server's own extra field)?
                    at = payload.find(b'"' + MARKER)
                    if at < 0:
                        self._control(payload)
                        continue
                    parts = payload[at:].split(b"|", 4)
                if len(parts) == 5:
                    stream = int(parts[1])
                    seq = int(parts[2])
                    if seq == expected.get(stream, 0):
                        expected[stream] = seq + 1
                        in_order += 1
                    else:
                        tracker.observe_slow(stream, seq)
                    if record is not None:
                        record(now - int(parts[3]))
                    count += 1
            else:
                self._frame(opcode, payload)
        if count:
            tracker.received += in_order
            tracker.in_order += in_order
            sink.delivered += count
            if record is None:
                sink.recorder.dropped += count
            sink.check()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self._closing:
            self.sink.disconnects += 1
            reason = self.close_reason or (str(exc) if exc else "closed by the server")
            self._fail_waiters(reason)

    # -- sending -------------------------------------------------------------------------

    def send_text(self, text: str | bytes) -> None:
        if self.transport is None or self.closed:
            return
        payload = text.encode() if isinstance(text, str) else text
        self.transport.write(encode_frame(OP_TEXT, payload, random.randbytes(4)))

    def send_event(self, event: str, data: Any, channel: str | None = None) -> None:
        message: dict[str, Any] = {"event": event, "data": data}
        if channel is not None:
            message["channel"] = channel
        self.send_text(json.dumps(message, separators=(",", ":")))

    async def subscribe(
        self,
        channel: str,
        *,
        auth: str | None = None,
        channel_data: str | None = None,
        timeout: float = 30.0,
    ) -> Any:
        """Subscribe and wait for ``pusher_internal:subscription_succeeded``; returns its data."""
        data: dict[str, str] = {"channel": channel}
        if auth is not None:
            data["auth"] = auth
        if channel_data is not None:
            data["channel_data"] = channel_data
        waiter = asyncio.get_running_loop().create_future()
        self._subscriptions[channel] = waiter
        self.send_event("pusher:subscribe", data)
        try:
            return await asyncio.wait_for(waiter, timeout)
        finally:
            if self._subscriptions.get(channel) is waiter:
                del self._subscriptions[channel]

    def unsubscribe(self, channel: str) -> None:
        self.send_event("pusher:unsubscribe", {"channel": channel})

    def close(self) -> None:
        """Close politely (a close frame, then TCP); not counted as a disconnect."""
        self._closing = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            try:
                transport.write(encode_close(1000, "", random.randbytes(4)))
            finally:
                transport.close()

    def abort(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.abort()

    # -- internals -----------------------------------------------------------------------

    def _upgrade(self, data: bytes) -> bytes:
        """Collect the HTTP response to the upgrade; returns the bytes after it."""
        self._handshake += data
        end = self._handshake.find(b"\r\n\r\n")
        if end < 0:
            if len(self._handshake) > 65536:
                self._fail("oversized upgrade response")
            return b""
        head = bytes(self._handshake[:end]).decode("latin-1")
        rest = bytes(self._handshake[end + 4 :])
        self._handshake = bytearray()
        lines = head.split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or status[1] != "101":
            self._fail(f"upgrade refused: {lines[0]}")
            return b""
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        accept = base64.b64encode(hashlib.sha1(self._key + _WS_GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != accept:
            self._fail("upgrade response with a wrong Sec-WebSocket-Accept")
            return b""
        self._parser = FrameParser(_MAX_MESSAGE, require_mask=False)
        self._feed = self._parser.feed
        return rest

    def _frame(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING and self.transport is not None and not self.closed:
            self.transport.write(encode_frame(OP_PONG, payload, random.randbytes(4)))
        elif opcode == OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.close_reason = f"close frame {code} {payload[2:].decode(errors='replace')}"
            if self.transport is not None:
                self.transport.close()

    def _control(self, payload: bytes) -> None:
        try:
            message = _loads(payload)
        except ValueError:
            self.sink.error(f"undecodable message: {payload[:100]!r}")
            return
        if not isinstance(message, dict):
            return
        event = message.get("event")
        if event == "pusher:connection_established":
            data = _json_data(message.get("data"))
            self.socket_id = str(data.get("socket_id", "")) if isinstance(data, dict) else ""
            if not self.established.done():
                self.established.set_result(self.socket_id)
        elif event == "pusher_internal:subscription_succeeded":
            waiter = self._subscriptions.get(message.get("channel", ""))
            if waiter is not None and not waiter.done():
                waiter.set_result(_json_data(message.get("data")))
        elif event == "pusher:ping":
            self.send_event("pusher:pong", {})
        elif event in ("pusher:error", "pusher:subscription_error"):
            text = f"{event}: {message.get('data')}"
            self.sink.error(text)
            channel = message.get("channel")
            waiter = self._subscriptions.get(channel) if isinstance(channel, str) else None
            if waiter is not None and not waiter.done():
                waiter.set_exception(BenchError(text))
            elif not self.established.done():
                self.established.set_exception(BenchError(text))
        elif self.on_event is not None:
            self.on_event(self, message)

    def _fail(self, reason: str) -> None:
        self.sink.error(reason)
        self.close_reason = reason
        self._fail_waiters(reason)
        if self.transport is not None:
            self.transport.abort()

    def _fail_waiters(self, reason: str) -> None:
        if not self.established.done():
            self.established.set_exception(BenchError(reason))
        for waiter in self._subscriptions.values():
            if not waiter.done():
                waiter.set_exception(BenchError(reason))


def _json_data(data: Any) -> Any:
    """Pusher wraps most ``data`` in a JSON string; unwrap it when it is one."""
    if isinstance(data, str):
        try:
            return _loads(data)
        except ValueError:
            return data
    return data


def _loads(text: str | bytes) -> Any:
    """JSON of a control message: orjson (every presence join brings the tool ~80 of them, and
    the standard library's parser made the tool, not the server, the limit of presence-churn);
    the standard library for what orjson refuses (integers beyond 64 bits, NaN)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


async def open_socket(
    host: str,
    port: int,
    path: str,
    sink: DeliverySink,
    *,
    local_host: str | None = None,
    on_event: Callable[[PusherSocket, dict[str, Any]], None] | None = None,
    timeout: float = 30.0,
) -> PusherSocket:
    """Connect, upgrade and wait for ``pusher:connection_established``."""
    loop = asyncio.get_running_loop()
    local_addr = (local_host, 0) if local_host else None
    _transport, sock = await asyncio.wait_for(
        loop.create_connection(
            lambda: PusherSocket(host, port, path, sink, on_event),
            host,
            port,
            local_addr=local_addr,
        ),
        timeout,
    )
    try:
        await asyncio.wait_for(sock.established, timeout)
    except BaseException:
        sock.abort()
        raise
    return sock
