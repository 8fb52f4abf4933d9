"""``--workers N``: N server processes sharing one port through SO_REUSEPORT, and their supervisor.

The supervisor serves nothing. It reserves the port, starts N ``python -m fastrelay`` children
with the same flags, waits until each one listens, then watches them:

* each child gets ``RELAY_WORKERS=1``, ``RELAY_REUSE_PORT=true``, ``RELAY_PORT=<port>`` and
  ``FASTRELAY_WORKER_INDEX=<i>``; ``--workers``, ``--port`` and ``--reuse-port`` are taken out of
  its argv, since flags beat the environment;
* a child reports that it listens by calling :func:`notify_ready`, which writes one line to the
  pipe named by ``FASTRELAY_READY_FD``; once all have, the supervisor logs
  ``fastrelay listening on …`` as a single node does;
* SIGTERM/SIGINT: SIGTERM to every child, SIGKILL to those still running after their grace
  period plus :data:`KILL_MARGIN`, exit 0. SIGHUP: passed on (the children reload their apps);
* a child that dies once the group serves is started again, after a growing pause when it
  keeps dying soon after its start; a child that fails before the group first listens stops
  the whole group, with the child's exit code (a bad certificate or a busy metrics port would
  only fail again).

Every worker has its own connections, so channels and presence are only shared through Redis:
more than one worker needs ``RELAY_REDIS_URL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from .._process import parent_death_signal
from ..config import Config
from ..errors import ConfigError

__all__ = ["Supervisor", "child_argv", "notify_ready", "reserve_port", "run_workers"]

log = logging.getLogger("fastrelay")

READY_FD_ENV = "FASTRELAY_READY_FD"
WORKER_INDEX_ENV = "FASTRELAY_WORKER_INDEX"
KILL_MARGIN = 5.0  # seconds past the children's shutdown grace period before SIGKILL
STABLE_AFTER = 5.0  # a worker that ran this long before dying is restarted at once
FIRST_BACKOFF = 1.0  # then doubled while the worker keeps dying soon after its start
MAX_BACKOFF = 30.0

# Settings the supervisor hands its children through the environment. Flags beat RELAY_*
# variables, so these are removed from the children's argv; True = the flag takes a value.
_OWN_FLAGS = {"--workers": True, "--port": True, "--reuse-port": False, "--no-reuse-port": False}


def notify_ready(port: int) -> None:
    """Tell the supervisor that this worker listens on ``port``; a no-op outside ``--workers``.

    Called once, after the node started listening. Writes ``ready <pid> <port>`` to the pipe
    named by ``FASTRELAY_READY_FD`` and closes it.
    """
    value = os.environ.pop(READY_FD_ENV, None)
    if value is None:
        return
    try:
        fd = int(value)
    except ValueError:
        log.warning("ignoring %s=%r: not a file descriptor", READY_FD_ENV, value)
        return
    try:
        # One short write on a pipe is atomic: lines of several workers never interleave.
        os.write(fd, f"ready {os.getpid()} {port}\n".encode())
    except OSError:
        pass  # the supervisor is gone; there is nobody to tell
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def child_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` without the flags the supervisor sets through the environment.

    Handles both ``--workers 4`` and ``--workers=4``.
    """
    kept: list[str] = []
    skip_value = False
    for arg in argv:
        if skip_value:
            skip_value = False
            continue
        name, equals, _ = arg.partition("=")
        if name in _OWN_FLAGS:
            skip_value = _OWN_FLAGS[name] and not equals
            continue
        kept.append(arg)
    return kept


def reserve_port(host: str, port: int, attempts: int = 10) -> tuple[int, list[socket.socket]]:
    """Bind (never listen) SO_REUSEPORT sockets on every address of ``host``; returns the port.

    With ``port == 0`` the kernel picks a free one. The sockets stay bound while the supervisor
    runs, so the port stays ours even while every worker is down; since they do not listen, the
    kernel never hands them a connection. Raises :class:`ConfigError` when the port is taken.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    # One socket per address, as the workers' create_server binds them.
    addresses = list(dict.fromkeys((family, sockaddr[0]) for family, *_, sockaddr in infos))
    error: OSError | None = None
    for _ in range(attempts):
        chosen = port
        sockets: list[socket.socket] = []
        try:
            for family, address in addresses:
                sock = socket.socket(family, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    # asyncio's create_server sets this too; the two families are bound apart.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((address, chosen))
                chosen = sock.getsockname()[1]
            return chosen, sockets
        except OSError as exc:
            for sock in sockets:
                sock.close()
            error = exc
            if port != 0:
                break  # a given port will not come free by trying again
    assert error is not None
    raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror or error}")


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0  # loop time of the last start
    ready: bool = False
    backoff: float = 0.0  # the last pause before a restart; 0 after a good run
    restart: asyncio.TimerHandle | None = None


class Supervisor:
    """Starts, watches, restarts and stops the worker processes; serves nothing itself."""

    def __init__(self, config: Config, argv: Sequence[str], port: int) -> None:
        self.config = config
        self.port = port
        self._argv = [sys.executable, "-m", "fastrelay", *child_argv(argv)]
        self._workers = [_Worker(index) for index in range(config.workers)]
        self._serving = False  # every worker has listened once
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Future[int] | None = None
        self._all_exited: asyncio.Event | None = None
        self._ready_r = -1
        self._ready_w = -1
        self._ready_buffer = b""

    @property
    def pids(self) -> list[int]:
        """Process ids of the running workers, in worker order."""
        return [worker.proc.pid for worker in self._workers if worker.proc is not None]

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (returns 0) or until a worker fails to start (its code)."""
        loop = self._loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        self._all_exited = asyncio.Event()
        # The supervisor keeps the write end, to give it to every restarted worker as well.
        self._ready_r, self._ready_w = os.pipe()
        os.set_blocking(self._ready_r, False)
        loop.add_reader(self._ready_r, self._read_ready)
        # Handlers before the first child: an early exit or signal must not go unnoticed.
        loop.add_signal_handler(signal.SIGCHLD, self._reap)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._request_stop, signum)
        loop.add_signal_handler(signal.SIGHUP, self._forward_reload)
        try:
            for worker in self._workers:
                if not self._spawn(worker):
                    self._finish(1)
                    break
            code = await self._done
            await self._stop_all()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                loop.remove_signal_handler(signum)
            # As a node does: a repeated signal must not turn a clean exit into a killed one.
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(signum, signal.SIG_IGN)
            loop.remove_reader(self._ready_r)
            os.close(self._ready_r)
            os.close(self._ready_w)
        return code

    def _spawn(self, worker: _Worker) -> bool:
        assert self._loop is not None
        env = {
            **os.environ,
            "RELAY_WORKERS": "1",
            "RELAY_REUSE_PORT": "true",
            "RELAY_PORT": str(self.port),
            WORKER_INDEX_ENV: str(worker.index),
            READY_FD_ENV: str(self._ready_w),
        }
        try:
            worker.proc = subprocess.Popen(
                self._argv,
                env=env,
                stdin=subprocess.DEVNULL,
                pass_fds=(self._ready_w,),
                # A supervisor killed outright (SIGKILL) takes its workers with it.
                preexec_fn=parent_death_signal(),
            )
        except OSError as exc:
            log.error("cannot start worker %d: %s", worker.index, exc)
            return False
        worker.started = self._loop.time()
        worker.ready = False
        return True

    def _respawn(self, worker: _Worker) -> None:
        worker.restart = None
        if self._stopping:
            return
        if not self._spawn(worker):
            self._schedule_restart(worker, quick_death=True)

    def _schedule_restart(self, worker: _Worker, *, quick_death: bool) -> float:
        assert self._loop is not None
        if not quick_death:
            worker.backoff = 0.0
        elif worker.backoff == 0.0:
            worker.backoff = FIRST_BACKOFF
        else:
            worker.backoff = min(MAX_BACKOFF, worker.backoff * 2)
        worker.restart = self._loop.call_later(worker.backoff, self._respawn, worker)
        return worker.backoff

    def _read_ready(self) -> None:
        try:
            data = os.read(self._ready_r, 4096)
        except BlockingIOError:
            return
        self._ready_buffer += data
        *lines, self._ready_buffer = self._ready_buffer.split(b"\n")
        for line in lines:
            parts = line.split()
            if len(parts) == 3 and parts[0] == b"ready" and parts[1].isdigit():
                self._worker_ready(int(parts[1]))
            else:
                log.warning("workers: ignoring an unexpected message %r", line)

    def _worker_ready(self, pid: int) -> None:
        # A pid no worker has any more: it reported, then died before this line was read.
        worker = next((w for w in self._workers if w.proc is not None and w.proc.pid == pid), None)
        if worker is None or worker.ready or self._stopping:
            return
        worker.ready = True
        if self._serving:
            log.info("worker %d restarted: pid %d", worker.index, pid)
            return
        if all(w.ready for w in self._workers):
            self._serving = True
            scheme = "https" if self.config.ssl_cert and self.config.ssl_key else "http"
            # Keep HOST:PORT at the end: scripts and the test harness read the port from it.
            log.info("fastrelay listening on %s://%s:%d", scheme, self.config.host, self.port)
            log.info("%d workers: pids %s", len(self._workers), " ".join(map(str, self.pids)))

    def _reap(self) -> None:
        """SIGCHLD: collect every worker that exited (signals coalesce, so look at all)."""
        for worker in self._workers:
            if worker.proc is None:
                continue
            code = worker.proc.poll()
            if code is None:
                continue
            pid, worker.proc, was_ready = worker.proc.pid, None, worker.ready
            worker.ready = False
            if self._stopping:
                if code != 0:
                    log.info("worker %d (pid %d) %s", worker.index, pid, _describe_exit(code))
            elif not self._serving and not was_ready:
                log.error(
                    "worker %d (pid %d) %s before it listened; stopping the other workers",
                    worker.index,
                    pid,
                    _describe_exit(code),
                )
                self._finish(code if code > 0 else 1)
            else:
                assert self._loop is not None
                quick = self._loop.time() - worker.started < STABLE_AFTER
                delay = self._schedule_restart(worker, quick_death=quick)
                log.warning(
                    "worker %d (pid %d) %s; restarting it%s",
                    worker.index,
                    pid,
                    _describe_exit(code),
                    f" in {delay:g} s" if delay else "",
                )
        if self._stopping and all(w.proc is None for w in self._workers):
            assert self._all_exited is not None
            self._all_exited.set()

    def _request_stop(self, signum: int) -> None:
        log.info("received %s", signal.Signals(signum).name)
        self._finish(0)

    def _finish(self, code: int) -> None:
        self._stopping = True
        assert self._done is not None
        if not self._done.done():
            self._done.set_result(code)

    def _forward_reload(self) -> None:
        # Only to workers that listen: one still starting has no SIGHUP handler yet (it would
        # die of it) and reads the configuration anyway.
        ready = [w.proc for w in self._workers if w.proc is not None and w.ready]
        log.info("received SIGHUP: passing it on to %d workers", len(ready))
        for proc in ready:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGHUP)

    async def _stop_all(self) -> None:
        assert self._all_exited is not None
        for worker in self._workers:
            if worker.restart is not None:
                worker.restart.cancel()
                worker.restart = None
            if worker.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(signal.SIGTERM)
        self._reap()  # also settles the case with no worker running at all
        limit = self.config.shutdown_grace_period + KILL_MARGIN
        try:
            await asyncio.wait_for(self._all_exited.wait(), limit)
        except asyncio.TimeoutError:
            for worker in self._workers:
                if worker.proc is not None:
                    log.warning(
                        "worker %d (pid %d) still runs %g s after SIGTERM; killing it",
                        worker.index,
                        worker.proc.pid,
                        limit,
                    )
                    with contextlib.suppress(ProcessLookupError):
                        worker.proc.kill()
            await self._all_exited.wait()


def run_workers(config: Config, argv: Sequence[str]) -> int:
    """Run ``config.workers`` server processes on one port until SIGTERM/SIGINT; the exit code.

    ``argv`` is the command line the supervisor was started with (without the program name);
    the workers get the same. Raises :class:`ConfigError` without Redis, without SO_REUSEPORT
    or when the port cannot be bound.
    """
    workers = config.workers
    if not config.redis_url:
        raise ConfigError(
            f"--workers {workers} needs Redis (RELAY_REDIS_URL) so the workers share channels "
            "and presence"
        )
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError(
            f"--workers {workers} needs SO_REUSEPORT, which this platform ({sys.platform}) lacks"
        )
    port, reserved = reserve_port(config.host, config.port)
    try:
        return asyncio.run(Supervisor(config, argv, port).run())
    finally:
        for sock in reserved:
            sock.close()
