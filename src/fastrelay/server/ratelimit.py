"""Per-app request rate limits of the HTTP API (HTTP_API.md §3.9): pure, clock injected.

soketi's local limiter (rate-limiter-flexible's memory limiter) semantics: a fixed window of one
second per key, opened by the first request after the previous window ended; each request costs
some points and is refused when they would take the window over its limit. Refused requests
cost nothing, so a client that backs off for ``Retry-After`` always gets in again.

Keys are whatever the caller picks, e.g. ``(app_id, "read")``. State is one small entry per key
with a window open; ended windows are dropped as new keys arrive, so memory follows the number
of apps, not the number of requests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass

__all__ = ["Decision", "RateLimiter"]

_PRUNE_ABOVE = 64  # entries before ended windows are swept out (one sweep per doubling)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one :meth:`RateLimiter.consume`."""

    allowed: bool
    limit: int
    remaining: int  # points left in the window after this request
    reset_in: float  # seconds until the window ends

    def headers(self) -> tuple[tuple[str, str], ...]:
        """``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``Retry-After`` (whole seconds,
        rounded up, at least 1: HTTP allows no fractions there)."""
        return (
            ("X-RateLimit-Limit", str(self.limit)),
            ("X-RateLimit-Remaining", str(self.remaining)),
            ("Retry-After", str(max(1, math.ceil(self.reset_in)))),
        )


class RateLimiter:
    """Fixed windows of ``window`` seconds per key; ``clock`` is monotonic seconds."""

    def __init__(self, clock: Callable[[], float], window: float = 1.0) -> None:
        if window <= 0:
            raise ValueError(f"window must be > 0, got {window}")
        self._clock = clock
        self._window = window
        # key -> [window end, points used]
        self._windows: dict[Hashable, list[float]] = {}
        self._prune_at = _PRUNE_ABOVE

    def consume(self, key: Hashable, points: int, limit: int) -> Decision:
        """Spend ``points`` of ``key``'s window if they fit under ``limit``."""
        now = self._clock()
        entry = self._windows.get(key)
        if entry is None or now >= entry[0]:
            if entry is None and len(self._windows) >= self._prune_at:
                self._prune(now)
            entry = [now + self._window, 0]
            self._windows[key] = entry
        ends, used = entry
        reset_in = ends - now
        if used + points > limit:
            return Decision(False, limit, max(0, limit - int(used)), reset_in)
        entry[1] = used + points
        return Decision(True, limit, limit - int(entry[1]), reset_in)

    def _prune(self, now: float) -> None:
        for key in [k for k, (ends, _) in self._windows.items() if now >= ends]:
            del self._windows[key]
        self._prune_at = max(_PRUNE_ABOVE, 2 * len(self._windows))

    def __len__(self) -> int:
        """Keys with state (for tests: memory stays bounded)."""
        return len(self._windows)
