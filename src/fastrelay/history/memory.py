"""The in-memory event history store: single node, lost on restart (RELAY_EXTRAS.md §4.2).

Pure Python, no I/O, no clock reads: the caller passes ``time_ms`` on append and ``now_ms`` on
query.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

from .base import SOURCES, HistoryRecord, HistoryStore, history_response, select_page

__all__ = ["MemoryHistoryStore"]


class _Channel:
    """One channel's retained records (ascending ``id``) and its id counter."""

    __slots__ = ("last_id", "newest_ms", "records")

    def __init__(self, max_events: int, last_id: int) -> None:
        self.records: deque[HistoryRecord] = deque(maxlen=max_events)
        self.last_id = last_id
        # The latest time_ms ever appended: when it has expired, every record has.
        self.newest_ms: int | float = float("-inf")


class _App:
    """One app's channels (least recently written first) and the last ids of retired ones."""

    __slots__ = ("channels", "floor", "retired")

    def __init__(self) -> None:
        self.channels: OrderedDict[str, _Channel] = OrderedDict()
        self.retired: OrderedDict[str, int] = OrderedDict()
        self.floor = 0


class MemoryHistoryStore(HistoryStore):
    """Event history in this process's memory, with the three caps of §4.2 applied together.

    * **Count** — each channel keeps a ``deque(maxlen=max_events)``; the oldest record drops first.
    * **Age** — a record is visible while ``now_ms - time_ms < max_age * 1000``. Expired records
      are filtered out on every read and reclaimed lazily: expired heads of a channel are dropped
      when that channel is written or queried, a channel whose newest record expired is dropped
      whole when queried, and every append drops fully expired channels from the
      least-recently-written end (amortised O(1)).
    * **Channels** — at most ``max_channels`` channels per app. A write to a new channel beyond
      that drops the least recently *written* channel whole (an ``OrderedDict`` moved to the end
      on write; reads do not refresh it). Queries never create a channel.

    **Ids.** Each (app, channel) counts 1, 2, 3 … and an id is never reused while the store lives,
    even when a channel is dropped (by the channel cap or by expiry) and written again: a dropped
    channel's last id is *retired* into a per-app map and the channel continues from it when it
    comes back. That map is bounded at ``10 × max_channels`` entries per app, oldest retirement
    forgotten first. When an entry is forgotten its id is folded into a per-app *floor* (the
    largest forgotten last id), and any channel that starts without a remembered id starts at
    ``floor + 1``. The trade-off: ids are never reused and always strictly increase (so a
    client's ``after`` cursor never silently skips events), at the cost that once more than
    ``10 × max_channels`` channels of one app have been dropped, new channels of that app start
    above 1 instead of at 1. The alternative — restarting a forgotten channel at 1 — would keep
    the "starts at 1" look but could hand out an id a client already holds as a cursor.

    **Memory bound per app**: at most ``max_channels × max_events`` records (each a slotted
    :class:`HistoryRecord` that references, not copies, the event's ``data``), plus at most
    ``10 × max_channels`` retired ``(channel name, int)`` entries. Apps are keyed by the
    configured app ids, so the number of apps is bounded by the configuration.
    """

    RETIRED_PER_CHANNEL = 10
    """Retired channels whose last id is remembered, per allowed live channel."""

    def __init__(
        self,
        *,
        max_events: int = 100,
        max_age: float = 3600,
        max_channels: int = 10000,
        epoch_ms: int,
    ) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, got {max_events}")
        if not max_age > 0:
            raise ValueError(f"max_age must be positive, got {max_age}")
        if max_channels < 1:
            raise ValueError(f"max_channels must be at least 1, got {max_channels}")
        self.epoch = epoch_ms
        self._max_events = max_events
        self._max_age_ms = max_age * 1000.0
        self._max_channels = max_channels
        self._max_retired = self.RETIRED_PER_CHANNEL * max_channels
        self._apps: dict[str, _App] = {}

    @property
    def max_events(self) -> int:
        """Records kept per channel."""
        return self._max_events

    @property
    def max_age(self) -> float:
        """Seconds a record stays visible."""
        return self._max_age_ms / 1000.0

    @property
    def max_channels(self) -> int:
        """Channels with history kept per app."""
        return self._max_channels

    def channel_count(self, app_id: str) -> int:
        """Channels currently held for ``app_id`` (fully expired ones count until reclaimed)."""
        app = self._apps.get(app_id)
        return len(app.channels) if app else 0

    def append(
        self,
        app_id: str,
        channel: str,
        event: str,
        data: Any,
        *,
        source: str,
        time_ms: int,
        socket_id: str | None = None,
        user_id: Any = None,
    ) -> int:
        """Record one event (§4.1) at ``time_ms``; return its id. ``source``: api or client."""
        if source not in SOURCES:
            raise ValueError(f"unknown history source {source!r}; expected 'api' or 'client'")
        app = self._apps.get(app_id)
        if app is None:
            app = self._apps[app_id] = _App()
        cutoff = time_ms - self._max_age_ms
        self._sweep(app, cutoff)
        state = app.channels.get(channel)
        if state is None:
            if len(app.channels) >= self._max_channels:
                name, evicted = app.channels.popitem(last=False)
                self._retire(app, name, evicted)
            last_id = app.retired.pop(channel, app.floor)
            state = app.channels[channel] = _Channel(self._max_events, last_id)
        else:
            app.channels.move_to_end(channel)
            self._drop_expired_heads(state, cutoff)
        state.last_id += 1
        state.records.append(
            HistoryRecord(state.last_id, event, channel, data, time_ms, source, socket_id, user_id)
        )
        if time_ms > state.newest_ms:
            state.newest_ms = time_ms
        return state.last_id

    def query(
        self,
        app_id: str,
        channel: str,
        *,
        limit: int,
        before: int | None,
        after: int | None,
        now_ms: int,
    ) -> dict[str, Any]:
        """The §4.4 body: records of ``channel`` visible at ``now_ms``, selected as in §4.3."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        app = self._apps.get(app_id)
        state = app.channels.get(channel) if app else None
        if app is None or state is None:
            return history_response(channel, self.epoch, [], False, None, None)
        cutoff = now_ms - self._max_age_ms
        if state.newest_ms <= cutoff:
            del app.channels[channel]
            self._retire(app, channel, state)
            return history_response(channel, self.epoch, [], False, None, None)
        self._drop_expired_heads(state, cutoff)
        visible = [record for record in state.records if record.time_ms > cutoff]
        if not visible:
            return history_response(channel, self.epoch, [], False, None, None)
        page, has_more = select_page(visible, limit=limit, before=before, after=after)
        return history_response(channel, self.epoch, page, has_more, visible[0].id, visible[-1].id)

    # -- retention --------------------------------------------------------------------------

    @staticmethod
    def _drop_expired_heads(state: _Channel, cutoff: float) -> None:
        records = state.records
        while records and records[0].time_ms <= cutoff:
            records.popleft()

    def _sweep(self, app: _App, cutoff: float) -> None:
        """Drop whole channels, least recently written first, while their newest has expired."""
        channels = app.channels
        while channels:
            name = next(iter(channels))
            state = channels[name]
            if state.newest_ms > cutoff:
                return
            del channels[name]
            self._retire(app, name, state)

    def _retire(self, app: _App, name: str, state: _Channel) -> None:
        """Remember a dropped channel's last id, forgetting the oldest beyond the bound."""
        app.retired[name] = state.last_id
        if len(app.retired) > self._max_retired:
            _, forgotten = app.retired.popitem(last=False)
            if forgotten > app.floor:
                app.floor = forgotten
