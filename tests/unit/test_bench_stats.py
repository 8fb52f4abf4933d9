"""The load tool's accounting: percentiles, and lost / duplicate / reordered counting."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import time

import pytest

from fastrelay.bench.client import DeliverySink, PusherSocket, bench_data
from fastrelay.bench.report import compute_ratios, summarize_runs
from fastrelay.bench.scenarios import parse_rates
from fastrelay.bench.stats import (
    LatencyRecorder,
    OrderCounts,
    SequenceTracker,
    percentile,
    summarize_latencies,
    total_order_counts,
)
from fastrelay.wire.frames import OP_PING, OP_PONG, OP_TEXT, FrameParser, encode_frame

# -- percentiles ---------------------------------------------------------------------------


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 90) == 90
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([7], 99) == 7
    # Nearest rank never interpolates: it is always one of the values.
    assert percentile([10, 20, 30, 40], 50) == 20
    assert percentile([10, 20, 30, 40], 51) == 30


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1, 2], 101)
    with pytest.raises(ValueError):
        percentile([1, 2], -1)


def test_summary_in_milliseconds_whatever_the_order() -> None:
    samples = [n * 1_000_000 for n in range(1, 1001)]  # 1..1000 ms, as ns
    random.Random(7).shuffle(samples)
    summary = summarize_latencies(samples)
    assert summary.count == 1000
    assert summary.p50 == 500.0
    assert summary.p90 == 900.0
    assert summary.p99 == 990.0
    assert summary.max == 1000.0
    assert summary.mean == pytest.approx(500.5)
    assert summary.as_dict()["p99"] == 990.0


def test_summary_of_nothing_is_zero() -> None:
    summary = summarize_latencies([])
    assert summary.count == 0
    assert summary.p99 == summary.max == 0.0


def test_recorder_keeps_up_to_its_limit_and_counts_the_rest() -> None:
    recorder = LatencyRecorder(limit=3)
    for value in (5, 1, 3, 9, 9):
        recorder.add(value)
    assert list(recorder.samples) == [5, 1, 3]
    assert recorder.dropped == 2
    assert recorder.full()
    assert recorder.summary().count == 3


# -- ordering ------------------------------------------------------------------------------


def feed(tracker: SequenceTracker, arrivals: list[tuple[int, int]]) -> SequenceTracker:
    for stream, seq in arrivals:
        tracker.observe(stream, seq)
    return tracker


def test_in_order_delivery_counts_nothing_wrong() -> None:
    tracker = feed(SequenceTracker(), [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)])
    assert tracker.counts({0: 3, 1: 2}) == OrderCounts(received=5, in_order=5)


def test_streams_are_independent() -> None:
    # Interleaving two streams is not reordering: order only holds within a stream.
    tracker = feed(SequenceTracker(), [(1, 0), (1, 1), (0, 0), (1, 2), (0, 1)])
    counts = tracker.counts({0: 2, 1: 3})
    assert (counts.reordered, counts.duplicates, counts.lost) == (0, 0, 0)


def test_a_gap_is_lost_until_the_late_message_arrives() -> None:
    tracker = feed(SequenceTracker(), [(0, 0), (0, 2), (0, 3)])
    assert tracker.counts({0: 4}).lost == 1
    tracker.observe(0, 1)  # the missing one, late
    counts = tracker.counts({0: 4})
    assert counts == OrderCounts(received=4, in_order=3, reordered=1, duplicates=0, lost=0)


def test_duplicates_of_delivered_and_of_late_messages() -> None:
    tracker = feed(SequenceTracker(), [(0, 0), (0, 1), (0, 1), (0, 0), (0, 3), (0, 2), (0, 2)])
    counts = tracker.counts({0: 4})
    assert counts.duplicates == 3  # 1 again, 0 again, 2 again (after arriving late)
    assert counts.reordered == 1  # 2 after 3
    assert counts.lost == 0
    assert counts.received == 7


def test_the_tail_not_yet_arrived_is_lost() -> None:
    tracker = feed(SequenceTracker(), [(0, 0), (0, 1)])
    assert tracker.counts({0: 5}).lost == 3
    # A stream that published but never reached this subscriber: all lost.
    assert tracker.counts({0: 2, 7: 4}).lost == 4


def test_missing_seqs_beyond_what_was_published_are_not_lost() -> None:
    # A publish counted only later (its response not yet seen) must not count as lost now.
    tracker = feed(SequenceTracker(), [(0, 0), (0, 5)])
    assert tracker.counts({0: 3}).lost == 2  # seqs 1 and 2; 3 and 4 not published yet


def test_observe_slow_matches_observe() -> None:
    rng = random.Random(11)
    arrivals = [(rng.randrange(3), rng.randrange(40)) for _ in range(500)]
    fast, slow = SequenceTracker(), SequenceTracker()
    for stream, seq in arrivals:
        fast.observe(stream, seq)
        slow.observe_slow(stream, seq)
    published = {0: 40, 1: 40, 2: 40}
    assert fast.counts(published) == slow.counts(published)


def test_shuffled_delivery_accounts_every_message_once() -> None:
    rng = random.Random(3)
    seqs = list(range(200))
    rng.shuffle(seqs)
    dropped = set(seqs[:10])
    arrivals = [s for s in seqs if s not in dropped]
    arrivals += arrivals[:5]  # five duplicates
    tracker = SequenceTracker()
    for seq in arrivals:
        tracker.observe(0, seq)
    counts = tracker.counts({0: 200})
    assert counts.lost == 10
    assert counts.duplicates == 5
    assert counts.received == 195
    assert counts.in_order + counts.reordered + counts.duplicates == counts.received


def test_counts_add_and_subtract() -> None:
    a = OrderCounts(10, 8, 1, 1, 2)
    b = OrderCounts(5, 5, 0, 0, 0)
    assert a + b == OrderCounts(15, 13, 1, 1, 2)
    assert (a + b) - b == a
    trackers = [(feed(SequenceTracker(), [(0, 0), (0, 2)]), {0: 3}), (SequenceTracker(), {0: 3})]
    assert total_order_counts(trackers) == OrderCounts(
        received=2, in_order=2, reordered=0, duplicates=0, lost=4
    )


# -- options and reports -------------------------------------------------------------------


def test_parse_rates() -> None:
    assert parse_rates("50, 200,max") == (50.0, 200.0, "max")
    for bad in ("", "0", "-5", "fast"):
        with pytest.raises(ValueError):
            parse_rates(bad)


def test_medians_and_ratios_against_the_first_target() -> None:
    def run(target: str, deliveries: float, p99: float) -> dict[str, object]:
        return {
            "scenario": "fanout",
            "target": {"name": target},
            "summary": {"deliveries_per_s": deliveries, "p99_ms_low_rate": p99, "lost": 0},
        }

    runs = [
        run("soketi", 100.0, 20.0),
        run("soketi", 120.0, 10.0),
        run("soketi", 110.0, 30.0),
        run("fastrelay", 330.0, 7.0),
        {"scenario": "fanout", "target": "broken", "failed": "no npm"},
    ]
    summaries = summarize_runs(runs)
    soketi = next(s for s in summaries if s["target"] == "soketi")
    assert soketi["repeats"] == 3
    assert soketi["metrics"]["deliveries_per_s"] == 110.0
    assert soketi["metrics"]["p99_ms_low_rate"] == 20.0
    ratios = {r["metric"]: r for r in compute_ratios(summaries, ["soketi", "fastrelay"])}
    assert ratios["deliveries_per_s"]["ratio"] == 3.0
    assert ratios["deliveries_per_s"]["better"] is True
    assert ratios["p99_ms_low_rate"]["ratio"] == 0.35
    assert ratios["p99_ms_low_rate"]["better"] is True  # lower latency is better
    assert compute_ratios(summaries, ["soketi"]) == []


# -- the subscriber's hot path, fed by hand ------------------------------------------------


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def _upgraded_socket(sink: DeliverySink) -> tuple[PusherSocket, _Transport]:
    sock = PusherSocket("127.0.0.1", 6001, "/app/key?protocol=7", sink)
    transport = _Transport()
    sock.connection_made(transport)  # type: ignore[arg-type]
    request = transport.written[0].decode()
    assert request.startswith("GET /app/key?protocol=7 HTTP/1.1\r\n")
    key = next(
        line.split(":", 1)[1].strip()
        for line in request.split("\r\n")
        if line.lower().startswith("sec-websocket-key:")
    )
    accept = base64.b64encode(
        hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    ).decode()
    established = json.dumps(
        {"event": "pusher:connection_established", "data": json.dumps({"socket_id": "1.2"})}
    )
    sock.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        + encode_frame(OP_TEXT, established.encode())
    )
    assert sock.socket_id == "1.2"
    return sock, transport


def _message(stream: int, seq: int, sent_ns: int, *, extra: str = "") -> bytes:
    data = bench_data(stream, seq, sent_ns, "pad|ding")
    text = f'{{"event":"bench",{extra}"channel":"bench-fanout","data":"{data}"}}'
    return encode_frame(OP_TEXT, text.encode())


async def test_subscriber_accounts_every_frame_it_is_fed() -> None:
    sink = DeliverySink()
    sock, transport = _upgraded_socket(sink)
    sent = time.monotonic_ns() - 5_000_000  # 5 ms ago
    frames = [_message(0, 0, sent), _message(0, 2, sent), _message(1, 0, sent)]
    frames += [_message(0, 1, sent, extra='"user_id":"a|b",'), _message(0, 1, sent)]
    # All in one read, cut in the middle of a frame, as TCP may deliver them.
    stream = b"".join(frames)
    sock.data_received(stream[:7])
    sock.data_received(stream[7:])
    assert sink.delivered == 5
    latencies = list(sink.recorder.samples)
    assert len(latencies) == 5 and all(5_000_000 <= n < 10_000_000_000 for n in latencies)
    counts = sock.tracker.counts({0: 3, 1: 1})
    assert counts == OrderCounts(received=5, in_order=3, reordered=1, duplicates=1, lost=0)
    # A server ping gets a masked pong; control messages are not deliveries.
    sock.data_received(encode_frame(OP_PING, b"hi"))
    pong = FrameParser(1024).feed(transport.written[-1])
    assert pong == [(OP_PONG, b"hi")]
    sock.data_received(encode_frame(OP_TEXT, b'{"event":"pusher:ping","data":{}}'))
    assert FrameParser(1024).feed(transport.written[-1])[0][1] == (
        b'{"event":"pusher:pong","data":{}}'
    )
    assert sink.delivered == 5 and sink.errors == []
