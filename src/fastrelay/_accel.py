"""Which implementation each hot-path module runs: the compiled one or its pure-Python twin.

``FASTRELAY_NO_EXTENSIONS=1`` forces every pure twin (aiohttp's ``AIOHTTP_NO_EXTENSIONS``).
Each selector module calls :func:`record` with what it picked, so the server can log it at
start-up and expose it on ``/health``: a silent fallback to the slow twin is never invisible.
``FASTRELAY_REQUIRE_EXTENSIONS=1`` turns such a fallback into a start-up error
(:func:`check_required`), for deployments and CI runs that must have the compiled hot path.
"""

from __future__ import annotations

import importlib
import os
from types import MappingProxyType

__all__ = ["HOT_PATH", "NO_EXTENSIONS", "check_required", "implementations", "record"]


def _flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


NO_EXTENSIONS: bool = _flag("FASTRELAY_NO_EXTENSIONS")

# Every module with a compiled twin: short name (as recorded) -> the selector that records it.
HOT_PATH: MappingProxyType[str, str] = MappingProxyType(
    {
        "fanout": "fastrelay.hub.fanout",
        "frames": "fastrelay.wire.frames",
        "signing": "fastrelay.protocol.signing",
    }
)

# Filled once at import time by the selector modules; read-only afterwards.
_chosen: dict[str, str] = {}


def record(module: str, obj: object) -> None:
    """Remember whether ``module`` selected a compiled (``c``) or pure (``py``) object."""
    origin = getattr(obj, "__module__", "") or ""
    _chosen[module.rsplit(".", 1)[-1]] = "c" if origin.endswith("_c") else "py"


def implementations() -> MappingProxyType[str, str]:
    """Map of hot-path module name → ``"c"`` or ``"py"``."""
    return MappingProxyType(_chosen)


def check_required() -> None:
    """Refuse to run on a pure twin when ``FASTRELAY_REQUIRE_EXTENSIONS=1`` asks for compiled code.

    Imports every :data:`HOT_PATH` selector first, so a module nothing has loaded yet is checked
    too. ``FASTRELAY_NO_EXTENSIONS=1`` wins: the pure twins were asked for, so nothing is raised.
    """
    if NO_EXTENSIONS or not _flag("FASTRELAY_REQUIRE_EXTENSIONS"):
        return
    for selector in HOT_PATH.values():
        importlib.import_module(selector)
    slow = sorted(name for name in {*HOT_PATH, *_chosen} if _chosen.get(name) != "c")
    if slow:
        raise RuntimeError(
            "FASTRELAY_REQUIRE_EXTENSIONS=1, but these hot-path modules fell back to their "
            f"pure-Python twin (py): {', '.join(slow)}. Install a compiled wheel, or build from "
            "source with a C compiler and FASTRELAY_BUILD_EXTENSIONS=yes to see why it failed."
        )
