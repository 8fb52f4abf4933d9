"""Channel event history (RELAY_EXTRAS.md §4): the record, the store interface, the memory store.

Pure Python, no I/O and no clock of its own: every time is an argument, so a Redis-backed store
can implement :class:`HistoryStore` with the same calls.
"""

from __future__ import annotations

from .base import HistoryRecord, HistoryStore, parse_history_query, select_page, should_record
from .memory import MemoryHistoryStore

__all__ = [
    "HistoryRecord",
    "HistoryStore",
    "MemoryHistoryStore",
    "parse_history_query",
    "select_page",
    "should_record",
]
