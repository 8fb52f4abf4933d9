"""Fan-out of one frame: pure twin vs compiled twin.

Run ``python bench/bench_fanout.py`` (build the extensions first). The fake transport's
``write`` is a no-op Python method, so the table shows the loop's own overhead; real transports
cost more per write and shrink the ratio.
"""

from __future__ import annotations

import importlib
import os
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

SRC = Path(__file__).resolve().parent.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

FRAME = b"\x81\x4b" + b'{"event":"client-move","channel":"presence-room-42","data":{"x":12,"y":7}}'
COUNTS = [1_000, 10_000]
REPEAT = 7
MIN_TIME = 0.07  # seconds per repeat


class NoopTransport:
    """Accepts every write and never buffers: only the fan-out loop is measured."""

    def write(self, data: bytes) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


class BuiltinTransport:
    """Like uvloop's transport, its methods are C functions: no Python frame per write.

    ``write`` is ``len`` and ``get_write_buffer_size`` is ``int`` (``int()`` is 0); neither is
    a descriptor, so ``transport.write(data)`` calls ``len(data)``.
    """

    write = len
    get_write_buffer_size = int


def load(twin: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"fastrelay.hub._fanout_{twin}")
    except ImportError:
        return None


def median_per_op(funcs: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Median seconds per call of each function. The twins' runs are interleaved, so a burst
    of load from elsewhere on the machine hits both rather than skewing the ratio."""
    timers = {twin: timeit.Timer(func) for twin, func in funcs.items()}
    numbers = {twin: max(1, int(t.autorange()[0] * MIN_TIME / 0.2)) for twin, t in timers.items()}
    runs: dict[str, list[float]] = {twin: [] for twin in timers}
    for _ in range(REPEAT):
        for twin, timer in timers.items():
            runs[twin].append(timer.timeit(numbers[twin]) / numbers[twin])
    return {twin: statistics.median(values) for twin, values in runs.items()}


def fanout_case(fan: ModuleType, count: int, except_id: str | None) -> Callable[[], object]:
    # A dict of socket_id -> Outlet, iterated through .values(), as the hub holds them.
    outlets = {
        f"{i}.{i * 7}": fan.Outlet(f"{i}.{i * 7}", NoopTransport(), 1 << 20, lambda: None)
        for i in range(count)
    }
    values = outlets.values()
    expected = count - (except_id in outlets)
    assert fan.fanout(FRAME, values, except_id) == expected
    run = fan.fanout
    return lambda: run(FRAME, values, except_id)


def corked_case(fan: ModuleType, count: int) -> Callable[[], object]:
    """As the server runs it: outlets share a Corker; one publish queues a frame on each, then
    the end-of-iteration flush writes each outlet's queue with one C-level ``write``."""
    corker = fan.Corker(lambda callback: None)  # flushed by hand below
    outlets = {
        f"{i}.{i * 7}": fan.Outlet(
            f"{i}.{i * 7}", BuiltinTransport(), 1 << 20, lambda: None, corker
        )
        for i in range(count)
    }
    values = outlets.values()
    run, flush = fan.fanout, corker.flush

    def publish() -> None:
        run(FRAME, values, None)
        flush()

    publish()
    return publish


def fmt(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    for unit, scale in (("ns", 1e9), ("µs", 1e6), ("ms", 1e3)):
        if seconds * scale < 1000:
            return f"{seconds * scale:.1f} {unit}"
    return f"{seconds:.2f} s"


def row(label: str, count: int, times: dict[str, float]) -> None:
    """One markdown row: both twins' time per fan-out and per outlet, and their ratio."""
    py, c = times.get("py"), times.get("c")
    ratio = f"{py / c:.2f}x" if py and c else "n/a"
    per_py = fmt(py / count) if py else "n/a"
    per_c = fmt(c / count) if c else "n/a"
    print(f"| {label} | {fmt(py)} | {fmt(c)} | {ratio} | {per_py} | {per_c} |")


def main() -> None:
    twins = {twin: load(twin) for twin in ("py", "c")}
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; median of {REPEAT} runs")
    print("Fake transport: write() and get_write_buffer_size() are no-op Python methods;")
    print("real transports cost more per write, so real fan-out is slower and the ratio smaller.\n")
    print("| case | py | c | py/c | py per outlet | c per outlet |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for count in COUNTS:
        for except_id, label in ((None, "to all"), ("5.35", "except sender")):
            cases = {t: fanout_case(fan, count, except_id) for t, fan in twins.items() if fan}
            row(f"fanout {count:,} outlets, {label}", count, median_per_op(cases))
    for count in COUNTS:
        cases = {t: corked_case(fan, count) for t, fan in twins.items() if fan}
        row(f"corked fanout + flush, {count:,} outlets, C-level write", count, median_per_op(cases))
    if twins["c"] is None:
        print("\nThe compiled twin is not built: run the build_ext step first.")


if __name__ == "__main__":
    main()
