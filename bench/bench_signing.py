"""Signature checks: pure twin vs compiled twin.

Run ``python bench/bench_signing.py`` (build the extensions first). Prints the median time per
call for each twin and the ratio py/c as a markdown table. Both cases verify a valid signature,
so the whole check runs (a bad key or length would return early).
"""

from __future__ import annotations

import hashlib
import importlib
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

SRC = Path(__file__).resolve().parent.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

REPEAT = 15
NUMBER = 10_000  # calls per repeat; the twins alternate repeats, so load drift hits both alike

SECRET = b"app-secret"
APP_KEY = "app-key"
# pusher:subscribe to a presence channel: the longest token message a client sends.
CHANNEL_MESSAGE = '123.456:presence-room:{"user_id":"user-1","user_info":{"name":"Alice"}}'
# POST /apps/app-id/events as a Node/Python SDK signs it: 5 query parameters.
METHOD = "POST"
PATH = "/apps/app-id/events"
BODY = b'{"name":"price","channel":"prices","data":"{\\"v\\":1}"}'
PARAMS = {
    "auth_key": "app-key",
    "auth_timestamp": "1700000000",
    "auth_version": "1.0",
    "body_md5": "1615a707e7b476b09e397edb9cc05e9b",
    "auth_signature": "59e7ea9c566674ffb08efff7d4d2b96c4c6aae140721a67bd66d47934d78a3b0",
}


def load(twin: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"fastrelay.protocol._signing_{twin}")
    except ImportError:
        return None


def median_us(*funcs: Callable[[], object]) -> list[float]:
    """Median µs per call of each function, timed in alternating repeats."""
    timers = [timeit.Timer(func) for func in funcs]
    times: list[list[float]] = [[] for _ in funcs]
    for _ in range(REPEAT):
        for timer, samples in zip(timers, times, strict=True):
            samples.append(timer.timeit(NUMBER))
    return [statistics.median(samples) / NUMBER * 1e6 for samples in times]


def cases(signing: ModuleType) -> dict[str, Callable[[], object]]:
    token = f"{APP_KEY}:{signing.sign(SECRET, CHANNEL_MESSAGE)}"
    signature = PARAMS["auth_signature"]
    verify_token = signing.verify_token
    verify_request = signing.verify_request
    assert verify_token(SECRET, APP_KEY, token, CHANNEL_MESSAGE)
    assert verify_request(SECRET, METHOD, PATH, PARAMS, signature)
    out = {
        "verify_token (presence)": lambda: verify_token(SECRET, APP_KEY, token, CHANNEL_MESSAGE),
        "verify_request (5-param query)": lambda: verify_request(
            SECRET, METHOD, PATH, PARAMS, signature
        ),
    }
    check_request = getattr(signing, "check_request", None)
    if check_request is not None:
        # The whole check of a signed publish as the REST path runs it: query parsing, the
        # timestamp window, the body's MD5, the string to sign, HMAC-SHA256 and the compare.
        query = {k: v for k, v in PARAMS.items() if k != "auth_signature"}
        query["body_md5"] = hashlib.md5(BODY).hexdigest()
        canonical = "&".join(f"{k}={query[k]}" for k in sorted(query))
        query["auth_signature"] = signing.sign(SECRET, f"{METHOD}\n{PATH}\n{canonical}")
        raw = "&".join(f"{k}={v}" for k, v in query.items())
        now = float(query["auth_timestamp"])
        assert check_request(SECRET, APP_KEY, METHOD, PATH, raw, BODY, now, 600) is not None
        out["check_request (a signed publish, whole)"] = lambda: check_request(
            SECRET, APP_KEY, METHOD, PATH, raw, BODY, now, 600
        )
    return out


def main() -> None:
    py = load("py")
    c = load("c")
    assert py is not None
    if c is None:
        print("fastrelay.protocol._signing_c is not built: showing the pure twin only\n")
    py_cases = cases(py)
    c_cases = cases(c) if c is not None else {}
    print("| call | py µs | c µs | py/c |")
    print("| --- | ---: | ---: | ---: |")
    for name, func in py_cases.items():
        if name in c_cases:
            py_time, c_time = median_us(func, c_cases[name])
            print(f"| {name} | {py_time:.2f} | {c_time:.2f} | {py_time / c_time:.2f}x |")
        else:
            (py_time,) = median_us(func)
            print(f"| {name} | {py_time:.2f} | - | - |")


if __name__ == "__main__":
    main()
