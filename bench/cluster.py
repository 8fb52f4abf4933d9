"""Fan-out through Redis: 1, 2 and 4 worker processes against one node without Redis.

    pip install -e '.[bench]'            # fastrelay with its compiled hot path
    python bench/cluster.py --repeat 3   # needs redis-server (Debian: apt-get install redis-server)

Starts a redis-server on a free port and four servers, each as users start them:

- ``local``: ``python -m fastrelay`` alone (the baseline: no Redis at all);
- ``redis-1``: one process with ``--redis-url``;
- ``redis-2`` / ``redis-4``: ``--workers 2`` / ``--workers 4`` with ``--redis-url``, sharing the
  port through SO_REUSEPORT, so the subscribers spread over the workers and every publish
  crosses Redis to the workers that did not receive it.

Then runs ``fastrelay bench compare`` on them with the fan-out scenario (1,000 subscribers on
one channel, closed-loop publishing) and writes results into bench/results/cluster/. The load
generator is pinned to the last CPU; the servers and Redis are not pinned, since spreading over
cores is what workers are for. On a 2-core machine the load generator shares the cores with
them: read the ratios as what this box does, not as the scaling of a larger one. Server CPU
is summed over each server's processes (the supervisor and its workers); Redis's is not in it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
KEY, SECRET, APP_ID = "bench-key", "bench-secret", "bench"
WORKERS = (1, 2, 4)
START_TIMEOUT = 30.0

ARGS = (
    "compare",
    "--scenarios", "fanout",
    "--subscribers", "1000",
    "--rates", "max",
    "--duration", "5",
)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_redis() -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server not found: apt-get install redis-server")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--logfile", ""],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    for line in proc.stdout:
        if b"Ready to accept connections" in line:
            return proc, f"redis://127.0.0.1:{port}/0"
        if time.monotonic() > deadline:
            break
    proc.kill()
    sys.exit("redis-server did not start")


def _start_server(extra: list[str]) -> tuple[subprocess.Popen[str], int]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "SOKETI_"))},
        "RELAY_APP_ID": APP_ID,
        "RELAY_APP_KEY": KEY,
        "RELAY_APP_SECRET": SECRET,
        "RELAY_EVENT_LOG_ENABLED": "false",
        "PYTHONPATH": str(SRC),
    }
    cmd = [sys.executable, "-m", "fastrelay", "--host", "127.0.0.1", "--port", "0", *extra]
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
    )
    assert proc.stderr is not None
    # With --workers, the supervisor logs "N workers: pids …" once every worker listens.
    ready = " workers: pids " if "--workers" in extra else "listening on"
    port = 0
    for line in proc.stderr:
        if "listening on" in line:
            port = int(line.rstrip().rsplit(":", 1)[1])
        if ready in line and port:
            # Keep reading the log so the pipe never fills and blocks the server.
            _drain(proc)
            return proc, port
    sys.exit(f"{' '.join(cmd)} did not start")


def _drain(proc: subprocess.Popen[str]) -> None:
    import threading

    def pump() -> None:
        assert proc.stderr is not None
        for _ in proc.stderr:
            pass

    threading.Thread(target=pump, daemon=True).start()


def _stop(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    try:
        import fastrelay.bench
    except ImportError:  # a fresh clone without pip install: use the source tree
        sys.path.insert(0, str(SRC))
        import fastrelay.bench

    redis, url = _start_redis()
    servers: list[subprocess.Popen[str]] = []
    targets: list[str] = []
    try:
        configurations = [("local", [])] + [
            (f"redis-{n}", ["--redis-url", url] + (["--workers", str(n)] if n > 1 else []))
            for n in WORKERS
        ]
        for name, extra in configurations:
            proc, port = _start_server(extra)
            servers.append(proc)
            # pid: the tool reads CPU and memory of the process and its workers from /proc.
            targets.append(
                f"{name}=http://{KEY}:{SECRET}@127.0.0.1:{port}/apps/{APP_ID}?pid={proc.pid}"
            )
        out = os.path.relpath(HERE / "results" / "cluster")
        last_cpu = max(os.sched_getaffinity(0))
        return fastrelay.bench.main(
            [
                *ARGS,
                "--targets",
                ",".join(targets),
                "--pin-load",
                str(last_cpu),
                "--out",
                out,
                *sys.argv[1:],
            ]
        )
    finally:
        for proc in servers:
            _stop(proc)
        _stop(redis)


if __name__ == "__main__":
    sys.exit(main())
