"""Fan-out: 200 raw WebSocket clients on one channel, 50 events published with the Python SDK.

Every client must get every event exactly once and in publish order. A final `done` event (sent
after the 50) bounds each client's read: anything missing, repeated or reordered shows up in the
list of sequence numbers that client collected before `done`.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pusher

from conftest import APP_ID, APP_KEY, APP_SECRET, TIMEOUT, PusherSocket, ServerProcess, connect

CLIENTS = 200
EVENTS = 50


def payload(seq: int) -> str:
    return json.dumps({"seq": seq, "pad": "x" * 64})


async def test_200_clients_get_50_events_once_in_order(server: ServerProcess) -> None:
    channel = f"fanout-{uuid.uuid4().hex[:12]}"
    sdk = pusher.Pusher(
        app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host="127.0.0.1", port=server.port, ssl=False
    )
    gate = asyncio.Semaphore(50)  # keep the accept backlog from overflowing

    async def join() -> PusherSocket:
        async with gate:
            sock = await connect(server)
            reply = await sock.subscribe(channel)
            assert reply["event"] == "pusher_internal:subscription_succeeded", reply
            return sock

    socks = await asyncio.gather(*(join() for _ in range(CLIENTS)))
    assert len({s.socket_id for s in socks}) == CLIENTS

    info = await asyncio.to_thread(sdk.channel_info, channel)
    assert info["subscription_count"] == CLIENTS

    async def collect(sock: PusherSocket) -> list[int]:
        seqs: list[int] = []
        while True:
            message = await sock.recv(timeout=3 * TIMEOUT)
            assert message.get("channel") == channel, message
            if message["event"] == "done":
                return seqs
            assert message["event"] == "tick", message
            seq = json.loads(message["data"])["seq"]
            assert message["data"] == payload(seq), message  # relayed byte for byte
            seqs.append(seq)

    readers = [asyncio.create_task(collect(s)) for s in socks]

    def publish() -> None:
        for seq in range(EVENTS):
            assert sdk.trigger(channel, "tick", payload(seq)) == {}
        assert sdk.trigger(channel, "done", {}) == {}

    await asyncio.to_thread(publish)
    results = await asyncio.gather(*readers)
    expected = list(range(EVENTS))
    wrong = {i: got for i, got in enumerate(results) if got != expected}
    assert not wrong, (
        f"{len(wrong)} of {CLIENTS} clients got a wrong sequence, e.g. {next(iter(wrong.items()))}"
    )
    await asyncio.gather(*(s.close() for s in socks))
