"""``fastrelay bench`` end to end: the load tool against real servers, briefly.

These check the tool's output and accounting, not speed: every figure asserted is a count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from conftest import APP_ID, APP_KEY, APP_SECRET

TIMEOUT = 60 * float(os.environ.get("FASTRELAY_TESTS_TIMEOUT_FACTOR", "1"))


def bench(*args: str, module: str = "fastrelay") -> dict[str, Any]:
    """Run the tool with ``--json -``; returns the parsed document (stdout holds only JSON)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "SOKETI_", "REVERB_"))
    }
    head = ["bench"] if module == "fastrelay" else []
    proc = subprocess.run(
        [sys.executable, "-m", module, *head, *args, "--json", "-", "--quiet"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_fanout_against_a_running_server(make_server: Any) -> None:
    server = make_server()
    url = f"http://{APP_KEY}:{APP_SECRET}@127.0.0.1:{server.port}/apps/{APP_ID}"
    doc = bench(
        "fanout",
        "--subscribers", "20",
        "--duration", "2",
        "--rates", "50,max",
        "--publishers", "2",
        "--target", f"local={url}",
        "--strict",
    )  # fmt: skip
    assert doc["tool"] == "fastrelay bench"
    assert doc["targets"] == ["local"]
    assert {"machine", "options", "pinning", "summaries", "ratios", "warnings"} <= set(doc)
    (run,) = doc["runs"]
    assert run["scenario"] == "fanout"
    assert run["target"]["name"] == "local" and run["target"]["kind"] == "url"
    assert run["setup"]["subscribers"] == 20
    assert run["errors"] == []
    steps = run["steps"]
    assert [s["rate"] for s in steps] == [50.0, "max"]
    for step in steps:
        assert step["lost"] == step["duplicates"] == step["reordered"] == 0, step
        assert step["disconnects"] == 0
        # Every publish reached every subscriber, exactly once.
        assert step["publishes_sent"] > 0
        assert step["deliveries"] == 20 * step["publishes_sent"], step
        latency = step["latency_ms"]
        assert latency["count"] == step["deliveries"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
        assert step["load_cpu"] >= 0
        assert step["server_cpu"] is None  # a URL target without ?pid= is not measured
    paced = steps[0]
    assert 80 <= paced["publishes_sent"] <= 101  # 50/s for 2 s
    summary = run["summary"]
    assert summary["lost"] == summary["duplicates"] == summary["reordered"] == 0
    assert summary["deliveries_per_s"] > 0
    (entry,) = doc["summaries"]
    assert entry["target"] == "local" and entry["metrics"]["deliveries_per_s"] > 0


def test_connections_and_rest_against_a_server_the_tool_starts() -> None:
    doc = bench(
        "compare",
        "--targets", "fastrelay",
        "--scenarios", "connections,rest",
        "--connections", "40",
        "--rest-connections", "2",
        "--duration", "1",
        module="fastrelay.bench",
    )  # fmt: skip
    runs = {run["scenario"]: run for run in doc["runs"]}
    connections = runs["connections"]["summary"]
    assert connections["connections"] == connections["alive_at_end"] == 40
    assert connections["disconnects"] == 0
    # The tool started this server, so it can read its memory and CPU.
    assert connections["rss_per_connection_bytes"] is not None
    assert runs["connections"]["target"]["local_pid"] is True
    rest = runs["rest"]
    assert rest["summary"]["publishes_per_s"] > 0
    assert rest["summary"]["failed"] == 0
    assert rest["steps"][0]["server_cpu"] is not None
