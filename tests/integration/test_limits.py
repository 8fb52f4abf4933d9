"""Rate limits of the HTTP API (HTTP_API.md §3.9) and the per-node connection cap, on a real server.

Windows are fixed, one second per app and budget, opened by the budget's first request; each test
starts a fresh server and makes its counted requests well within one second of that first one,
so the counts below are exact.
"""

from __future__ import annotations

import json
from typing import Any

from rawwire import HttpConn, RawWs, api_call, signed_target, stats, wait_until

from conftest import APP_ID, ServerProcess

EVENTS = f"/apps/{APP_ID}/events"
BATCH = f"/apps/{APP_ID}/batch_events"
TOO_MANY = {"error": "Too many requests.", "code": 429}


def event(*channels: str, name: str = "e", data: str = "x") -> bytes:
    return json.dumps({"name": name, "channels": list(channels), "data": data}).encode()


def rate(headers: dict[str, str]) -> tuple[str, str, str] | None:
    if "x-ratelimit-limit" not in headers:
        return None
    return (headers["x-ratelimit-limit"], headers["x-ratelimit-remaining"], headers["retry-after"])


async def publish(conn: HttpConn, server: ServerProcess, body: bytes, path: str = EVENTS) -> Any:
    status, headers, answer = await api_call(conn, server, "POST", path, body)
    return status, rate(headers), answer


async def test_backend_events_cost_one_point_per_channel(make_server) -> None:
    server = make_server({"RELAY_APP_MAX_BACKEND_EVENTS_PER_SEC": "6"})
    listener = await RawWs.open(server)
    await listener.subscribe("c")
    conn = await HttpConn.open(server)
    assert await publish(conn, server, event("a", "b")) == (200, ("6", "4", "1"), {})
    batch = json.dumps(
        {
            "batch": [
                {"name": "e", "channel": "c", "data": "1"},
                {"name": "e", "channels": ["a", "b"], "data": "2"},
            ]
        }
    ).encode()
    assert await publish(conn, server, batch, BATCH) == (200, ("6", "1", "1"), {})
    # Two channels do not fit in the one point left: refused whole, nothing delivered.
    refused = await publish(conn, server, event("c", "d", data="refused"))
    assert refused == (429, ("6", "1", "1"), TOO_MANY)
    assert await publish(conn, server, event("c", data="last")) == (200, ("6", "0", "1"), {})
    assert (await listener.expect("e"))["data"] == "1"
    assert (await listener.expect("e"))["data"] == "last"  # "refused" never went out
    assert (await publish(conn, server, event("c")))[0] == 429
    # Reads have their own budget (unlimited here: no headers).
    status, headers, _ = await api_call(conn, server, "GET", f"/apps/{APP_ID}/channels")
    assert (status, rate(headers)) == (200, None)
    # The next window lets it through again (the limiter's clock is the server's).
    await wait_until(
        lambda: publish(conn, server, event("c")), lambda result: result[0] == 200, timeout=3
    )
    conn.close()
    listener.close()


async def test_read_requests_cost_one_point_each(make_server) -> None:
    server = make_server({"RELAY_APP_MAX_READ_REQ_PER_SEC": "3"})
    conn = await HttpConn.open(server)
    paths = [
        f"/apps/{APP_ID}/channels",
        f"/apps/{APP_ID}/channels/c",
        f"/apps/{APP_ID}/connections",
    ]
    for remaining, path in zip(("2", "1", "0"), paths, strict=True):
        status, headers, _ = await api_call(conn, server, "GET", path)
        assert (status, rate(headers)) == (200, ("3", remaining, "1"))
    status, headers, body = await api_call(conn, server, "GET", f"/apps/{APP_ID}/channels/c/users")
    assert (status, rate(headers), body) == (429, ("3", "0", "1"), TOO_MANY)
    # Publishing is another budget, unlimited here; unsigned probes are never limited.
    assert (await publish(conn, server, event("c"))) == (200, None, {})
    assert (await conn.request("GET", "/health"))[0] == 200
    conn.close()


async def test_order_signature_then_limit_then_validation(make_server) -> None:
    server = make_server({"RELAY_APP_MAX_BACKEND_EVENTS_PER_SEC": "2"})
    conn = await HttpConn.open(server)
    # Under the limit, a bad body is counted, then refused by validation, with the headers.
    status, headers, body = await api_call(conn, server, "POST", EVENTS, b"{broken")
    assert (status, rate(headers), body["code"]) == (400, ("2", "1", "1"), 400)
    assert await publish(conn, server, event("a")) == (200, ("2", "0", "1"), {})
    # Over the limit: 429 comes before validation...
    assert (await publish(conn, server, b'{"name":7}'))[::2] == (429, TOO_MANY)
    # ...and after the signature: a bad signature is 401 and costs nothing.
    target = signed_target(server, "POST", EVENTS, event("a"), secret="wrong")
    status, headers, raw = await conn.request("POST", target, event("a"))
    assert (status, rate(headers), json.loads(raw)["code"]) == (401, None, 401)
    conn.close()


async def test_apps_have_separate_budgets(make_server) -> None:
    apps = [
        {"id": "1", "key": "app-key", "secret": "app-secret", "max_backend_events_per_sec": 1},
        {"id": "2", "key": "two-key", "secret": "two-secret", "maxBackendEventsPerSecond": 1},
    ]
    server = make_server({"RELAY_APPS": json.dumps(apps)})
    conn = await HttpConn.open(server)
    assert (await publish(conn, server, event("a")))[0] == 200
    assert (await publish(conn, server, event("a")))[0] == 429
    status, headers, _ = await api_call(
        conn, server, "POST", "/apps/2/events", event("a"), key="two-key", secret="two-secret"
    )
    assert (status, rate(headers)) == (200, ("1", "0", "1"))
    conn.close()


async def test_node_connection_cap_is_4100(make_server) -> None:
    apps = [
        {"id": "1", "key": "app-key", "secret": "app-secret"},
        {"id": "2", "key": "two-key", "secret": "two-secret"},
    ]
    server = make_server({"RELAY_APPS": json.dumps(apps), "RELAY_MAX_CONNECTIONS": "3"})
    clients = [
        await RawWs.open(server),
        await RawWs.open(server, "/app/two-key?protocol=7"),
        await RawWs.open(server),
    ]
    # The cap counts every app on the node.
    for path in ("/app/app-key?protocol=7", "/app/two-key?protocol=7"):
        refused = await RawWs.open(server, path, established=False)
        error = await refused.expect("pusher:error")
        assert error["data"] == {
            "code": 4100,
            "message": "The server has reached its maximum number of connections.",
        }
        assert (await refused.recv_close())[0] == 4100
        refused.close()
    clients.pop().close()
    await wait_until(lambda: stats(server), lambda s: s["connections"] == 2)
    clients.append(await RawWs.open(server))  # room again
    for client in clients:
        await client.ping_pong()
        client.close()
