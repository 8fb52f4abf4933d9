"""Frame codec: pure twin vs compiled twin.

Run ``python bench/bench_frames.py`` (build the extensions first). Prints the median time per
operation for each twin and the ratio py/c as a markdown table.
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

OP_TEXT = 1
KEY = b"\x37\xfa\x21\x3d"
SIZES = [("16 B", 16), ("1 KiB", 1024), ("64 KiB", 65536)]
REPEAT = 7
MIN_TIME = 0.05  # seconds per repeat


def load(twin: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"fastrelay.wire._frames_{twin}")
    except ImportError:
        return None


def json_like(size: int) -> bytes:
    """ASCII that looks like a Pusher event, repeated to ``size`` bytes."""
    unit = b'{"event":"client-move","channel":"presence-room-42","data":{"x":12,"y":-7}}'
    return (unit * (size // len(unit) + 1))[:size]


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


def parse_case(frames: ModuleType, size: int) -> Callable[[], object]:
    frame = frames.encode_frame(OP_TEXT, json_like(size), KEY)
    parser = frames.FrameParser(1 << 20)
    assert parser.feed(frame) == [(OP_TEXT, json_like(size))]
    feed = parser.feed
    return lambda: feed(frame)


def encode_case(frames: ModuleType, size: int) -> Callable[[], object]:
    payload = json_like(size)
    encode = frames.encode_frame
    return lambda: encode(OP_TEXT, payload)


def fmt(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    for unit, scale in (("ns", 1e9), ("µs", 1e6), ("ms", 1e3)):
        if seconds * scale < 1000:
            return f"{seconds * scale:.1f} {unit}"
    return f"{seconds:.2f} s"


def main() -> None:
    twins = {twin: load(twin) for twin in ("py", "c")}
    cases = [(f"parse masked text {label}", parse_case, size) for label, size in SIZES]
    cases += [(f"encode text {label}", encode_case, size) for label, size in SIZES]
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; median of {REPEAT} runs\n")
    print("| case | py | c | py/c |")
    print("| --- | ---: | ---: | ---: |")
    for name, make, size in cases:
        times = median_per_op({t: make(m, size) for t, m in twins.items() if m is not None})
        py, c = times.get("py"), times.get("c")
        ratio = f"{py / c:.1f}x" if py and c else "n/a"
        print(f"| {name} | {fmt(py)} | {fmt(c)} | {ratio} |")
    if twins["c"] is None:
        print("\nThe compiled twin is not built: run the build_ext step first.")


if __name__ == "__main__":
    main()
