"""``--workers N``: a supervisor and N real server processes sharing one port (SO_REUSEPORT).

Decisions under test: more than one worker needs Redis (exit 2, one line); the supervisor logs
"listening on" once every worker listens, then the worker pids; SIGHUP reaches every worker; a
worker killed with SIGKILL is started again and the port keeps answering; SIGTERM to the
supervisor stops every worker and exits 0, SIGKILLing one that does not stop in time; a worker
that cannot start stops the group with its exit code instead of looping.
These tests are about processes, ports and signals; state shared over Redis is tested elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from redisserver import RedisServer, redis_server  # noqa: F401  (the fixture comes along)

from conftest import BASE_ENV, TIMEOUT, ServerProcess, connect, http, start_server
from fastrelay.server.workers import KILL_MARGIN, child_argv

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="workers need SO_REUSEPORT and POSIX signals"
)


def run_module(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m fastrelay`` to completion, with only the harness's fastrelay variables."""
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("RELAY_", "SOKETI_", "REVERB_"))
    }
    environ.update(BASE_ENV, **env)
    return subprocess.run(
        [sys.executable, "-m", "fastrelay", "--host", "127.0.0.1", "--port", "0", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=4 * TIMEOUT,
    )


def start_workers(make_server: Any, redis: RedisServer, count: int = 2) -> ServerProcess:
    return make_server({"RELAY_REDIS_URL": redis.url}, ["--workers", str(count)])


def worker_pids(srv: ServerProcess, count: int = 2) -> list[int]:
    line = srv.wait_for_log(f"{count} workers: pids ")
    pids = [int(pid) for pid in line.split("pids ", 1)[1].split()]
    assert len(pids) == count and len(set(pids)) == count, line
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def parent_of(pid: int) -> int | None:
    """The parent pid from /proc (Linux), or None where there is no /proc."""
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        return None
    # The command name in parentheses may hold spaces: split after its closing one.
    return int(stat.read_text().rsplit(")", 1)[1].split()[1])


async def connect_many(srv: ServerProcess, count: int) -> None:
    """``count`` WebSocket connections at once, each up to pusher:connection_established."""
    sockets = await asyncio.gather(*(connect(srv) for _ in range(count)))
    assert len({sock.socket_id for sock in sockets}) == count
    await asyncio.gather(*(sock.close() for sock in sockets))


def health(srv: ServerProcess) -> int:
    status, _, _ = http("GET", f"{srv.http}/health")
    return status


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "env"), [(["--workers", "2"], {}), ([], {"RELAY_WORKERS": "2"})])
def test_workers_without_redis_exit_2_with_one_line(args: list[str], env: dict[str, str]) -> None:
    result = run_module(*args, **env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "fastrelay: error: --workers 2 needs Redis (RELAY_REDIS_URL) so the workers share "
        "channels and presence"
    ]


@pytest.mark.parametrize(
    ("argv", "kept"),
    [
        (["--workers", "4", "--debug"], ["--debug"]),
        (["--workers=4", "--port=0", "--reuse-port", "--host", "::"], ["--host", "::"]),
        (
            ["--port", "6001", "--no-reuse-port", "--redis-url", "redis://r"],
            ["--redis-url", "redis://r"],
        ),
        (["--metrics-port", "9601", "--app-id", "7"], ["--metrics-port", "9601", "--app-id", "7"]),
    ],
)
def test_child_argv_drops_what_the_environment_sets(argv: list[str], kept: list[str]) -> None:
    # Flags beat RELAY_*: left in, they would override the port and worker count given.
    assert child_argv(argv) == kept


# -- the processes -----------------------------------------------------------------------------


async def test_workers_serve_one_port_and_stop_on_sigterm(
    make_server: Any,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    srv = start_workers(make_server, redis_server)
    pids = worker_pids(srv)
    assert all(alive(pid) for pid in pids)
    if parent_of(pids[0]) is not None:
        assert {parent_of(pid) for pid in pids} == {srv.proc.pid}
    supervisor = next(
        line for line in srv.lines if "[worker" not in line and "listening on" in line
    )
    assert supervisor.endswith(f"fastrelay listening on http://127.0.0.1:{srv.port}")
    # Each worker tags its lines and listens on the supervisor's port.
    for index in range(2):
        srv.wait_for_log(f"[worker {index}]: fastrelay listening on http://127.0.0.1:{srv.port}")

    await connect_many(srv, 8)
    assert health(srv) == 200

    # SIGHUP reaches every worker, each reloads its apps and keeps running.
    srv.proc.send_signal(signal.SIGHUP)
    for index in range(2):
        srv.wait_for_log(f"[worker {index}]: reloaded 1 apps")
    assert all(alive(pid) for pid in pids)

    assert srv.stop(signal.SIGTERM) == 0, "\n".join(srv.lines)
    assert not any(alive(pid) for pid in pids)
    for index in range(2):
        assert any(f"[worker {index}]: shutting down" in line for line in srv.lines)


async def test_a_killed_worker_is_restarted(
    make_server: Any,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    srv = start_workers(make_server, redis_server)
    pids = worker_pids(srv)
    await connect_many(srv, 4)

    os.kill(pids[0], signal.SIGKILL)
    warning = srv.wait_for_log(f"(pid {pids[0]}) was killed by SIGKILL; restarting it")
    assert " WARNING " in warning and "worker 0" in warning
    line = srv.wait_for_log("worker 0 restarted: pid ", timeout=2 * TIMEOUT)
    new_pid = int(line.rsplit(" ", 1)[1])
    assert new_pid not in pids and alive(new_pid) and alive(pids[1])

    await connect_many(srv, 8)
    assert health(srv) == 200

    assert srv.stop(signal.SIGTERM) == 0, "\n".join(srv.lines)
    assert not alive(new_pid) and not alive(pids[1])


async def test_workers_die_with_a_killed_supervisor(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    srv = start_server({"RELAY_REDIS_URL": redis_server.url}, ["--workers", "2"])
    pids = worker_pids(srv)
    srv.proc.send_signal(signal.SIGKILL)  # no chance to stop them: the kernel must
    assert srv.proc.wait(TIMEOUT) == -signal.SIGKILL
    deadline = time.monotonic() + TIMEOUT
    while any(running(pid) for pid in pids):
        assert time.monotonic() < deadline, f"workers {pids} outlived their supervisor"
        await asyncio.sleep(0.05)


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan here may never be reaped)."""
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        return alive(pid)
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_a_worker_that_ignores_sigterm_is_killed(
    make_server: Any,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    srv = make_server(
        {"RELAY_REDIS_URL": redis_server.url}, ["--workers", "2", "--shutdown-grace-period", "0"]
    )
    pids = worker_pids(srv)
    # A stopped process leaves SIGTERM pending; only SIGKILL ends it.
    os.kill(pids[0], signal.SIGSTOP)
    srv.proc.send_signal(signal.SIGTERM)
    line = srv.wait_for_log(f"(pid {pids[0]}) still runs {KILL_MARGIN:g} s after SIGTERM")
    assert " WARNING " in line
    assert srv.stop() == 0, "\n".join(srv.lines)
    assert not any(alive(pid) for pid in pids)


def test_a_worker_that_cannot_start_stops_the_group(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    missing = str(tmp_path / "missing.pem")
    result = run_module(
        "--workers", "2", "--ssl-cert", missing, "--ssl-key", missing,
        RELAY_REDIS_URL=redis_server.url,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "fastrelay: error: " in result.stderr
    assert "before it listened; stopping the other workers" in result.stderr
    assert "listening on" not in result.stderr
