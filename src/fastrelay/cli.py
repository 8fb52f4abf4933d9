"""The command line: ``python -m fastrelay [serve] [options]`` and ``fastrelay bench …``.

Flags, variables and the config file are read by :mod:`fastrelay.settings`; this module turns a
bad configuration into one ``fastrelay: error: …`` line and exit code 2, sets up logging, warns
about unknown variables, then hands the configuration to the server.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timezone

from .config import Config
from .errors import ConfigError
from .settings import load_config, unknown_variables

__all__ = ["JsonFormatter", "configure_logging", "main"]

log = logging.getLogger("fastrelay")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
WORKER_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [worker %(worker)s]: %(message)s"
# Set by the --workers supervisor (fastrelay.server.workers) for each of its server processes.
_WORKER_INDEX_ENV = "FASTRELAY_WORKER_INDEX"

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, the record's
    ``extra=`` fields, and ``exc_info``/``stack_info`` when present."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler main() installs, so a second call replaces it instead of adding one."""


class _WorkerTag(logging.Filter):
    """Adds ``worker`` to every record: the workers of one supervisor share a terminal."""

    def __init__(self, worker: int) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.worker
        return True


def configure_logging(config: Config, worker: int | None = None) -> None:
    """Log to stderr at ``config.log_level``, as text or JSON lines (``config.log_format``).

    ``worker`` (the index a ``--workers`` supervisor gave this process) tags every line.
    """
    handler = _Handler(sys.stderr)
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter())  # shows record.worker as a "worker" field
    elif worker is not None:
        handler.setFormatter(logging.Formatter(WORKER_TEXT_FORMAT))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    if worker is not None:
        handler.addFilter(_WorkerTag(worker))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(config.log_level.upper())


def _error(message: str) -> int:
    print(f"fastrelay: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _bench(argv: list[str]) -> int:
    try:
        bench = importlib.import_module("fastrelay.bench")
    except ModuleNotFoundError as exc:
        if exc.name == "fastrelay.bench":
            return _error("the bench subcommand is not available (no fastrelay.bench module)")
        return _error(f"the bench subcommand needs the missing module {exc.name!r}")
    try:
        return int(bench.main(argv) or 0)
    except SystemExit as exc:
        return _exit_code(exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Run fastrelay; returns the process exit code (2 = bad configuration)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "bench":
        return _bench(args[1:])
    if args and args[0] == "serve":
        args = args[1:]
    environ = os.environ
    try:
        config = load_config(args, environ)
    except ConfigError as exc:
        return _error(str(exc))
    except SystemExit as exc:  # --help and --version print, then exit through argparse
        return _exit_code(exc)
    index = environ.get(_WORKER_INDEX_ENV, "")
    worker = int(index) if index.isdigit() else None
    configure_logging(config, worker)
    # A worker's environment is its supervisor's, which has warned already.
    for name in unknown_variables(environ) if worker is None else ():
        log.warning("ignoring %s: not a setting fastrelay reads (see --help)", name)
    try:
        if config.workers > 1:
            from fastrelay.server.workers import run_workers

            # The workers get these same flags and read the same environment and file.
            return run_workers(config, args)
        from fastrelay.server.node import run

        # SIGHUP reads the same flags, environment and config file again, for the app list.
        return run(config, reload=lambda: load_config(args, environ))
    except ConfigError as exc:
        return _error(str(exc))
    except KeyboardInterrupt:
        return 130
