"""simnet's figures: swarms in fast mode at several sizes, and the seed comparison.

Each size runs ``simnet/scenarios/scale.toml`` scaled to that many nodes (joins
spread over the scenario's ramp, a connection budget per node); the comparison
runs ``simnet/scenarios/comparison.toml``.  Times are simulated seconds except
``wall_s``; memory is the run's peak RSS.

    python -m bench.simnet_scale [--nodes 100,1000] [--no-comparison] [--json]

`make bench` runs 100 nodes; a thousand take much longer (see RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from simnet.__main__ import scaled
from simnet.fast import run_fast
from simnet.metrics import summarize
from simnet.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "simnet" / "scenarios"


def _rounded(value: Any, digits: int = 3) -> Any:
    return round(value, digits) if isinstance(value, float) else value


def swarm(nodes: int) -> dict[str, Any]:
    scenario = scaled(load_scenario(SCENARIOS / "scale.toml"), nodes)
    log = run_fast(scenario)
    summary = summarize(log)
    run, disc, look, tasks = (
        summary["run"],
        summary["discovery"],
        summary["lookups"],
        summary["tasks"],
    )
    return {
        "nodes": scenario.nodes,
        "connection_budget": scenario.network.connection_budget,
        "latency_ms": scenario.network.latency_ms,
        "wall_s": _rounded(log.wall_time, 1),
        "peak_rss_mb": _rounded(log.peak_rss_mb, 0),
        "discovery": {k: _rounded(v) for k, v in disc.items() if not isinstance(v, dict | list)},
        "lookups": {k: _rounded(v) for k, v in look.items()},
        "tasks": {
            k: _rounded(tasks[k])
            for k in ("count", "success_rate", "latency_p50", "latency_p95", "messages_per_task")
            if k in tasks
        },
        "run": {k: _rounded(v) for k, v in run.items() if not isinstance(v, dict | list)},
    }


def comparison() -> dict[str, Any]:
    log = run_fast(load_scenario(SCENARIOS / "comparison.toml"))
    kinds = summarize(log)["tasks"].get("by_kind", {})
    return {
        "wall_s": _rounded(log.wall_time, 1),
        "strategies": {
            kind: {k: _rounded(v) for k, v in figures.items()}
            for kind, figures in kinds.items()
            if kind != "task"
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="100", help="comma-separated swarm sizes")
    parser.add_argument("--no-comparison", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = [max(4, min(int(n), 2000)) for n in args.nodes.split(",") if n.strip()]
    result: dict[str, Any] = {"swarms": [swarm(n) for n in sizes]}
    if not args.no_comparison:
        result["comparison"] = comparison()
    if args.json:
        print(json.dumps(result))
        return
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
