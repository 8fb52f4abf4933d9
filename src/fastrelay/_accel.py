"""Which implementation each hot-path module runs: the compiled one or its pure-Python twin.

``FASTRELAY_NO_EXTENSIONS=1`` forces every pure twin (aiohttp's ``AIOHTTP_NO_EXTENSIONS``).
Each selector module calls :func:`record` with what it picked, so the server can log it at
start-up and expose it on ``/health``: a silent fallback to the slow twin is never invisible.
"""

from __future__ import annotations

import os
from types import MappingProxyType

__all__ = ["NO_EXTENSIONS", "implementations", "record"]

NO_EXTENSIONS: bool = os.environ.get("FASTRELAY_NO_EXTENSIONS", "").lower() in ("1", "true", "yes")

# Filled once at import time by the selector modules; read-only afterwards.
_chosen: dict[str, str] = {}


def record(module: str, obj: object) -> None:
    """Remember whether ``module`` selected a compiled (``c``) or pure (``py``) object."""
    origin = getattr(obj, "__module__", "") or ""
    _chosen[module.rsplit(".", 1)[-1]] = "c" if origin.endswith("_c") else "py"


def implementations() -> MappingProxyType[str, str]:
    """Map of hot-path module name → ``"c"`` or ``"py"``."""
    return MappingProxyType(_chosen)
