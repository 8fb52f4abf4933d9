"""The HTTP API's per-app rate limiter (server/ratelimit.py): fixed one-second windows, pure."""

from __future__ import annotations

import pytest

from fastrelay.server.ratelimit import Decision, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_points_fill_the_window_then_refuse() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert limiter.consume("a", 2, 5) == Decision(True, 5, 3, 1.0)
    clock.now += 0.25
    assert limiter.consume("a", 3, 5) == Decision(True, 5, 0, 0.75)
    refused = limiter.consume("a", 1, 5)
    assert refused == Decision(False, 5, 0, 0.75)
    assert refused.headers() == (
        ("X-RateLimit-Limit", "5"),
        ("X-RateLimit-Remaining", "0"),
        ("Retry-After", "1"),
    )


def test_refused_requests_cost_nothing() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert limiter.consume("a", 4, 5).allowed
    assert not limiter.consume("a", 2, 5).allowed  # would make 6
    assert not limiter.consume("a", 9, 5).allowed
    assert limiter.consume("a", 1, 5) == Decision(True, 5, 0, 1.0)


def test_a_new_window_opens_when_the_old_one_ends() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert limiter.consume("a", 5, 5).allowed
    clock.now += 0.999
    assert not limiter.consume("a", 1, 5).allowed
    clock.now += 0.001  # exactly one second after the window opened
    assert limiter.consume("a", 1, 5) == Decision(True, 5, 4, 1.0)
    clock.now += 30  # long idle: the next request opens a fresh window where it lands
    assert limiter.consume("a", 5, 5) == Decision(True, 5, 0, 1.0)


def test_keys_are_independent() -> None:
    limiter = RateLimiter(Clock())
    assert limiter.consume(("1", "read"), 1, 1).allowed
    assert not limiter.consume(("1", "read"), 1, 1).allowed
    assert limiter.consume(("1", "backend"), 1, 1).allowed
    assert limiter.consume(("2", "read"), 1, 1).allowed


def test_zero_limit_refuses_everything() -> None:
    limiter = RateLimiter(Clock())
    assert limiter.consume("a", 1, 0) == Decision(False, 0, 0, 1.0)


@pytest.mark.parametrize(("reset_in", "header"), [(1.0, "1"), (0.01, "1"), (2.2, "3"), (0, "1")])
def test_retry_after_is_whole_seconds(reset_in: float, header: str) -> None:
    assert dict(Decision(True, 1, 0, reset_in).headers())["Retry-After"] == header


def test_memory_follows_live_windows_not_requests() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    for second in range(50):
        for key in range(100):
            limiter.consume((second, key), 1, 10)  # 100 new keys each second
        clock.now += 1.5
    assert len(limiter) <= 300  # ended windows are swept as new keys arrive


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RateLimiter(Clock(), window=0)
