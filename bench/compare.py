"""fastrelay against Soketi 1.6.1: the comparison whose results are committed in bench/results/.

    pip install -e '.[bench]'      # fastrelay with its compiled hot path, and matplotlib
    python bench/compare.py --repeat 3   # about 5 minutes on 2 cores; npm installs Soketi

It runs ``fastrelay bench compare`` with the arguments below (extra arguments are appended, so
``python bench/compare.py --repeat 3`` takes medians of three runs) and writes results.json,
results.md and latency.png into bench/results/. Soketi is installed on first use into
~/.cache/fastrelay-bench/soketi (see ``fastrelay.bench.targets.SoketiInstall``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

# The server on CPU 0, the load generator on CPU 1; 1,000 subscribers on one channel for the
# fan-out, stepped from 50 publishes/s to the closed-loop maximum, 3 s per step.
ARGS = (
    "compare",
    "--targets", "soketi,fastrelay",
    "--scenarios", "fanout,connections,rest,client-events,presence-churn",
    "--subscribers", "1000",
    "--rates", "50,100,200,400,max",
    "--duration", "3",
    "--connections", "10000",
    "--channels", "10",
    "--pin-server", "0",
    "--pin-load", "1",
)  # fmt: skip


def main() -> int:
    try:
        import fastrelay.bench
    except ImportError:  # a fresh clone without pip install: use the source tree
        sys.path.insert(0, str(SRC))
        import fastrelay.bench

    out = os.path.relpath(HERE / "results")  # bench/results from the repository root
    return fastrelay.bench.main([*ARGS, "--out", out, *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
