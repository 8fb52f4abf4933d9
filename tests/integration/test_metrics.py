"""The metrics server (HTTP_API.md §3.8): soketi's routes and metric names, real values.

A scripted session (two clients connect and subscribe, one pings, an API publish reaches both,
one leaves) must show up exactly in the counters; the byte counts are computed here from what
went over the wire.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from conftest import (
    APP_KEY,
    TIMEOUT,
    ServerProcess,
    api,
    connect,
    http,
)

ENABLED = {
    "RELAY_METRICS_ENABLED": "true",
    "RELAY_METRICS_HOST": "127.0.0.1",
    "RELAY_METRICS_PORT": "0",
}


def metrics_port(srv: ServerProcess) -> int:
    return int(srv.wait_for_log("metrics listening on").rsplit(":", 1)[1])


def get(port: int, path: str) -> tuple[int, str, bytes]:
    status, headers, body = http("GET", f"http://127.0.0.1:{port}{path}")
    return status, headers.get("Content-Type", ""), body


def samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of GET /metrics, by (name, sorted labels)."""
    status, content_type, body = get(port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain"), (status, content_type)
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def frame_size(payload: bytes, masked: bool) -> int:
    """RFC 6455 frame length: header, extended length, mask key (client frames), payload."""
    n = len(payload)
    return 2 + (0 if n < 126 else 2 if n < 65536 else 8) + (4 if masked else 0) + n


async def test_counters_after_a_scripted_session(make_server: Any) -> None:
    srv = make_server(ENABLED)
    port = metrics_port(srv)
    received: list[bytes] = []  # payloads of the client → server frames (masked)

    a = await connect(srv)
    b = await connect(srv)
    for sock in (a, b):
        subscribe = json.dumps({"event": "pusher:subscribe", "data": {"channel": "metered"}})
        await sock.ws.send(subscribe)
        received.append(subscribe.encode())
        assert (await sock.recv())["event"] == "pusher_internal:subscription_succeeded"
    ping = json.dumps({"event": "pusher:ping", "data": {}})
    await a.ws.send(ping)
    received.append(ping.encode())
    assert (await a.recv())["event"] == "pusher:pong"

    payload = {"name": "tick", "channel": "metered", "data": "42"}
    status, answer = api(srv, "POST", "/apps/1/events", payload)
    assert (status, answer) == (200, {})
    for sock in (a, b):
        assert (await sock.recv())["event"] == "tick"
    await b.close()  # returns once the server echoed the close: it has counted the disconnect
    received.append(b"\x03\xe8")  # b's close frame, code 1000
    found = samples(port)

    labels = (("app_id", "1"), ("port", str(srv.port)))
    assert found[("fastrelay_connected", labels)] == 1
    assert found[("fastrelay_new_connections_total", labels)] == 2
    assert found[("fastrelay_new_disconnections_total", labels)] == 1
    assert found[("fastrelay_ws_messages_received_total", labels)] == 3
    # a: established, subscribed, pong, tick; b: established, subscribed, tick.
    assert found[("fastrelay_ws_messages_sent_total", labels)] == 7
    assert found[("fastrelay_socket_received_bytes", labels)] == sum(
        frame_size(p, masked=True) for p in received
    )
    body = json.dumps(payload).encode()
    assert found[("fastrelay_http_calls_received_total", labels)] == 1
    assert found[("fastrelay_http_received_bytes", labels)] == len(body)
    assert found[("fastrelay_http_transmitted_bytes", labels)] == len(b"{}")
    assert found[("fastrelay_webhook_attempts_total", labels)] == 0
    assert found[("fastrelay_adapter_latency_seconds_count", labels)] == 0
    infinity = (("app_id", "1"), ("le", "+Inf"), ("port", str(srv.port)))
    assert found[("fastrelay_adapter_latency_seconds_bucket", infinity)] == 0
    await a.close()


async def test_transmitted_bytes_match_the_frames_sent(make_server: Any) -> None:
    srv = make_server(ENABLED)
    port = metrics_port(srv)
    # A raw client sees the exact frames, so the count can be checked to the byte.
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(
        f"GET /app/{APP_KEY}?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    frames: list[bytes] = []

    async def read_frame() -> dict[str, Any]:
        head = await asyncio.wait_for(reader.readexactly(2), TIMEOUT)
        assert head[0] == 0x81 and head[1] < 126, head  # small text frames, unmasked
        body = await asyncio.wait_for(reader.readexactly(head[1]), TIMEOUT)
        frames.append(head + body)
        return json.loads(body)

    assert (await read_frame())["event"] == "pusher:connection_established"
    status, _ = api(srv, "POST", "/apps/1/events", {"name": "e", "channel": "none", "data": "x"})
    assert status == 200  # nobody subscribed: nothing sent
    found = samples(port)
    labels = (("app_id", "1"), ("port", str(srv.port)))
    assert found[("fastrelay_socket_transmitted_bytes", labels)] == sum(map(len, frames))
    assert found[("fastrelay_ws_messages_sent_total", labels)] == 1
    writer.close()


def test_json_usage_ready_and_root(make_server: Any) -> None:
    srv = make_server(ENABLED)
    port = metrics_port(srv)
    assert get(port, "/") == (200, "text/plain; charset=utf-8", b"OK")
    assert get(port, "/ready")[0::2] == (200, b"OK")

    status, content_type, body = get(port, "/usage")
    assert status == 200 and content_type.startswith("application/json")
    memory = json.loads(body)["memory"]
    assert set(memory) == {"free", "used", "total", "percent"}
    assert 0 < memory["used"] <= memory["total"]
    assert memory["free"] == memory["total"] - memory["used"]
    assert 0 < memory["percent"] <= 100

    status, content_type, body = get(port, "/metrics?json=1")
    assert status == 200 and content_type.startswith("application/json")
    families = {family["name"]: family for family in json.loads(body)}
    expected = {
        "connected": "gauge",
        "new_connections_total": "counter",
        "new_disconnections_total": "counter",
        "socket_received_bytes": "untyped",
        "socket_transmitted_bytes": "untyped",
        "ws_messages_received_total": "counter",
        "ws_messages_sent_total": "counter",
        "http_received_bytes": "untyped",
        "http_transmitted_bytes": "untyped",
        "http_calls_received_total": "counter",
        "webhook_attempts_total": "counter",
        "webhook_failures_total": "counter",
        "adapter_latency_seconds": "histogram",
    }
    for name, kind in expected.items():
        family = families["fastrelay_" + name]
        assert family["type"] == kind and family["help"], family
    connected = families["fastrelay_connected"]["values"]
    assert connected == [
        {
            "value": 0.0,
            "labels": {"app_id": "1", "port": str(srv.port)},
            "metricName": "fastrelay_connected",
        }
    ]
    assert get(port, "/nope")[0] == 404


async def test_webhook_attempts_and_failures(make_server: Any) -> None:
    with socket.socket() as probe:  # a port nothing listens on: every attempt fails
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    hook = [{"url": f"http://127.0.0.1:{dead}/hook", "event_types": ["channel_occupied"]}]
    srv = make_server({**ENABLED, "RELAY_APP_WEBHOOKS": json.dumps(hook)}, ["--log-level", "debug"])
    port = metrics_port(srv)
    sock = await connect(srv)
    await sock.subscribe("hooked")
    # Logged right where the attempt is counted, with no await in between.
    srv.wait_for_log("attempt 1:")
    found = samples(port)
    labels = (("app_id", "1"), ("port", str(srv.port)))
    attempts = found[("fastrelay_webhook_attempts_total", labels)]
    assert attempts >= 1
    assert found[("fastrelay_webhook_failures_total", labels)] == attempts
    await sock.close()


def test_soketi_variables_and_prefix(make_server: Any) -> None:
    srv = make_server(
        {
            "SOKETI_METRICS_ENABLED": "true",
            "SOKETI_METRICS_HOST": "127.0.0.1",
            "SOKETI_METRICS_SERVER_PORT": "0",
            "SOKETI_METRICS_PROMETHEUS_PREFIX": "soketi_",
        }
    )
    found = samples(metrics_port(srv))
    labels = (("app_id", "1"), ("port", str(srv.port)))
    assert found[("soketi_connected", labels)] == 0
    assert found[("soketi_new_connections_total", labels)] == 0
    assert not [name for name, _ in found if name.startswith("fastrelay_")]


def test_disabled_by_default(make_server: Any) -> None:
    srv = make_server()
    assert srv.stop() == 0
    srv.wait_for_log("shutting down")  # every line logged at start has been read by now
    assert not [line for line in srv.lines if "metrics" in line]


def raw_websocket(port: int) -> socket.socket:
    """A client that completes the handshake, then never reads or answers again."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.sendall(
        f"GET /app/{APP_KEY}?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    seen = b""
    while b"connection_established" not in seen:
        chunk = sock.recv(4096)
        assert chunk, seen
        seen += chunk
    return sock


def test_ready_is_503_while_draining_then_the_metrics_server_stops(make_server: Any) -> None:
    srv = make_server(ENABLED)
    port = metrics_port(srv)
    assert get(port, "/ready")[0] == 200
    # A client that never answers the close frame keeps the drain going (close timeout).
    with raw_websocket(srv.port):
        srv.proc.terminate()
        srv.wait_for_log("shutting down")
        status, _, body = get(port, "/ready")
        assert (status, body) == (503, b"Service Unavailable")
        assert get(port, "/")[0] == 200  # still scrapeable while draining
        assert srv.proc.wait(timeout=TIMEOUT) == 0
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=TIMEOUT)
    except OSError:
        pass
    else:  # pragma: no cover
        raise AssertionError("the metrics server outlived the node")
