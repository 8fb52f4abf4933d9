"""Shared test doubles for the sans-I/O layers: a recording transport and a pair of hub clients."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from fastrelay.config import App
from fastrelay.hub.fanout import Outlet
from fastrelay.hub.hub import Hub
from fastrelay.hub.state import Client
from fastrelay.protocol.session import Session
from fastrelay.wire.frames import FrameParser


class RecordingTransport:
    """Stands in for an asyncio transport at the unit level: keeps what was written."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Peer:
    """One connection to a hub, driven through its Session, with what it received decoded."""

    def __init__(self, hub: Hub, app: App, socket_id: str, clock: FakeClock) -> None:
        self.transport = RecordingTransport()
        self.terminated: list[tuple[int, str]] = []
        self.authorized = 0
        outlet = Outlet(socket_id, self.transport, 1 << 20, lambda: None)
        self.client = Client(
            app, socket_id, outlet, lambda code, msg: self.terminated.append((code, msg))
        )
        self.session = Session(self.client, hub, clock=clock, on_authorized=self._authorized)
        hub.add_client(self.client)
        self._parser = FrameParser(1 << 24, require_mask=False)
        self._seen = 0

    def _authorized(self) -> None:
        self.authorized += 1

    @property
    def socket_id(self) -> str:
        return self.client.socket_id

    def send(self, event: str, data: Any = None, **extra: Any) -> None:
        message = {"event": event, **({"data": data} if data is not None else {}), **extra}
        self.session.receive_message(json.dumps(message).encode())

    def received(self) -> list[dict[str, Any]]:
        """Messages written since the last call, decoded from their WebSocket frames."""
        new = self.transport.written[self._seen :]
        self._seen = len(self.transport.written)
        out = []
        for frame in new:
            for _opcode, payload in self._parser.feed(frame):
                out.append(json.loads(payload))
        return out


@pytest.fixture
def app() -> App:
    return App(id="app-id", key="app-key", secret="app-secret")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def webhooks() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def timers() -> list[tuple[float, Callable[[], None]]]:
    return []


@pytest.fixture
def hub(clock: FakeClock, webhooks: list[dict[str, Any]], timers: list[Any]) -> Hub:
    def call_later(delay: float, callback: Callable[[], None]) -> Any:
        timers.append((delay, callback))

        class Handle:
            def cancel(self) -> None:
                pass

        return Handle()

    return Hub(
        clock=clock,
        call_later=call_later,
        cache_ttl=1800,
        emit_webhook=lambda app, event: webhooks.append(event),
    )


@pytest.fixture
def peer(hub: Hub, clock: FakeClock) -> Callable[..., Peer]:
    counter = iter(range(1, 10_000))

    def make(app: App, socket_id: str | None = None) -> Peer:
        return Peer(hub, app, socket_id or f"{next(counter)}.{next(counter)}", clock)

    return make
