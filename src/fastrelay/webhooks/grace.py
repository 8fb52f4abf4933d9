"""Grace period for ``channel_vacated`` and ``member_removed`` (Pusher's "vacate/remove delay").

A page reload unsubscribes and resubscribes within a second or two; without a delay a receiver
sees ``channel_vacated`` then ``channel_occupied`` (or ``member_removed`` then ``member_added``)
for what, to the user, never changed. So the leaving event is held for ``delay`` seconds: if the
matching arrival (same app and channel; for members also the same ``user_id``) comes first, both
are cancelled; otherwise the held event is released, with its original ``time_ms``.

The delay is the same for every held event, so they expire in the order they were held: one
insertion-ordered dict and one timer (for the oldest) serve them all. At most ``limit`` events
are held; past that the oldest is released early (it loses its grace, it is never lost).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import orjson

from ..config import App

__all__ = ["CANCELLED_BY", "HELD_FOR", "GraceHold", "Held"]

log = logging.getLogger("fastrelay.webhooks")

HELD_FOR: dict[str, str] = {"channel_vacated": "channel_occupied", "member_removed": "member_added"}
"""Held event name → the event name that cancels it when it arrives within the grace period."""

CANCELLED_BY: dict[str, str] = {arrival: held for held, arrival in HELD_FOR.items()}
"""Arrival event name → the held event name it cancels."""

# Timers may fire up to the loop's clock resolution early; treat that as due, not as a
# reason to reschedule a zero-length timer.
_EARLY_FIRE_TOLERANCE = 0.001


@dataclass(slots=True)
class Held:
    """One held event and when its grace period ends (loop time)."""

    app: App
    event: dict[str, Any]
    time_ms: int
    expires_at: float


def _user_key(user_id: Any) -> Hashable:
    # user_id keeps its JSON type: "1" and 1 are different members, so key on the JSON text.
    try:
        return orjson.dumps(user_id)
    except TypeError:
        return repr(user_id)


def _key(app: App, event: dict[str, Any]) -> Hashable:
    name = event.get("name")
    channel = event.get("channel")
    if name in ("member_removed", "member_added"):
        return (app.id, "member", channel, _user_key(event.get("user_id")))
    return (app.id, "channel", channel)


class GraceHold:
    """Holds leaving events for ``delay`` seconds unless their arrival twin cancels them."""

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        delay: float,
        limit: int,
        release: Callable[[Held], None],
    ) -> None:
        self._loop = loop
        self._delay = delay
        self._limit = limit
        self._release = release
        self._held: OrderedDict[Hashable, Held] = OrderedDict()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def enabled(self) -> bool:
        return self._delay > 0

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, app: App, event: dict[str, Any], time_ms: int) -> None:
        """Hold a ``channel_vacated``/``member_removed`` event until its grace period ends."""
        key = _key(app, event)
        previous = self._held.pop(key, None)
        if previous is not None:
            # Cannot happen with a consistent hub (two departures without an arrival), but if it
            # does, the first one is not silently lost.
            self._emit(previous)
        while len(self._held) >= self._limit:
            self._emit(self._held.popitem(last=False)[1])
        self._held[key] = Held(app, event, time_ms, self._loop.time() + self._delay)
        if self._timer is None:
            self._timer = self._loop.call_later(self._delay, self._expire)

    def cancel(self, app: App, arrival: dict[str, Any]) -> bool:
        """An arrival: True (drop it too) when it cancelled a held departure."""
        # The timer is left alone: when it fires it finds the next oldest entry, or none.
        return self._held.pop(_key(app, arrival), None) is not None

    def release_all(self) -> None:
        """Release everything now (shutdown: nobody can come back to cancel them any more)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._held:
            self._emit(self._held.popitem(last=False)[1])

    def _expire(self) -> None:
        self._timer = None
        now = self._loop.time() + _EARLY_FIRE_TOLERANCE
        while self._held:
            oldest = next(iter(self._held.values()))
            if oldest.expires_at > now:
                self._timer = self._loop.call_at(oldest.expires_at, self._expire)
                return
            self._held.popitem(last=False)
            self._emit(oldest)

    def _emit(self, held: Held) -> None:
        try:
            self._release(held)
        except Exception:
            # A failing release must not stop the other held events from being released.
            log.exception("releasing held webhook %r failed", held.event.get("name"))
