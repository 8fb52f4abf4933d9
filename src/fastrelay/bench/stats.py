"""Pure accounting for the load tool: latency percentiles and per-stream ordering.

Nothing here does I/O or reads a clock, so all of it is unit-tested with made-up numbers.

*Latency* samples are integers (nanoseconds) kept in an ``array('q')``: eight bytes each, appended
without creating objects. Percentiles use the nearest-rank method on the sorted samples.

*Ordering*: every published message carries ``(stream, seq)``. One stream is one sequential
sender (a REST connection that sends its next publish only after the previous response, or one
WebSocket client sending client events), so the server must deliver a stream's messages to each
subscriber in ``seq`` order, each exactly once. :class:`SequenceTracker` (one per subscriber)
counts what arrived in order, late (reordered), twice (duplicate) and, given how many messages
each stream published, what never arrived (lost).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "LatencyRecorder",
    "LatencySummary",
    "OrderCounts",
    "SequenceTracker",
    "percentile",
    "summarize_latencies",
    "total_order_counts",
]

PERCENTILES = (50.0, 90.0, 99.0)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of ascending ``sorted_values``: the smallest value with at least
    ``pct`` percent of the values at or below it. ``pct`` 0 gives the minimum, 100 the maximum.

    Raises ``ValueError`` for an empty sequence or ``pct`` outside 0..100.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 <= pct <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {pct}")
    rank = math.ceil(pct / 100.0 * len(sorted_values))
    return sorted_values[max(rank, 1) - 1]


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Percentiles of a set of latencies, in milliseconds (all 0.0 when ``count`` is 0)."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "p50": round(self.p50, 3),
            "p90": round(self.p90, 3),
            "p99": round(self.p99, 3),
            "max": round(self.max, 3),
            "mean": round(self.mean, 3),
        }


def summarize_latencies(samples_ns: Iterable[int]) -> LatencySummary:
    """Percentiles (nearest rank) of nanosecond samples, reported in milliseconds."""
    values = sorted(samples_ns)
    if not values:
        return LatencySummary(0, 0.0, 0.0, 0.0, 0.0, 0.0)
    scale = 1e-6
    p50, p90, p99 = (percentile(values, p) * scale for p in PERCENTILES)
    return LatencySummary(
        count=len(values),
        p50=p50,
        p90=p90,
        p99=p99,
        max=values[-1] * scale,
        mean=sum(values) / len(values) * scale,
    )


class LatencyRecorder:
    """Collects nanosecond latencies, up to ``limit`` samples; later ones are only counted.

    The load generator appends to :attr:`samples` directly on its hot path (one C call per
    sample); :meth:`add` is the checked form for everything else.
    """

    __slots__ = ("dropped", "limit", "samples")

    def __init__(self, limit: int = 20_000_000) -> None:
        self.samples: array[int] = array("q")
        self.limit = limit
        self.dropped = 0

    def add(self, latency_ns: int) -> None:
        if len(self.samples) < self.limit:
            self.samples.append(latency_ns)
        else:
            self.dropped += 1

    def full(self) -> bool:
        return len(self.samples) >= self.limit

    def summary(self) -> LatencySummary:
        return summarize_latencies(self.samples)


@dataclass(frozen=True, slots=True)
class OrderCounts:
    """Delivery accounting of one subscriber, or of many added together."""

    received: int = 0  # every message that arrived, duplicates included
    in_order: int = 0
    reordered: int = 0  # arrived after a later message of the same stream
    duplicates: int = 0  # arrived a second time
    lost: int = 0  # published to this subscriber, never arrived

    def __add__(self, other: OrderCounts) -> OrderCounts:
        return OrderCounts(
            self.received + other.received,
            self.in_order + other.in_order,
            self.reordered + other.reordered,
            self.duplicates + other.duplicates,
            self.lost + other.lost,
        )

    def __sub__(self, other: OrderCounts) -> OrderCounts:
        return OrderCounts(
            self.received - other.received,
            self.in_order - other.in_order,
            self.reordered - other.reordered,
            self.duplicates - other.duplicates,
            self.lost - other.lost,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "received": self.received,
            "in_order": self.in_order,
            "reordered": self.reordered,
            "duplicates": self.duplicates,
            "lost": self.lost,
        }


class SequenceTracker:
    """Ordering state of one subscriber over any number of streams; seqs start at 0.

    ``expected[stream]`` is the next seq due. A message with that seq is in order. A higher seq
    skips some: they are remembered as *missing*, and the expectation moves past the message.
    A lower seq is *reordered* if it was missing (it is then no longer missing), otherwise a
    *duplicate*. What stays missing, plus what a stream published beyond its expectation, is
    lost. The load generator inlines the in-order case (``expected.get`` / store) and calls
    :meth:`observe_slow` for the rest; :meth:`observe` is the whole rule in one call.
    """

    __slots__ = ("duplicates", "expected", "in_order", "missing", "received", "reordered")

    def __init__(self) -> None:
        self.expected: dict[int, int] = {}
        self.missing: dict[int, set[int]] = {}
        self.received = 0
        self.in_order = 0
        self.reordered = 0
        self.duplicates = 0

    def observe(self, stream: int, seq: int) -> None:
        """Account one arrival of message ``seq`` of ``stream``."""
        if seq == self.expected.get(stream, 0):
            self.expected[stream] = seq + 1
            self.received += 1
            self.in_order += 1
        else:
            self.observe_slow(stream, seq)

    def observe_slow(self, stream: int, seq: int) -> None:
        """Account an arrival that is not the next one due (a gap, a late one, a repeat)."""
        self.received += 1
        due = self.expected.get(stream, 0)
        if seq == due:
            self.expected[stream] = seq + 1
            self.in_order += 1
        elif seq > due:
            missing = self.missing.setdefault(stream, set())
            missing.update(range(due, seq))
            self.expected[stream] = seq + 1
            self.in_order += 1
        else:
            missing = self.missing.get(stream)
            if missing is not None and seq in missing:
                missing.discard(seq)
                self.reordered += 1
            else:
                self.duplicates += 1

    def lost(self, published: Mapping[int, int]) -> int:
        """Messages not (yet) arrived, given ``published[stream]`` = how many the stream sent
        to this subscriber (so its seqs are ``0 .. published[stream] - 1``)."""
        count = 0
        for stream, total in published.items():
            due = self.expected.get(stream, 0)
            if total > due:
                count += total - due
            missing = self.missing.get(stream)
            if missing:
                count += sum(1 for seq in missing if seq < total)
        return count

    def counts(self, published: Mapping[int, int]) -> OrderCounts:
        return OrderCounts(
            self.received, self.in_order, self.reordered, self.duplicates, self.lost(published)
        )


def total_order_counts(
    trackers: Iterable[tuple[SequenceTracker, Mapping[int, int]]],
) -> OrderCounts:
    """Sum of :meth:`SequenceTracker.counts` over ``(tracker, published)`` pairs."""
    total = OrderCounts()
    for tracker, published in trackers:
        total = total + tracker.counts(published)
    return total
