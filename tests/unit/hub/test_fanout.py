"""Fan-out of one frame to many outlets, run against both twins (``py`` and ``c``)."""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

from fastrelay import _accel

FRAME = b"\x81\x05hello"


def _load(twin: str) -> ModuleType:
    try:
        return importlib.import_module(f"fastrelay.hub._fanout_{twin}")
    except ImportError:
        pytest.skip(f"fastrelay.hub._fanout_{twin} is not built")


@pytest.fixture(params=["py", "c"])
def fan(request: pytest.FixtureRequest) -> ModuleType:
    return _load(request.param)


class RecordingTransport:
    """Records what is written; reports whatever buffer size the test sets."""

    def __init__(self, buffered: int = 0) -> None:
        self.written: list[bytes] = []
        self.buffered = buffered

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered


class Overflows:
    """An ``on_overflow`` callback that counts its calls (and, like the real one, only records)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def make(fan: ModuleType, socket_id: str, *, high_water: int = 1000, buffered: int = 0):
    transport = RecordingTransport(buffered)
    overflows = Overflows()
    return fan.Outlet(socket_id, transport, high_water, overflows), transport, overflows


def test_send_writes_the_same_object(fan):
    outlet, transport, overflows = make(fan, "1.1")
    assert outlet.socket_id == "1.1"
    assert outlet.closed is False
    assert outlet.send(FRAME) is True
    assert transport.written == [FRAME]
    assert transport.written[0] is FRAME
    assert overflows.calls == 0


def test_close_refuses_later_sends(fan):
    outlet, transport, _ = make(fan, "1.1")
    outlet.close()
    assert outlet.closed is True
    assert outlet.send(FRAME) is False
    assert transport.written == []
    outlet.close()  # idempotent
    assert outlet.closed is True


def test_buffer_at_high_water_is_not_an_overflow(fan):
    outlet, transport, overflows = make(fan, "1.1", high_water=100, buffered=100)
    assert outlet.send(FRAME) is True
    assert outlet.send(FRAME) is True
    assert outlet.closed is False
    assert overflows.calls == 0
    assert len(transport.written) == 2


def test_overflow_closes_and_calls_back_once(fan):
    outlet, transport, overflows = make(fan, "1.1", high_water=100, buffered=100)
    assert outlet.send(FRAME) is True
    transport.buffered = 101
    assert outlet.send(FRAME) is True  # written, then found over the limit
    assert outlet.closed is True
    assert overflows.calls == 1
    assert outlet.send(FRAME) is False
    transport.buffered = 0
    assert outlet.send(FRAME) is False  # closed stays closed
    assert overflows.calls == 1
    assert len(transport.written) == 2


def test_outlet_is_closed_before_on_overflow_runs(fan):
    seen = []
    transport = RecordingTransport(buffered=10)

    def on_overflow() -> None:
        seen.append((outlet.closed, outlet.send(FRAME)))

    outlet = fan.Outlet("1.1", transport, 0, on_overflow)
    assert outlet.send(FRAME) is True
    assert seen == [(True, False)]
    assert len(transport.written) == 1


def test_attributes_are_read_only(fan):
    outlet, _, _ = make(fan, "1.1")
    with pytest.raises(AttributeError):
        outlet.socket_id = "2.2"
    with pytest.raises(AttributeError):
        outlet.closed = True
    assert outlet.socket_id == "1.1"
    assert outlet.closed is False


def test_fanout_to_all(fan):
    outlets = [make(fan, f"{i}.{i}") for i in range(5)]
    assert fan.fanout(FRAME, [o for o, _, _ in outlets], None) == 5
    for _, transport, _ in outlets:
        assert len(transport.written) == 1
        assert transport.written[0] is FRAME  # one bytes object for everyone, never copied


def test_fanout_excludes_the_sender(fan):
    outlets = [make(fan, f"{i}.{i}") for i in range(5)]
    assert fan.fanout(FRAME, [o for o, _, _ in outlets], "2.2") == 4
    assert [len(t.written) for _, t, _ in outlets] == [1, 1, 0, 1, 1]
    # An id that is not there excludes nobody; an equal but distinct str object still matches.
    assert fan.fanout(FRAME, [o for o, _, _ in outlets], "9.9") == 5
    sender = "".join(["3", ".", "3"])
    assert fan.fanout(FRAME, [o for o, _, _ in outlets], sender) == 4
    assert [len(t.written) for _, t, _ in outlets] == [3, 3, 2, 2, 3]


def test_fanout_skips_closed_outlets(fan):
    outlets = [make(fan, f"{i}.{i}") for i in range(4)]
    outlets[1][0].close()
    assert fan.fanout(FRAME, [o for o, _, _ in outlets], None) == 3
    assert [len(t.written) for _, t, _ in outlets] == [1, 0, 1, 1]
    assert fan.fanout(FRAME, [o for o, _, _ in outlets], "0.0") == 2


def test_fanout_overflow_counts_the_write_then_skips(fan):
    outlets = [make(fan, f"{i}.{i}", high_water=50) for i in range(3)]
    outlets[1][1].buffered = 51
    assert fan.fanout(FRAME, [o for o, _, _ in outlets], None) == 3
    assert [o.closed for o, _, _ in outlets] == [False, True, False]
    assert [calls.calls for _, _, calls in outlets] == [0, 1, 0]
    assert fan.fanout(FRAME, [o for o, _, _ in outlets], None) == 2
    assert [calls.calls for _, _, calls in outlets] == [0, 1, 0]
    assert [len(t.written) for _, t, _ in outlets] == [2, 1, 2]


@pytest.mark.parametrize("shape", ["list", "tuple", "dict-values", "set", "generator", "empty"])
def test_fanout_takes_any_iterable(fan, shape):
    outlets = {f"{i}.{i}": make(fan, f"{i}.{i}")[0] for i in range(4)}
    if shape == "empty":
        outlets = {}
    collection = {
        "list": lambda: list(outlets.values()),
        "tuple": lambda: tuple(outlets.values()),
        "dict-values": outlets.values,
        "set": lambda: set(outlets.values()),
        "generator": lambda: (o for o in outlets.values()),
        "empty": outlets.values,
    }[shape]()
    expected = len(outlets) - (1 if "1.1" in outlets else 0)
    assert fan.fanout(FRAME, collection, "1.1") == expected


def test_exception_from_a_transport_propagates(fan):
    class Broken(RecordingTransport):
        def write(self, data: bytes) -> None:
            raise RuntimeError("transport is closed")

    good, transport, _ = make(fan, "1.1")
    bad = fan.Outlet("2.2", Broken(), 1000, Overflows())
    with pytest.raises(RuntimeError):
        fan.fanout(FRAME, [good, bad], None)
    assert transport.written == [FRAME]


@pytest.mark.parametrize("item", [None, object(), "1.1"])
def test_compiled_fanout_refuses_other_objects(item):
    fan = _load("c")
    good, _, _ = make(fan, "1.1")
    with pytest.raises(TypeError):
        fan.fanout(FRAME, [good, item], None)


def test_selector_records_its_choice():
    from fastrelay.hub import _fanout_py, fanout

    try:
        from fastrelay.hub import _fanout_c
    except ImportError:  # pragma: no cover
        _fanout_c = _fanout_py
    expected = "py" if _accel.NO_EXTENSIONS or _fanout_c is _fanout_py else "c"
    assert _accel.implementations()["fanout"] == expected
    assert fanout.fanout.__module__ == f"fastrelay.hub._fanout_{expected}"
    assert fanout.Outlet.__module__ == f"fastrelay.hub._fanout_{expected}"
    assert fanout.__all__ == _fanout_py.__all__ == _fanout_c.__all__
