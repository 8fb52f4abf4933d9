"""fastrelay.cli and ``python -m fastrelay``: errors, --help, --version, logging, subcommands."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fastrelay import __version__
from fastrelay.cli import _Handler, main
from fastrelay.config import Config
from fastrelay.errors import ConfigError
from fastrelay.settings import VARIABLES

SRC = str(Path(__file__).resolve().parents[2] / "src")


def run_module(*args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("RELAY_", "SOKETI_", "REVERB_"))
    }
    environ.update(PYTHONPATH=SRC, COLUMNS="100", **extra_env)
    return subprocess.run(
        [sys.executable, "-m", "fastrelay", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(("RELAY_", "SOKETI_", "REVERB_")):
            monkeypatch.delenv(name)
    root = logging.getLogger()
    level = root.level
    yield
    for handler in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """Replace fastrelay.server.node with a stub whose run() records the config."""
    seen: list[Config] = []
    module = types.ModuleType("fastrelay.server.node")

    def run(config: Config, reload: Callable[[], Config] | None = None) -> int:
        seen.append(config)
        # SIGHUP's loader reads the same sources again.
        assert reload is not None and reload() == config
        logging.getLogger("fastrelay.test").info("running on port %s", config.port)
        return 0

    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fastrelay.server.node", module)
    return seen


# --- the real process -----------------------------------------------------------------------


def test_bad_port_flag_in_a_real_process() -> None:
    result = run_module("--port", "abc")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fastrelay: error: ")
    assert "--port" in lines[0] and "'abc'" in lines[0]
    assert result.stdout == ""


def test_bad_environment_in_a_real_process() -> None:
    result = run_module(SOKETI_PORT="70000")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "fastrelay: error: SOKETI_PORT='70000': expected an integer from 0 to 65535"
    ]


def test_help_in_a_real_process() -> None:
    result = run_module("--help")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for word in ("RELAY_PORT", "SOKETI_PORT", "REVERB_SERVER_PORT", "precedence", "--port"):
        assert word in out
    for var in VARIABLES:
        assert var.name in out
        for alias in (*var.also, *var.soketi, *var.reverb):
            assert alias in out, alias
        if var.flag:
            assert var.flag in out
    assert "RELAY_* > SOKETI_* > REVERB_* > config file > defaults" in out


def test_version_in_a_real_process() -> None:
    result = run_module("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"fastrelay {__version__}"


# --- main() in process ----------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"fastrelay {__version__}\n"


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "RELAY_PORT" in out and "SOKETI_PORT" in out and "REVERB_SERVER_PORT" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--port", "abc"], "--port='abc'"),
        (["--log-format", "xml"], "--log-format='xml'"),
        (["--nope"], "--nope"),
        (["serve", "--port", "-3"], "--port='-3'"),
        (["--config", "/does/not/exist.json"], "--config='/does/not/exist.json'"),
    ],
)
def test_errors_are_one_line_and_exit_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str], fake_run: list[Config]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastrelay: error: ")
    assert needle in lines[0]
    assert fake_run == []


def test_environment_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fake_run: list[Config]
) -> None:
    monkeypatch.setenv("RELAY_APPS", '[{"id": "1"}]')
    assert main([]) == 2
    assert capsys.readouterr().err.startswith("fastrelay: error: RELAY_APPS[0]: missing the app")


def test_runs_the_server_with_the_config(
    monkeypatch: pytest.MonkeyPatch, fake_run: list[Config]
) -> None:
    monkeypatch.setenv("SOKETI_DEFAULT_APP_ID", "42")
    assert main(["--port", "0", "--host", "127.0.0.1"]) == 0
    (config,) = fake_run
    assert (config.port, config.host, config.apps[0].id) == (0, "127.0.0.1", "42")


def test_serve_subcommand_equals_no_subcommand(fake_run: list[Config]) -> None:
    assert main(["serve", "--port", "7"]) == 0
    assert main(["--port", "7"]) == 0
    assert fake_run[0] == fake_run[1]


def test_run_exit_code_is_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("fastrelay.server.node")
    module.run = lambda config, reload=None: 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fastrelay.server.node", module)
    assert main([]) == 3


def test_config_error_from_run_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(config: Config, reload: object = None) -> int:
        raise ConfigError("RELAY_SSL_CERT='/x.pem': expected a readable\nPEM file")

    module = types.ModuleType("fastrelay.server.node")
    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fastrelay.server.node", module)
    assert main([]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "fastrelay: error: RELAY_SSL_CERT='/x.pem': expected a readable PEM file"
    ]


def test_unknown_variables_warned_once_as_text(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fake_run: list[Config]
) -> None:
    monkeypatch.setenv("RELAY_PROT", "1")
    monkeypatch.setenv("SOKETI_MODE", "full")
    monkeypatch.setenv("REVERB_HOST", "ws.test")  # read by Laravel, not by the server: no warning
    assert main([]) == 0
    err = capsys.readouterr().err
    assert err.count("RELAY_PROT") == 1 and err.count("SOKETI_MODE") == 1
    assert "REVERB_HOST" not in err
    warning = next(line for line in err.splitlines() if "RELAY_PROT" in line)
    assert " WARNING fastrelay: " in warning
    assert "running on port 6001" in err  # info level by default


def test_json_log_format(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fake_run: list[Config]
) -> None:
    monkeypatch.setenv("RELAY_UNKNOWN_THING", "1")
    assert main(["--log-format", "json"]) == 0
    entries = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    assert entries[0]["level"] == "warning" and "RELAY_UNKNOWN_THING" in entries[0]["message"]
    assert entries[-1]["message"] == "running on port 6001"


def test_log_level_filters(capsys: pytest.CaptureFixture[str], fake_run: list[Config]) -> None:
    assert main(["--log-level", "warning"]) == 0
    assert "running on port" not in capsys.readouterr().err


def test_repeated_main_does_not_stack_handlers(fake_run: list[Config]) -> None:
    main([])
    main([])
    assert sum(isinstance(h, _Handler) for h in logging.getLogger().handlers) == 1


def test_bench_subcommand_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "fastrelay.bench", None)
    assert main(["bench", "--connections", "10"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "bench" in lines[0] and lines[0].startswith("fastrelay: error: ")


def test_bench_subcommand_runs_the_bench_module(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    module = types.ModuleType("fastrelay.bench")

    def bench_main(argv: list[str]) -> int:
        calls.append(list(argv))
        return 5

    module.main = bench_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fastrelay.bench", module)
    assert main(["bench", "--port", "abc"]) == 5
    assert calls == [["--port", "abc"]]
