"""``python -m simnet``: a local swarm to build against, scenarios, and reports.

python -m simnet up --nodes 20             # a swarm until Ctrl-C
python -m simnet run simnet/scenarios/churn.toml [--mode fast|real|lan]
python -m simnet compare A/report.json B/report.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .events import RunLog
from .report import render_comparison, render_terminal, write_report
from .runner import expected_discoveries, run_processes
from .scenario import MODES, Scenario, ScenarioError, arrivals, load_scenario, phases
from .swarm import capabilities_wanted

SCENARIOS = Path(__file__).parent / "scenarios"


def scaled(scenario: Scenario, nodes: int) -> Scenario:
    """``scenario`` with its groups' counts scaled so the swarm has ``nodes`` nodes."""
    workers = max(1, nodes - scenario.requesters)
    total = sum(g.count for g in scenario.groups)
    counts = [max(1, math.floor(g.count * workers / total)) for g in scenario.groups]
    counts[0] += workers - sum(counts)
    if counts[0] < 1:
        raise ScenarioError(f"{nodes} nodes are too few for {len(counts)} groups")
    groups = tuple(replace(g, count=c) for g, c in zip(scenario.groups, counts, strict=True))
    return replace(scenario, groups=groups)


def cmd_up(args: argparse.Namespace) -> int:
    scenario = scaled(load_scenario(SCENARIOS / "dev.toml"), args.nodes)
    scenario = replace(scenario, seed=args.seed)
    console = Console()

    def serve(homes: dict[int, Path]) -> None:
        deadline = time.monotonic() + 60 + 2 * len(homes)
        while time.monotonic() < deadline:
            if all((h / "api.json").exists() for h in homes.values()):
                break
            time.sleep(0.2)
        console.print(f"[bold]simnet[/]: {len(homes)} llamanet nodes up ({args.mode} mode)")
        for index, home in sorted(homes.items()):
            console.print(f"  node {index:3d}  llamanet --home {home} status")
        console.print(
            f"Try: llamanet --home {homes[0]} ask --input-json sim.math "
            """'{"id": 1, "domain": "math", "args": [6, 7, 0]}'"""
        )
        console.print("Ctrl-C stops the swarm.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            console.print("stopping…")

    run_processes(scenario, args.mode, up=serve)
    return 0


def _expected_tasks(scenario: Scenario) -> int:
    return max(1, len(arrivals(scenario)) * len(phases(scenario)))


def cmd_run(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    scenario = scenario.with_overrides(mode=args.mode, seed=args.seed, ramp=args.ramp)
    if args.nodes:
        scenario = scaled(scenario, args.nodes)
    out = args.out or Path("simnet-reports") / f"{scenario.name}-{scenario.mode}-{scenario.seed}"
    out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(
            f"{scenario.name} ({scenario.mode}, {scenario.nodes} nodes)",
            total=_expected_tasks(scenario),
            status="starting nodes",
        )
        counts = {"ok": 0, "failed": 0, "found": 0}
        up: set[int] = set()
        expected = expected_discoveries(scenario, capabilities_wanted(scenario))

        def starting() -> str:
            # Until the workload begins, joins and discovery are the progress there is
            # (a thousand nodes take a while to start in fast mode).
            return f"{len(up)}/{scenario.nodes} nodes up, discovered {counts['found']}/{expected}"

        def on_event(event: dict[str, Any]) -> None:
            if event["type"] == "task":
                counts["ok" if event["ok"] else "failed"] += 1
                progress.update(
                    bar, advance=1, status=f"{counts['ok']} ok, {counts['failed']} failed"
                )
            elif event["type"] == "discovery":
                counts["found"] += 1
                if not counts["ok"] + counts["failed"]:
                    progress.update(bar, status=starting())
            elif event["type"] == "node_up":
                up.add(event["index"])
                if not counts["ok"] + counts["failed"]:
                    progress.update(bar, status=starting())

        log = run_scenario(scenario, progress=on_event, logs=out)
    summary = write_report(log, out)
    render_terminal(summary, Console())
    print(f"report: {out / 'report.html'}  data: {out / 'report.json'}")
    return _verdict(scenario, summary)


def run_scenario(scenario: Scenario, *, progress: Any = None, logs: Path | None = None) -> RunLog:
    if scenario.mode == "fast":
        from .fast import run_fast

        if logs is not None:
            # The nodes' warnings (py-libp2p's included) go to a file, as each real
            # mode process's do, not over the progress bar.
            handler = logging.FileHandler(logs / "fast.log")
            handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
            logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
            # py-libp2p's logger has no handler and does not propagate, so its
            # warnings would reach stderr through logging's last resort.
            logging.getLogger("libp2p").propagate = True
        return run_fast(scenario, progress=progress)
    return run_processes(scenario, scenario.mode, progress=progress, logs=logs)


def _verdict(scenario: Scenario, summary: dict[str, Any]) -> int:
    """Exit status 1 when the run missed a bound the scenario states."""
    tasks = summary.get("tasks") or {}
    failed = []
    w = scenario.workload
    if w.min_success is not None and (tasks.get("success_rate") or 0) < w.min_success:
        failed.append(f"success rate {tasks.get('success_rate')} < {w.min_success}")
    if w.min_accuracy is not None and (tasks.get("accuracy") or 0) < w.min_accuracy:
        failed.append(f"accuracy {tasks.get('accuracy')} < {w.min_accuracy}")
    for problem in failed:
        print(f"simnet: {scenario.name}: {problem}", file=sys.stderr)
    return 1 if failed else 0


def cmd_compare(args: argparse.Namespace) -> int:
    render_comparison(args.a, args.b, Console())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simnet", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a local swarm of simulated agents until Ctrl-C")
    up.add_argument("--nodes", type=int, default=20)
    up.add_argument("--seed", type=int, default=1)
    up.add_argument("--mode", choices=("real", "lan"), default="real")
    up.set_defaults(func=cmd_up)
    run = sub.add_parser("run", help="run a scenario to completion and write a report")
    run.add_argument("scenario", type=Path)
    run.add_argument("--mode", choices=MODES, help="override the scenario's mode")
    run.add_argument("--seed", type=int, help="override the scenario's seed")
    run.add_argument("--nodes", type=int, help="scale the scenario's groups to this many nodes")
    run.add_argument(
        "--ramp", type=float, help="override the scenario's ramp (seconds over which nodes join)"
    )
    run.add_argument("--out", type=Path, help="report directory")
    run.set_defaults(func=cmd_run)
    compare = sub.add_parser("compare", help="two runs' reports side by side")
    compare.add_argument("a", type=Path)
    compare.add_argument("b", type=Path)
    compare.set_defaults(func=cmd_compare)
    return parser


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    # SIGTERM (kill, timeout, a CI runner) takes the same way out as Ctrl-C, so the
    # worker processes are stopped and the working directories removed; under
    # trio.run this reaches trio's own SIGINT handling, which raises it safely.
    signal.raise_signal(signal.SIGINT)


def _unwrapping_interrupts(func: Any, args: argparse.Namespace) -> int:
    """``func(args)``; an interrupt that trio's nurseries wrapped in an exception
    group (fast mode) comes out as the KeyboardInterrupt it is."""
    try:
        return int(func(args))
    except BaseExceptionGroup as group:
        _, rest = group.split(KeyboardInterrupt)
        if rest is None:
            raise KeyboardInterrupt from group
        raise


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # A shell starts a background job (`simnet run ... &` in a script) with
        # SIGINT ignored, and neither Python nor trio then handles it; SIGTERM
        # takes SIGINT's way out, so it would be ignored too.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        code: int = _unwrapping_interrupts(args.func, args)
    except (ScenarioError, RuntimeError, OSError, json.JSONDecodeError) as exc:
        print(f"simnet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("simnet: interrupted; workers stopped", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
