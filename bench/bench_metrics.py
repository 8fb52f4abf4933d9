"""What the metrics counters cost on the hot path: fan-out and WebSocket message handling.

Run ``python bench/bench_metrics.py`` (build the extensions first; ``FASTRELAY_NO_EXTENSIONS=1``
measures the pure twins). Everything runs in-process on the real classes with a fake transport
whose ``write`` does nothing, so the table shows the counters against the server's own work
only; real socket writes cost more and make the ratios smaller.

* Fan-out: :meth:`Hub.publish` of one event to N subscribers, without the metrics hook
  (``count_sent=None``) and with it (``Metrics.sent``: one call adding ``frames × len(frame)``
  per publish, not per recipient). A/B of the same code path.
* WebSocket message: :meth:`WebSocketConnection.data_received` of one ``pusher:ping`` frame,
  answered with ``pusher:pong`` (frame parse, session, reply, counters included). The counting
  it does (two increments on receive; on send, :class:`CountingClient` over the plain
  :class:`Client`) is measured on the same objects: the receive increments by themselves, the
  send as ``CountingClient.send`` minus ``Client.send``. "off" = full − counting.

Times are medians of interleaved repeats.
"""

from __future__ import annotations

import asyncio
import functools
import os
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parent.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from fastrelay import _accel  # noqa: E402
from fastrelay.config import App, Config  # noqa: E402
from fastrelay.hub.fanout import Outlet  # noqa: E402
from fastrelay.hub.hub import Hub  # noqa: E402
from fastrelay.hub.state import Client  # noqa: E402
from fastrelay.server.metrics import Counters, CountingClient, Metrics  # noqa: E402
from fastrelay.server.routes import Request  # noqa: E402
from fastrelay.server.ws import Gateway  # noqa: E402
from fastrelay.wire import codec  # noqa: E402

REPEAT = 31
MIN_TIME = 0.01  # seconds per repeat: short runs, interleaved, many of them
SUBSCRIBERS = (1, 10, 1_000)
APP = App(id="1", key="app-key", secret="app-secret")
DATA = '{"price":101.25,"symbol":"ACME","at":1700000000123}'


class NoopTransport:
    """Accepts every write and never buffers: only fastrelay's own work is measured."""

    label = "no-op write (upper bound of the ratio)"

    def write(self, data: bytes) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class DevNullTransport(NoopTransport):
    """Each write is a write(2) to /dev/null: a system call per frame, as a socket has (a real
    TCP send costs more still)."""

    label = "write(2) to /dev/null per frame"
    fd = os.open(os.devnull, os.O_WRONLY)

    def __init__(self) -> None:
        self.write = functools.partial(os.write, self.fd)  # type: ignore[method-assign]


def measure(funcs: dict[str, Callable[[], object]]) -> dict[str, list[float]]:
    """Seconds per call of each function, REPEAT times, interleaved so noise hits all alike."""
    timers = {name: timeit.Timer(func) for name, func in funcs.items()}
    numbers = {n: max(1, int(t.autorange()[0] * MIN_TIME / 0.2)) for n, t in timers.items()}
    runs: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(REPEAT):
        for name, timer in timers.items():
            runs[name].append(timer.timeit(numbers[name]) / numbers[name])
    return runs


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired_overhead(off: list[float], on: list[float]) -> float:
    """Median over repeats of on/off − 1, each pair timed back to back (drift cancels)."""
    return statistics.median(b / a for a, b in zip(off, on, strict=True)) - 1


def fmt(seconds: float) -> str:
    for unit, scale in (("ns", 1e9), ("µs", 1e6), ("ms", 1e3)):
        if seconds * scale < 1000:
            return f"{seconds * scale:.1f} {unit}"
    return f"{seconds:.2f} s"


def publish_case(
    subscribers: int, metrics: Metrics | None, transport: type[NoopTransport]
) -> Callable[[], object]:
    hub = Hub(
        clock=lambda: 0.0,
        call_later=lambda delay, callback: None,
        count_sent=metrics.sent if metrics is not None else None,
    )
    for i in range(subscribers):
        socket_id = f"{i + 1}.{i + 7}"
        outlet = Outlet(socket_id, transport(), 1 << 30, lambda: None)
        client = Client(APP, socket_id, outlet, lambda code, message: None)
        hub.add_client(client)
        hub.subscribe(client, "ticker")
    assert hub.publish(APP, "ticker", "price", DATA) == subscribers
    publish = hub.publish
    return lambda: publish(APP, "ticker", "price", DATA)


def masked_text_frame(payload: bytes) -> bytes:
    assert len(payload) < 126
    return bytes((0x81, 0x80 | len(payload))) + b"\0\0\0\0" + payload  # zero mask: same bytes


def websocket_cases(transport: type[NoopTransport]) -> dict[str, Callable[[], object]]:
    loop = asyncio.new_event_loop()
    metrics = Metrics()
    metrics.add_app(APP.id)
    config = Config(apps=(APP,), ping_interval=1e9, activity_timeout=120)
    gateway = Gateway(
        config, _Apps(), Hub(clock=loop.time, call_later=loop.call_later), loop, metrics
    )
    request = Request("GET", "/app/app-key", "protocol=7", {}, b"", "bench")
    connection = gateway.upgrade(transport(), request, b"")  # type: ignore[arg-type]
    frame = masked_text_frame(b'{"event":"pusher:ping","data":{}}')
    receive = connection.data_received

    counters = Counters()
    size = len(frame)

    def count_received() -> None:
        # Exactly the statements data_received adds for one message in one read.
        c = counters
        c.socket_received_bytes += size
        c.ws_messages_received += 1

    def call_only() -> None:
        # The same call without the increments: timeit's call overhead, subtracted.
        c = counters  # noqa: F841

    outlet = Outlet("1.2", transport(), 1 << 30, lambda: None)
    plain = Client(APP, "1.2", outlet, lambda code, message: None)
    counting = CountingClient(APP, "1.2", outlet, lambda code, message: None, counters=counters)
    pong = codec.PONG
    return {
        "data_received": lambda: receive(frame),
        "count_received": count_received,
        "call_only": call_only,
        "send_plain": lambda: plain.send(pong),
        "send_counting": lambda: counting.send(pong),
    }


class _Apps:
    def find_by_key(self, key: str) -> App | None:
        return APP if key == APP.key else None

    def find_by_id(self, app_id: str) -> App | None:
        return APP if app_id == APP.id else None

    def all(self) -> tuple[App, ...]:
        return (APP,)


def main() -> None:
    twins = " ".join(f"{k}={v}" for k, v in sorted(_accel.implementations().items()))
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {twins}; {REPEAT} repeats")
    print("A/B: median of paired on/off ratios. Counting alone: the counting code timed by")
    print("itself (call overhead of the timing harness subtracted), as a share of the whole.")
    frame_size = 2 + len(f'{{"event":"price","channel":"ticker","data":{DATA!r}}}')
    for transport in (NoopTransport, DevNullTransport):
        print(f"\nTransport: {transport.label}\n")
        print("| case | metrics off | metrics on | A/B overhead | counting alone | share |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for count in SUBSCRIBERS:
            metrics = Metrics()
            metrics.add_app(APP.id)
            sent = metrics.sent
            runs = measure(
                {
                    "off": publish_case(count, None, transport),
                    "on": publish_case(count, metrics, transport),
                    # What Hub._fanout adds per publish: the test and the hook call.
                    "count": lambda n=count, hook=sent: n and hook(APP, n, n * frame_size),
                    "baseline": lambda n=count, hook=sent: n and None,
                }
            )
            off, on = median(runs["off"]), median(runs["on"])
            alone = max(0.0, median(runs["count"]) - median(runs["baseline"]))
            print(
                f"| publish to {count:,} subscriber(s) | {fmt(off)} | {fmt(on)} "
                f"| {paired_overhead(runs['off'], runs['on']):+.1%} | {fmt(alone)} "
                f"| {alone / on:.1%} |"
            )
        runs = measure(websocket_cases(transport))
        received = max(0.0, median(runs["count_received"]) - median(runs["call_only"]))
        sent_cost = max(0.0, median(runs["send_counting"]) - median(runs["send_plain"]))
        on = median(runs["data_received"])
        alone = received + sent_cost
        print(
            f"| pusher:ping in, pusher:pong out | {fmt(on - alone)} | {fmt(on)} | – "
            f"| {fmt(alone)} | {alone / on:.1%} |"
        )
        print(
            f"\nPer WebSocket message: receive counting {fmt(received)}; send counting "
            f"{fmt(sent_cost)} (CountingClient.send {fmt(median(runs['send_counting']))} vs "
            f"Client.send {fmt(median(runs['send_plain']))})."
        )


if __name__ == "__main__":
    main()
