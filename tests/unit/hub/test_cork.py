"""Corked outlets: frames queued per socket, one write per loop iteration, order kept."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType

import pytest


def _load(twin: str) -> ModuleType:
    try:
        return importlib.import_module(f"fastrelay.hub._fanout_{twin}")
    except ImportError:
        pytest.skip(f"fastrelay.hub._fanout_{twin} is not built")


@pytest.fixture(params=["py", "c"])
def fan(request: pytest.FixtureRequest) -> ModuleType:
    return _load(request.param)


class Transport:
    def __init__(self, buffered: int = 0) -> None:
        self.written: list[bytes] = []
        self.buffered = buffered

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered


class Loop:
    """Stands in for ``loop.call_soon``: keeps the callbacks until the test runs them."""

    def __init__(self) -> None:
        self.ready: list[Callable[[], None]] = []

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.ready.append(callback)

    def run_once(self) -> None:
        ready, self.ready = self.ready, []
        for callback in ready:
            callback()


def corked(fan: ModuleType, count: int, *, high_water: int = 1 << 20, buffered: int = 0):
    loop = Loop()
    corker = fan.Corker(loop.call_soon)
    overflows: list[str] = []
    transports = [Transport(buffered) for _ in range(count)]
    outlets = [
        fan.Outlet(f"{i}.1", t, high_water, lambda i=i: overflows.append(f"{i}.1"), corker)
        for i, t in enumerate(transports)
    ]
    return loop, corker, outlets, transports, overflows


def test_frames_of_one_iteration_become_one_write_per_socket(fan):
    loop, _corker, outlets, transports, _ = corked(fan, 3)
    assert fan.fanout(b"a", outlets, None) == 3
    assert fan.fanout(b"b", outlets, "1.1") == 2
    assert fan.fanout(b"c", outlets, None) == 3
    assert all(t.written == [] for t in transports)  # nothing written before the flush
    assert len(loop.ready) == 1  # one flush scheduled, however many frames
    loop.run_once()
    assert [t.written for t in transports] == [[b"abc"], [b"ac"], [b"abc"]]
    fan.fanout(b"d", outlets, None)
    loop.run_once()
    assert [t.written[-1] for t in transports] == [b"d", b"d", b"d"]


def test_a_single_frame_is_written_as_is(fan):
    loop, _corker, outlets, transports, _ = corked(fan, 1)
    frame = b"\x81\x05hello"
    outlets[0].send(frame)
    loop.run_once()
    assert transports[0].written[0] is frame  # no copy when there is nothing to join


def test_close_writes_what_is_queued_first(fan):
    loop, _corker, outlets, transports, _ = corked(fan, 1)
    outlets[0].send(b"a")
    outlets[0].send(b"b")
    outlets[0].close()
    assert transports[0].written == [b"ab"]
    assert outlets[0].send(b"c") is False
    loop.run_once()
    assert transports[0].written == [b"ab"]


def test_explicit_flush_keeps_order_with_direct_writes(fan):
    loop, _corker, outlets, transports, _ = corked(fan, 1)
    outlets[0].send(b"queued")
    outlets[0].flush()
    transports[0].write(b"direct")
    loop.run_once()
    assert transports[0].written == [b"queued", b"direct"]


def test_overflow_is_detected_at_flush(fan):
    loop, _corker, outlets, transports, overflows = corked(fan, 2, high_water=10, buffered=11)
    fan.fanout(b"x", outlets, None)
    assert overflows == []
    loop.run_once()
    assert overflows == ["0.1", "1.1"]
    assert all(o.closed for o in outlets)
    assert fan.fanout(b"y", outlets, None) == 0
    loop.run_once()
    assert [t.written for t in transports] == [[b"x"], [b"x"]]


def test_uncorked_outlets_write_at_once(fan):
    transport = Transport()
    outlet = fan.Outlet("1.1", transport, 1 << 20, lambda: None)
    outlet.send(b"now")
    assert transport.written == [b"now"]
    outlet.flush()  # nothing queued: a no-op
    assert transport.written == [b"now"]
