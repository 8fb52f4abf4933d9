"""``fastrelay bench``: a load tool for fastrelay or any Pusher Channels (protocol 7) server.

Usage (``fastrelay bench …`` and ``python -m fastrelay.bench …`` are the same)::

    fastrelay bench fanout --subscribers 1000 --rates 50,200,800,max --duration 5
    fastrelay bench connections --connections 10000 --target http://KEY:SECRET@127.0.0.1:6001/apps/ID
    fastrelay bench compare --targets soketi,fastrelay --scenarios fanout,connections,rest \\
        --pin-server 0 --pin-load 1 --out bench/results

Scenarios: ``fanout``, ``multichannel``, ``connections``, ``rest``, ``client-events``,
``presence-churn`` (see :mod:`fastrelay.bench.scenarios`); targets: ``fastrelay``, ``soketi``
or a URL (see :mod:`fastrelay.bench.targets`). Every run is bounded by ``--duration`` per step,
the counts given, and ``--time-limit``; the tool stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._version import __version__
from .progress import Progress
from .report import compute_ratios, machine_info, markdown_report, plot_latency, summarize_runs
from .scenarios import SCENARIOS, Options, parse_rates, run_scenario
from .targets import TargetError, TargetSpec, default_cache_dir, parse_target, start_target

__all__ = ["build_parser", "main"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _rates(text: str) -> tuple[float | str, ...]:
    try:
        return parse_rates(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cpu(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("a CPU number is >= 0")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    d = Options()
    g = parser.add_argument_group("load")
    g.add_argument(
        "--duration",
        type=_positive_float,
        default=d.duration,
        metavar="S",
        help=f"seconds per rate step / hold / rest run (default {d.duration:g})",
    )
    g.add_argument(
        "--subscribers",
        type=_positive_int,
        default=d.subscribers,
        metavar="N",
        help=f"receiving connections, all channels together (default {d.subscribers})",
    )
    g.add_argument(
        "--channels",
        type=_positive_int,
        default=d.channels,
        metavar="N",
        help=f"channels for multichannel, client-events, connections (default {d.channels})",
    )
    g.add_argument(
        "--rates",
        type=_rates,
        default=d.rates,
        metavar="R,R,max",
        help="messages/s per step, 'max' = closed loop (default 50,200,800,max)",
    )
    g.add_argument(
        "--window",
        type=_positive_int,
        default=d.window,
        metavar="N",
        help="max step: deliveries in flight, i.e. messages sent but not yet received by"
        f" every subscriber, counted per subscriber (default {d.window})",
    )
    g.add_argument(
        "--publishers",
        type=_positive_int,
        default=d.publishers,
        metavar="N",
        help=f"REST connections publishing in rate steps (default {d.publishers})",
    )
    g.add_argument(
        "--payload",
        type=int,
        default=d.payload,
        metavar="BYTES",
        help="extra bytes of padding in each message (default 0)",
    )
    g.add_argument(
        "--connections",
        type=_positive_int,
        default=d.connections,
        metavar="N",
        help=f"idle connections for the connections scenario (default {d.connections})",
    )
    g.add_argument(
        "--connect-concurrency",
        type=_positive_int,
        default=d.connect_concurrency,
        metavar="N",
        help=f"handshakes in progress at once (default {d.connect_concurrency})",
    )
    g.add_argument(
        "--rest-connections",
        type=_positive_int,
        default=d.rest_connections,
        metavar="N",
        help=f"keep-alive clients of the rest scenario (default {d.rest_connections})",
    )
    g.add_argument(
        "--churners",
        type=_positive_int,
        default=d.churners,
        metavar="N",
        help=f"presence-churn: joining/leaving connections (default {d.churners})",
    )
    g.add_argument(
        "--observers",
        type=_positive_int,
        default=d.observers,
        metavar="N",
        help=f"presence-churn: watching members (default {d.observers})",
    )
    g.add_argument(
        "--drain",
        type=_positive_float,
        default=d.drain,
        metavar="S",
        help=f"seconds without progress before undelivered counts as lost (default {d.drain:g})",
    )
    g.add_argument(
        "--time-limit",
        type=_positive_float,
        default=d.time_limit,
        metavar="S",
        help=f"no new step starts after this many seconds per run (default {d.time_limit:g})",
    )
    g.add_argument(
        "--load-warn",
        type=float,
        default=d.load_warn,
        metavar="FRACTION",
        help="warn when the load generator uses this much of a core (default 0.9)",
    )
    r = parser.add_argument_group("machine")
    r.add_argument(
        "--pin-server",
        type=_cpu,
        metavar="CPU",
        help="run a server started here on this CPU only (taskset)",
    )
    r.add_argument(
        "--pin-load", type=_cpu, metavar="CPU", help="run the load generator on this CPU only"
    )
    r.add_argument(
        "--repeat",
        type=_positive_int,
        default=1,
        metavar="N",
        help="run everything N times; the summary takes medians (default 1)",
    )
    r.add_argument(
        "--soketi-dir",
        type=Path,
        metavar="DIR",
        help=f"where the soketi target is installed (default {default_cache_dir() / 'soketi'})",
    )
    r.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a URL target that is not on this machine (loopback only otherwise)",
    )
    o = parser.add_argument_group("output")
    o.add_argument("--json", metavar="PATH", help="write the JSON document ('-' = stdout)")
    o.add_argument("--markdown", metavar="PATH", help="write the markdown report ('-' = stdout)")
    o.add_argument("--plot", metavar="PATH", help="write the latency plot (PNG; needs matplotlib)")
    o.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="write DIR/results.json, DIR/results.md and DIR/latency.png",
    )
    o.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 if any message was lost, duplicated or reordered, or a run failed",
    )
    o.add_argument("-q", "--quiet", action="store_true", help="no progress line on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastrelay bench",
        description="Load tool for fastrelay or any Pusher Channels (protocol 7) server.",
        epilog="Targets: fastrelay (started here), soketi (Soketi 1.6.1, installed on first use"
        " and started here), or http://KEY:SECRET@HOST:PORT/apps/APP_ID[?pid=N] for a running"
        " server; prefix NAME= to label one.",
    )
    parser.add_argument("--version", action="version", version=f"fastrelay bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="SCENARIO")
    for name, func in SCENARIOS.items():
        doc = " ".join((func.__doc__ or "").strip().split("\n\n")[0].replace("``", "").split())
        p = sub.add_parser(name, help=" ".join(doc.split()), description=doc)
        p.add_argument(
            "--target",
            default="fastrelay",
            metavar="SPEC",
            help="fastrelay (default), soketi or http://KEY:SECRET@HOST:PORT/apps/ID",
        )
        _common(p)
    p = sub.add_parser(
        "compare", help="the same scenarios against several targets; ratios against the first"
    )
    p.add_argument(
        "--targets",
        default="soketi,fastrelay",
        metavar="SPEC,SPEC",
        help="comma-separated targets; the first is the baseline (default soketi,fastrelay)",
    )
    p.add_argument(
        "--scenarios",
        default="fanout,connections,rest",
        metavar="NAME,NAME",
        help=f"comma-separated, from {', '.join(SCENARIOS)} (default fanout,connections,rest)",
    )
    _common(p)
    return parser


def _options(args: argparse.Namespace) -> Options:
    return Options(
        duration=args.duration,
        subscribers=args.subscribers,
        channels=args.channels,
        rates=args.rates,
        window=args.window,
        publishers=args.publishers,
        payload=max(0, args.payload),
        connections=args.connections,
        connect_concurrency=args.connect_concurrency,
        rest_connections=args.rest_connections,
        churners=args.churners,
        observers=args.observers,
        drain=args.drain,
        load_warn=args.load_warn,
        time_limit=args.time_limit,
    )


def _raise_fd_limit(needed: int, progress: Progress) -> None:
    """Raise the open-file limit for this process and the servers it starts: the soft limit to
    the hard one, and both when more are needed and the hard limit allows (root may raise it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed + 1024
    for limits in ((hard, hard), (want, want)):
        if soft >= want:
            break
        if limits[1] != resource.RLIM_INFINITY and limits[1] < hard:
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            soft, hard = limits
        except (ValueError, OSError):
            pass
    if soft < needed + 256:
        progress.warn(f"the open-file limit is {soft}; {needed} connections need more (ulimit -n)")


async def _run_all(
    scenarios: list[str],
    specs: list[TargetSpec],
    options: Options,
    args: argparse.Namespace,
    progress: Progress,
) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeat):
        for scenario in scenarios:
            for spec in specs:
                # A fresh server per scenario: the memory baseline and caches start clean.
                try:
                    target = start_target(
                        spec, pin_cpu=args.pin_server, soketi_dir=args.soketi_dir, say=progress.say
                    )
                except TargetError as exc:
                    progress.warn(f"{spec.name}: {exc}")
                    runs.append(
                        {
                            "scenario": scenario,
                            "target": spec.name,
                            "failed": str(exc),
                            "repeat": repeat,
                        }
                    )
                    continue
                try:
                    result = await run_scenario(scenario, target, options, progress)
                    result["repeat"] = repeat
                    runs.append(result)
                except Exception as exc:  # one failed run must not lose the others
                    progress.warn(f"{spec.name} {scenario} failed: {type(exc).__name__}: {exc}")
                    runs.append(
                        {
                            "scenario": scenario,
                            "target": target.describe(),
                            "failed": f"{type(exc).__name__}: {exc}",
                            "repeat": repeat,
                        }
                    )
                finally:
                    await asyncio.sleep(0.2)  # let the closes reach the server
                    target.stop()
    return runs


def _write(path: str, text: str) -> None:
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fastrelay bench``; returns the exit code (2 = bad arguments, 1 = failed/strict)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    progress = Progress(enabled=not args.quiet)
    if args.command == "compare":
        target_texts = [t for t in args.targets.split(",") if t.strip()]
        scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
        unknown = [s for s in scenarios if s not in SCENARIOS]
        if unknown or not scenarios:
            print(
                f"fastrelay bench: error: unknown scenario(s) {unknown}; choose from"
                f" {', '.join(SCENARIOS)}",
                file=sys.stderr,
            )
            return 2
    else:
        target_texts = [args.target]
        scenarios = [args.command]
    try:
        specs = [parse_target(t) for t in target_texts]
    except TargetError as exc:
        print(f"fastrelay bench: error: {exc}", file=sys.stderr)
        return 2
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        print(
            "fastrelay bench: error: two targets have the same name; label them NAME=SPEC",
            file=sys.stderr,
        )
        return 2
    remote = [s.name for s in specs if s.kind == "url" and not s.is_loopback]
    if remote and not args.allow_remote:
        print(
            f"fastrelay bench: error: {', '.join(remote)} is not on this machine; pass"
            " --allow-remote to load a server elsewhere (only ever your own)",
            file=sys.stderr,
        )
        return 2
    options = _options(args)
    machine = machine_info()
    if args.pin_load is not None:
        try:
            os.sched_setaffinity(0, {args.pin_load})
        except (AttributeError, OSError) as exc:
            print(
                f"fastrelay bench: error: cannot pin to CPU {args.pin_load}: {exc}", file=sys.stderr
            )
            return 2
    needed = max(options.subscribers, options.connections if "connections" in scenarios else 0)
    _raise_fd_limit(needed + options.rest_connections + options.churners, progress)

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.monotonic()
    coro = _run_all(scenarios, specs, options, args, progress)
    try:
        import uvloop

        runs = uvloop.run(coro)
        loop_name = "uvloop"
    except ImportError:  # pragma: no cover - Windows
        runs = asyncio.run(coro)
        loop_name = "asyncio"
    except KeyboardInterrupt:
        progress.warn("interrupted")
        return 130
    progress.clear()

    summaries = summarize_runs(runs)
    doc: dict[str, Any] = {
        "tool": "fastrelay bench",
        "version": __version__,
        "command": ["fastrelay", "bench", *(sys.argv[1:] if argv is None else argv)],
        "started": started,
        "seconds": round(time.monotonic() - t0, 1),
        "machine": {**machine, "load_loop": loop_name},
        "options": options.as_dict(),
        "pinning": {"server": args.pin_server, "load": args.pin_load},
        "targets": names,
        "runs": runs,
        "summaries": summaries,
        "ratios": compute_ratios(summaries, names),
        "warnings": progress.warnings,
        "loadavg_end": machine_info()["loadavg"],
    }
    text_json = json.dumps(doc, indent=2) + "\n"
    text_md = markdown_report(doc)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        _write(str(args.out / "results.json"), text_json)
        _write(str(args.out / "results.md"), text_md)
        if not plot_latency(doc, str(args.out / "latency.png")):
            progress.say(
                "no plot written (needs matplotlib: pip install 'fastrelay[bench]',"
                " and a rate-stepped scenario)"
            )
    if args.json:
        _write(args.json, text_json)
    if args.markdown:
        _write(args.markdown, text_md)
    if args.plot and not plot_latency(doc, args.plot):
        progress.warn("no plot written: needs matplotlib (pip install 'fastrelay[bench]')")
    if not (args.json == "-" or args.markdown == "-"):
        sys.stdout.write(text_md)
    failed = any("failed" in run for run in runs)
    if args.strict:
        for run in runs:
            summary = run.get("summary", {})
            if summary.get("lost") or summary.get("duplicates") or summary.get("reordered"):
                failed = True
            if summary.get("consistent") is False:
                failed = True
    return 1 if failed else 0
