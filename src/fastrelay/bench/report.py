"""Results as a JSON document, a markdown report and a PNG plot.

The JSON document::

    {"tool": "fastrelay bench", "version": ..., "command": [...], "started": ISO time,
     "machine": {...}, "options": {...}, "pinning": {"server": CPU|None, "load": CPU|None},
     "runs": [{"scenario", "target": {...}, "seconds", "setup", "steps": [...],
               "summary": {...}, "errors": [...], "warnings": [...], "repeat": i}
              | {"scenario", "target", "failed": "why", "repeat": i}],
     "summaries": [{"scenario", "target", "metrics": {name: median over repeats}}],
     "ratios": [{"scenario", "metric", "baseline", "target", "value", "baseline_value",
                 "ratio", "higher_is_better", "better"}],
     "warnings": [...]}

The plot (matplotlib, an optional extra) shows p50 and p99 publish→deliver latency against the
achieved publish rate, one line per target (medians over repeats, step by step), one panel per
rate-stepped scenario.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
from typing import Any

__all__ = [
    "HEADLINES",
    "compute_ratios",
    "machine_info",
    "markdown_report",
    "plot_latency",
    "summarize_runs",
]

# scenario -> (summary key, label, higher is better)
HEADLINES: dict[str, list[tuple[str, str, bool]]] = {
    "fanout": [
        ("deliveries_per_s", "deliveries/s (best loss-free step)", True),
        ("p99_ms_low_rate", "p99 ms at the lowest rate", False),
        ("p99_ms_max_rate", "p99 ms at the max rate", False),
        ("server_us_per_delivery_max_rate", "server CPU µs per delivery at the max rate", False),
    ],
    "multichannel": [
        ("deliveries_per_s", "deliveries/s (best loss-free step)", True),
        ("p99_ms_low_rate", "p99 ms at the lowest rate", False),
        ("p99_ms_max_rate", "p99 ms at the max rate", False),
        ("server_us_per_delivery_max_rate", "server CPU µs per delivery at the max rate", False),
    ],
    "client-events": [
        ("max_events_per_s", "client events/s (best loss-free step)", True),
        ("deliveries_per_s", "deliveries/s (best loss-free step)", True),
        ("p99_ms_low_rate", "p99 ms at the lowest rate", False),
        ("server_us_per_delivery_max_rate", "server CPU µs per delivery at the max rate", False),
    ],
    "connections": [
        ("rss_per_connection_bytes", "server RSS per idle connection (bytes)", False),
        ("connects_per_s", "connections/s (connect + subscribe)", True),
    ],
    "rest": [
        ("publishes_per_s", "signed publishes/s", True),
        ("p99_ms", "p99 ms per publish", False),
        ("server_us_per_publish", "server CPU µs per publish", False),
    ],
    "presence-churn": [
        ("joins_per_s", "presence joins/s", True),
        ("join_p99_ms", "p99 ms per join", False),
    ],
}
STEPPED = ("fanout", "multichannel", "client-events")


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "loadavg": load,  # other work on the machine skews every figure: look here first
        "cpus": os.cpu_count(),
        "usable_cpus": usable,  # before --pin-load
        "cpu_model": model,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def _target_name(run: dict[str, Any]) -> str:
    target = run["target"]
    return str(target["name"] if isinstance(target, dict) else target)


def summarize_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median of each headline metric over the repeats of each (scenario, target)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        if "summary" in run:
            groups.setdefault((run["scenario"], _target_name(run)), []).append(run["summary"])
    out = []
    for (scenario, target), summaries in groups.items():
        metrics: dict[str, Any] = {}
        for key in summaries[0]:
            values = [s.get(key) for s in summaries]
            numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if values and all(isinstance(v, bool) for v in values):
                metrics[key] = all(values)
            elif len(numbers) == len(values) and numbers:
                metrics[key] = statistics.median(numbers)
            elif all(v is None for v in values):
                metrics[key] = None  # not measured in any repeat (no such step, no pid)
            else:
                metrics[key] = values[0] if len(values) == 1 else values
        out.append(
            {"scenario": scenario, "target": target, "repeats": len(summaries), "metrics": metrics}
        )
    return out


def compute_ratios(summaries: list[dict[str, Any]], targets: list[str]) -> list[dict[str, Any]]:
    """Each target's headline metrics divided by the first target's, scenario by scenario."""
    if len(targets) < 2:
        return []
    baseline = targets[0]
    by_key = {(s["scenario"], s["target"]): s["metrics"] for s in summaries}
    ratios = []
    for scenario in dict.fromkeys(s["scenario"] for s in summaries):
        base = by_key.get((scenario, baseline))
        if base is None:
            continue
        for key, label, higher in HEADLINES.get(scenario, []):
            for target in targets[1:]:
                metrics = by_key.get((scenario, target))
                if metrics is None:
                    continue
                value, reference = metrics.get(key), base.get(key)
                ratio = None
                numeric = isinstance(value, (int, float)) and isinstance(reference, (int, float))
                if numeric and reference:
                    ratio = value / reference
                better = None
                if ratio is not None:
                    better = ratio > 1 if higher else ratio < 1
                ratios.append(
                    {
                        "scenario": scenario,
                        "metric": key,
                        "label": label,
                        "baseline": baseline,
                        "target": target,
                        "value": value,
                        "baseline_value": reference,
                        "ratio": None if ratio is None else round(ratio, 3),
                        "higher_is_better": higher,
                        "better": better,
                    }
                )
    return ratios


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if value >= 1000:
            return f"{value:,.0f}"
        if value >= 100:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _pct(value: Any) -> str:
    return "–" if value is None else f"{value:.0%}"


def markdown_report(doc: dict[str, Any]) -> str:
    lines: list[str] = []
    machine = doc.get("machine", {})
    pin = doc.get("pinning", {})
    lines.append(f"# fastrelay bench, {doc.get('started', '')}")
    lines.append("")
    lines.append(
        f"Machine: {machine.get('cpus')} CPUs ({machine.get('cpu_model') or 'unknown model'}),"
        f" Python {machine.get('python')}. Server pinned to CPU {_fmt(pin.get('server'))},"
        f" load generator to CPU {_fmt(pin.get('load'))}. Load average at the start"
        f" {_fmt(machine.get('loadavg', [None])[0])}, at the end"
        f" {_fmt(doc.get('loadavg_end', [None])[0])}."
    )
    if doc.get("command"):
        lines.append("")
        lines.append("Command: `" + " ".join(doc["command"]) + "`")
    targets = doc.get("targets", [])
    summaries = doc.get("summaries", [])
    by_key = {(s["scenario"], s["target"]): s for s in summaries}
    if summaries:
        lines += ["", "## Summary", ""]
        head = ["scenario", "metric", *targets]
        if len(targets) > 1:
            head += [f"{t} ÷ {targets[0]}" for t in targets[1:]]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        ratio_of = {(r["scenario"], r["metric"], r["target"]): r for r in doc.get("ratios", [])}
        for scenario in dict.fromkeys(s["scenario"] for s in summaries):
            for key, label, _higher in HEADLINES.get(scenario, []):
                row = [scenario, label]
                for target in targets:
                    entry = by_key.get((scenario, target))
                    row.append(_fmt(entry["metrics"].get(key)) if entry else "–")
                for target in targets[1:]:
                    r = ratio_of.get((scenario, key, target))
                    if r is None or r["ratio"] is None:
                        row.append("–")
                    else:
                        row.append(f"{r['ratio']:.2f}×" + (" ✓" if r["better"] else ""))
                lines.append("| " + " | ".join(row) + " |")
        repeats = {s["repeats"] for s in summaries}
        if repeats != {1}:
            lines.append("")
            lines.append(f"Medians over {max(repeats)} runs each.")
    runs = doc.get("runs", [])
    for scenario in dict.fromkeys(r["scenario"] for r in runs):
        lines += ["", f"## {scenario}", ""]
        these = [r for r in runs if r["scenario"] == scenario]
        if scenario in STEPPED:
            unit = "events" if scenario == "client-events" else "publishes"
            head = [
                "target",
                "rate",
                f"{unit}/s",
                "deliveries/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                "lost",
                "dup",
                "reord",
                "load cpu",
                "server cpu",
                "server µs/delivery",
            ]
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "---|" * len(head))
            for run in these:
                for step in run.get("steps", []):
                    lat = step["latency_ms"]
                    lines.append(
                        "| "
                        + " | ".join(
                            [
                                _target_name(run),
                                _fmt(step["rate"]),
                                _fmt(step[f"{unit}_per_s"]),
                                _fmt(step["deliveries_per_s"]),
                                _fmt(lat["p50"]),
                                _fmt(lat["p90"]),
                                _fmt(lat["p99"]),
                                _fmt(lat["max"]),
                                _fmt(step["lost"]),
                                _fmt(step["duplicates"]),
                                _fmt(step["reordered"]),
                                _pct(step["load_cpu"]),
                                _pct(step["server_cpu"]),
                                _fmt(step.get("server_us_per_delivery")),
                            ]
                        )
                        + " |"
                    )
        else:
            keys: list[str] = []
            for run in these:
                for key in run.get("summary", {}):
                    if key not in keys:
                        keys.append(key)
            head = ["target", *keys]
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "---|" * len(head))
            for run in these:
                summary = run.get("summary", {})
                lines.append(
                    "| "
                    + " | ".join([_target_name(run), *(_fmt(summary.get(k)) for k in keys)])
                    + " |"
                )
        for run in these:
            if "failed" in run:
                lines.append("")
                lines.append(f"**{_target_name(run)} failed:** {run['failed']}")
    warnings = doc.get("warnings", [])
    if warnings:
        lines += ["", "## Warnings", ""]
        lines += [f"- {w}" for w in warnings]
    return "\n".join(lines) + "\n"


def _median_steps(runs: list[dict[str, Any]], unit: str) -> list[tuple[float, float, float]]:
    """(achieved rate, p50, p99) per rate step, each the median over the repeats that ran it."""
    by_rate: dict[Any, list[dict[str, Any]]] = {}
    for run in runs:
        for step in run["steps"]:
            if step[f"{unit}_per_s"] > 0:
                by_rate.setdefault(step["rate"], []).append(step)
    points = []
    for steps in by_rate.values():
        points.append(
            (
                statistics.median(s[f"{unit}_per_s"] for s in steps),
                max(statistics.median(s["latency_ms"]["p50"] for s in steps), 1e-3),
                max(statistics.median(s["latency_ms"]["p99"] for s in steps), 1e-3),
            )
        )
    return sorted(points)


def plot_latency(doc: dict[str, Any], path: str) -> bool:
    """Write the latency plot; False (nothing written) without matplotlib or stepped runs."""
    runs = [r for r in doc.get("runs", []) if r["scenario"] in STEPPED and r.get("steps")]
    if not runs:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    scenarios = list(dict.fromkeys(r["scenario"] for r in runs))
    fig, axes = plt.subplots(1, len(scenarios), figsize=(6.5 * len(scenarios), 4.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    targets = list(dict.fromkeys(_target_name(r) for r in runs))
    for ax, scenario in zip(axes[0], scenarios, strict=True):
        unit = "events" if scenario == "client-events" else "publishes"
        for name in targets:
            these = [r for r in runs if r["scenario"] == scenario and _target_name(r) == name]
            if not these:
                continue
            color = colors[targets.index(name) % len(colors)]
            points = _median_steps(these, unit)
            xs = [x for x, _p50, _p99 in points]
            ax.plot(
                xs,
                [p50 for _x, p50, _p99 in points],
                "--",
                marker="o",
                color=color,
                label=f"{name} p50",
            )
            ax.plot(
                xs,
                [p99 for _x, _p50, p99 in points],
                "-",
                marker="o",
                color=color,
                label=f"{name} p99",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"achieved {unit}/s")
        ax.set_ylabel("publish→deliver latency, ms")
        ax.set_title(scenario)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("fastrelay bench: latency percentiles against publish rate", fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
