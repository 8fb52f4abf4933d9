"""Event history: the record, what gets recorded, the query and the store interface.

RELAY_EXTRAS.md §4. Everything here is pure: no I/O, no clock reads. A store receives the time
of each write (``time_ms``) and of each read (``now_ms``) from its caller.
"""

from __future__ import annotations

import abc
import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import RestError
from ..protocol.auth import query_integer
from ..protocol.channels import USER_CHANNEL_PREFIX

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "HistoryRecord",
    "HistoryStore",
    "history_response",
    "parse_history_query",
    "select_page",
    "should_record",
]

DEFAULT_LIMIT = 50
"""``limit`` when the query gives none (§4.3)."""

MAX_LIMIT = 100
"""Larger ``limit`` values are clamped to this (§4.3)."""

SOURCES = frozenset({"api", "client"})
"""The values of :attr:`HistoryRecord.source` (§4.1)."""


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One recorded event (§4.1).

    ``id`` is the per (app, channel) sequence number; ``data`` is exactly what was delivered (a
    string from the HTTP API, the value as sent for client events, ciphertext for encrypted
    channels); ``time_ms`` is the Unix time in ms when the event was accepted; ``source`` is
    ``"api"`` or ``"client"``. ``socket_id`` is the sender (client events) or the excluded socket
    (API events); ``user_id`` the sender's presence user id. Both are omitted from JSON when None.
    """

    id: int
    event: str
    channel: str
    data: Any
    time_ms: int
    source: str
    socket_id: str | None = None
    user_id: Any = None

    def to_json(self) -> dict[str, Any]:
        """The record as the API returns it (§4.1), without ``socket_id``/``user_id`` when None."""
        out: dict[str, Any] = {
            "id": self.id,
            "event": self.event,
            "channel": self.channel,
            "data": self.data,
            "time_ms": self.time_ms,
            "source": self.source,
        }
        if self.socket_id is not None:
            out["socket_id"] = self.socket_id
        if self.user_id is not None:
            out["user_id"] = self.user_id
        return out


def should_record(channel: str, event: str, source: str, *, client_events: bool) -> bool:
    """Whether an event published on ``channel`` goes into the history (§4.1).

    Never ``#server-to-user-…`` channels (per-user data) nor ``pusher:*`` / ``pusher_internal:*``
    events. API publishes always (the caller has validated them); client events only when
    ``client_events`` (``RELAY_HISTORY_CLIENT_EVENTS``). Encrypted channels are recorded as
    received: the caller passes the ciphertext. An unknown ``source`` is a programming error
    (:class:`ValueError`).
    """
    if source not in SOURCES:
        raise ValueError(f"unknown history source {source!r}; expected 'api' or 'client'")
    if channel.startswith(USER_CHANNEL_PREFIX):
        return False
    if event.startswith(("pusher:", "pusher_internal:")):
        return False
    return source == "api" or client_events


def parse_history_query(params: Mapping[str, str]) -> tuple[int, int | None, int | None]:
    """``(limit, before, after)`` from the decoded query parameters (§4.3).

    ``limit`` defaults to 50 and is clamped to 100; a value that is not an integer or is below 1
    raises ``RestError(400)``. ``before`` and ``after`` are optional integer ids (negative values
    are integers too and simply select nothing or everything); anything else, including an empty
    value, raises ``RestError(400)``. Integers are ASCII digits with an optional leading ``-``.
    """
    limit = query_integer(params, "limit")
    if limit is None:
        limit = DEFAULT_LIMIT
    elif limit < 1:
        raise RestError(400, "limit must be an integer of at least 1")
    return min(limit, MAX_LIMIT), query_integer(params, "before"), query_integer(params, "after")


def _record_id(record: HistoryRecord) -> int:
    return record.id


def select_page(
    records: list[HistoryRecord], *, limit: int, before: int | None, after: int | None
) -> tuple[list[HistoryRecord], bool]:
    """Apply the selection rule of §4.3 to ``records`` (visible, ascending ``id``).

    S is the records with ``after < id < before`` (a missing bound is open). With ``after`` and
    no ``before`` the page is the oldest ``limit`` records of S (paging forward); otherwise the
    newest ``limit``. Returns the page in ascending ``id`` order and ``has_more`` (S had records
    that were not returned). ``limit`` below 1 is a programming error (:class:`ValueError`).
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    start = 0 if after is None else bisect.bisect_right(records, after, key=_record_id)
    end = len(records) if before is None else bisect.bisect_left(records, before, key=_record_id)
    if end <= start:
        return [], False
    if after is not None and before is None:
        page = list(records[start : min(end, start + limit)])
    else:
        page = list(records[max(start, end - limit) : end])
    return page, end - start > len(page)


def history_response(
    channel: str,
    epoch: int,
    page: Sequence[HistoryRecord],
    has_more: bool,
    oldest_id: int | None,
    newest_id: int | None,
) -> dict[str, Any]:
    """The ``200`` body of §4.4, keys in the order the spec shows them."""
    return {
        "channel": channel,
        "epoch": epoch,
        "events": [record.to_json() for record in page],
        "has_more": has_more,
        "oldest_id": oldest_id,
        "newest_id": newest_id,
    }


class HistoryStore(abc.ABC):
    """Where event history lives (§4). Implementations: :class:`MemoryHistoryStore`; later Redis.

    Contract for every implementation:

    * no I/O and no clock of its own: ``time_ms`` (write) and ``now_ms`` (read) are Unix ms from the
      caller;
    * ids are per (app, channel), start at 1, strictly increase and are never reused while the
      store lives (Redis: ``INCR``, cluster-wide);
    * retention (§4.2) applies at once: ``max_events`` per channel, ``max_age`` seconds
      (expired records are invisible immediately), ``max_channels`` per app;
    * :meth:`query` returns the exact §4.4 body; a channel with no history is not an error.

    ``epoch`` is the Unix ms at which the store started; clients discard cursors when it changes.
    """

    epoch: int

    @abc.abstractmethod
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
        """Record one event on one channel (callers check :func:`should_record`); return its id."""

    @abc.abstractmethod
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
        """The §4.4 response body for one channel, as selected by §4.3 at time ``now_ms``."""
