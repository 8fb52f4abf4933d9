"""Child processes that do not outlive their parent (the workers' supervisor, the load tool)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

__all__ = ["parent_death_signal"]


def parent_death_signal(signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """Linux: a ``preexec_fn`` that has the child sent ``signum`` when its parent dies, even by
    SIGKILL (the setting survives exec). None elsewhere. The libc function is looked up here, in
    the parent, so the child between fork and exec only calls it."""
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    return lambda: prctl(pr_set_pdeathsig, int(signum))
