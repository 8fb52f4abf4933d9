"""A real ``redis-server`` per test, on a free port of 127.0.0.1, for the cluster tests.

Import it where needed (``from redisserver import RedisServer, redis_server``): the fixture
comes along with the import. Readiness is Redis's own "Ready to accept connections" log line,
read from its stdout in a thread, so nothing sleeps. With no ``redis-server`` on PATH the
fixture fails (it does not skip): ``bash scripts/test`` installs it.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

import pytest

TIMEOUT = 10.0 * float(os.environ.get("FASTRELAY_TESTS_TIMEOUT_FACTOR", "1"))
READY = "Ready to accept connections"
BIND_FAILED = "Could not create server TCP listening socket"
MISSING = (
    "redis-server is not on PATH: the Redis tests need a real server. "
    "`bash scripts/test` installs it (apt-get install redis-server)."
)


def require_redis() -> str:
    """The path of ``redis-server``, or fail the test with how to get it."""
    path = shutil.which("redis-server")
    if path is None:
        pytest.fail(MISSING, pytrace=False)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """One ``redis-server`` subprocess; ``restart()`` brings it back on the same port."""

    def __init__(self, *extra_args: str, password: str | None = None) -> None:
        self.extra_args = list(extra_args)
        self.password = password
        self.lines: list[str] = []
        self._port = 0
        self._proc: subprocess.Popen[str] | None = None
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._dir = tempfile.mkdtemp(prefix="fastrelay-redis-")

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, attempts: int = 5) -> RedisServer:
        """Start on a fresh free port; another port if that one was taken in between."""
        for _ in range(attempts):
            self._port = _free_port()
            first = len(self.lines)
            if self._launch():
                return self
            if not any(BIND_FAILED in line for line in self.lines[first:]):
                break  # not a port race: a bad argument, say; retrying will not help
        raise AssertionError("redis-server would not start:\n" + "\n".join(self.lines[-20:]))

    def restart(self) -> RedisServer:
        """Start again on the same port (after ``stop``/``kill``), waiting until ready."""
        assert self._port, "restart() needs a port from an earlier start()"
        if self.running:
            self.stop()
        if not self._launch():
            raise AssertionError(
                f"redis-server would not restart on port {self._port}:\n"
                + "\n".join(self.lines[-20:])
            )
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = TIMEOUT) -> int | None:
        """Send ``sig`` and wait for the process to exit; returns its exit status."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        # The reader thread ends at EOF, which follows the exit; then the pipe can close.
        if self._reader is not None:
            self._reader.join(timeout)
            self._reader = None
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-whatever, as in a crash."""
        self.stop(signal.SIGKILL)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def client(self) -> Callable[..., str]:
        """A synchronous ``cli("GET", "key") -> "value"`` over redis-cli, for assertions."""
        cli = shutil.which("redis-cli")
        assert cli is not None, MISSING
        base = [cli, "-h", "127.0.0.1", "-p", str(self._port)]
        env = dict(os.environ)
        if self.password is not None:
            env["REDISCLI_AUTH"] = self.password  # not on the command line

        def run(*args: str | int | bytes) -> str:
            argv = [*base, *(a.decode() if isinstance(a, bytes) else str(a) for a in args)]
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=TIMEOUT, env=env, check=False
            )
            assert done.returncode == 0, f"{argv[3:]} failed: {done.stderr or done.stdout}"
            return done.stdout.rstrip("\n")

        return run

    def __enter__(self) -> RedisServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _launch(self) -> bool:
        """Run redis-server on ``self._port``; True once it is ready, False if it exited."""
        argv = [
            require_redis(),
            "--port", str(self._port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", "",
            "--dir", self._dir,
        ]  # fmt: skip
        if self.password is not None:
            argv += ["--requirepass", self.password]
        argv += self.extra_args
        self._queue = queue.Queue()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._proc = proc
        self._reader = threading.Thread(target=self._pump, args=(proc, self._queue), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop(signal.SIGKILL)
                raise AssertionError(
                    f"redis-server not ready within {TIMEOUT}s:\n" + "\n".join(self.lines[-20:])
                )
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.stop()
                return False
            if READY in line:
                return True

    def _pump(self, proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))
            lines.put(line)
        lines.put(None)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A started redis-server for one test, always stopped afterwards."""
    require_redis()
    with RedisServer() as server:
        yield server
