"""Run every benchmark script and record the figures in bench/RESULTS.md.

    python -m bench                      (what `make bench` runs)
    python -m bench --only simnet_scale  (run one, and rewrite its section alone)

Each entry runs as ``python -m bench.<name> --json`` in its own process, so one
benchmark's sockets and memory never skew the next.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    "task_rtt",
    "discovery",
    "lan",
    "idle_rss",
    "llm_latency",
    "orchestration",
    "identity_cost",
    "simnet_scale",
]
# A thousand simulated nodes take a while on two cores.
TIMEOUTS = {"simnet_scale": 5400}
SIMNET_HEADING: Final = "## simnet (`bench/simnet_scale.py`)"


def run(name: str) -> dict[str, Any]:
    print(f"== bench.{name}", flush=True)
    out = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--json"],
        cwd=HERE.parent,
        capture_output=True,
        text=True,
        timeout=TIMEOUTS.get(name, 900),
        check=True,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    print(json.dumps(result, indent=2), flush=True)
    return result


def render(results: dict[str, dict[str, Any]]) -> str:
    rtt, disc, rss = results["task_rtt"], results["discovery"], results["idle_rss"]
    ours, floor, p2p = rtt["llamanet"], rtt["raw_tcp_msgpack"], rtt["raw_libp2p_stream"]
    lines = [
        "# Benchmark results",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        f"- python: {platform.python_version()}",
        "",
        "Regenerate with `make bench`. All traffic is on loopback.",
        "",
        "## Tasks between two processes (`bench/task_rtt.py`)",
        "",
        f"Tiny `text.echo` task on an established connection, receipt verified, "
        f"{rtt['tasks']} tasks; the floor is the same framing over raw trio TCP.",
        "",
        "| | p50 | p99 | throughput, 32 in flight |",
        "|---|---|---|---|",
        f"| llamanet | {ours['p50_ms']:.3f} ms | {ours['p99_ms']:.3f} ms"
        f" | {ours['per_s_32']:.0f}/s |",
        f"| bare py-libp2p stream, same framing | {p2p['p50_ms']:.3f} ms"
        f" | {p2p['p99_ms']:.3f} ms | {p2p['per_s_32']:.0f}/s |",
        f"| raw TCP + msgpack | {floor['p50_ms']:.3f} ms | {floor['p99_ms']:.3f} ms"
        f" | {floor['per_s_32']:.0f}/s |",
        "",
        f"`node.ask` (ranking + pinned peer) p50: {ours['ask_p50_ms']:.3f} ms.",
        "",
        "## Discovery (`bench/discovery.py`)",
        "",
        f"{disc['nodes']} `llamanet node` daemons, one process each; time from a new "
        f"daemon's process start until another node finds its capability: median "
        f"{disc['median_s']:.2f} s, max {disc['max_s']:.2f} s over "
        f"{len(disc['findable_after_start_s'])} joins (the new daemon itself is ready "
        f"after a median {disc['median_ready_s']:.2f} s, most of it Python start-up).",
        "",
        "## LAN discovery (`bench/lan.py`)",
        "",
        _lan_line(results["lan"]),
        "",
        "## Model calls through the network (`bench/llm_latency.py`)",
        "",
        _llm_line(results["llm_latency"]),
        "",
        "## Orchestration (`bench/orchestration.py`)",
        "",
        _orchestration_line(results["orchestration"]),
        "",
        "## Cost of an identity (`bench/identity_cost.py`)",
        "",
        _identity_line(results["identity_cost"]),
        "",
        SIMNET_HEADING,
        "",
        *_simnet_lines(results["simnet_scale"]),
        "",
        "## Idle daemon (`bench/idle_rss.py`)",
        "",
        f"RSS after {rss['settle_s']:.0f} s idle: {rss['rss_mib']:.1f} MiB.",
        "",
    ]
    return "\n".join(lines)


def _lan_line(lan: dict[str, Any]) -> str:
    if "skipped" in lan:
        return f"Skipped: {lan['skipped']}."
    return (
        f"{lan['nodes']} nodes in network namespaces on one bridge, mDNS only: a (re)started "
        f"node's verified record is held by every other node after median "
        f"{lan['median_s']:.2f} s, max {lan['max_s']:.2f} s "
        f"({len(lan['start_to_record_held_s'])} samples); a node killed with SIGKILL is "
        f"dropped after median {lan['drop_median_s']:.1f} s, max {lan['drop_max_s']:.1f} s."
    )


def _llm_line(llm: dict[str, Any]) -> str:
    d, n = llm["direct"], llm["network"]
    return (
        f"`llm.chat` streamed from the tiny random-weight Llama model on a llama-cpp-python "
        f"server, {llm['tokens']} tokens, {llm['rounds']} alternating rounds. Direct HTTP: "
        f"first token p50 {d['first_token_p50_ms']:.2f} ms, total p50 "
        f"{d['total_p50_ms']:.2f} ms. Through llamanet (requester node -> worker daemon -> "
        f"server): first token p50 {n['first_token_p50_ms']:.2f} ms, total p50 "
        f"{n['total_p50_ms']:.2f} ms. Added: {llm['added_first_token_ms']:.2f} ms to the "
        f"first token, {llm['added_total_ms']:.2f} ms to the whole answer."
    )


def _orchestration_line(o: dict[str, Any]) -> str:
    return (
        f"A {o['steps']}-step workflow of `text.echo` steps on three worker daemons: "
        f"{o['chain_per_step_ms']:.2f} ms per step as a chain, "
        f"{o['fan_out_per_step_ms']:.2f} ms per step as a fan-out (median of {o['rounds']} "
        f"runs; the steps' own work takes microseconds, so this is orchestration). After "
        f"the preferred worker is killed with SIGKILL, the next ask fails over in "
        f"{o['ask_after_kill_p50_ms']:.1f} ms p50 (max {o['ask_after_kill_max_ms']:.1f} ms), "
        f"against {o['normal_ask_p50_ms']:.2f} ms for a normal ask."
    )


def _identity_line(i: dict[str, Any]) -> str:
    return (
        f"Proof-of-work for one new identity at the default {i['difficulty']} bits: "
        f"mean {i['mean_s']:.2f} s of CPU (median {i['median_s']:.2f} s, p90 "
        f"{i['p90_s']:.2f} s; {i['identities']} identities, about {i['hashes_per_s']:,} "
        "hashes/s). Benchmarks and tests run their swarms at 8 bits."
    )


def _simnet_lines(sim: dict[str, Any]) -> list[str]:
    lines = [
        "Fast mode (one process, virtual time, in-memory transport), "
        "`simnet/scenarios/scale.toml` scaled (nodes join over its 60 s ramp); times "
        "simulated except wall time.",
        "",
        "| nodes | wall | peak RSS | every node finds every capability | after its own join, "
        "p50 / max | lookup p50 / p95 | hops mean / max | queries per lookup | tasks ok |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sim["swarms"]:
        d, lk, t = s["discovery"], s["lookups"], s["tasks"]
        converged = d.get("convergence_s")
        when = "not all" if converged is None else f"{converged:.2f} s"
        lines.append(
            f"| {s['nodes']} | {s['wall_s']:.0f} s | {s['peak_rss_mb']:.0f} MB "
            f"| {when} ({d.get('found')}/{d.get('expected')}) "
            f"| {_fmt(d.get('after_join_p50'))} / {_fmt(d.get('after_join_max'))} s "
            f"| {_fmt(lk.get('latency_p50'))} / {_fmt(lk.get('latency_p95'))} s "
            f"| {_fmt(lk.get('hops_mean'))} / {lk.get('hops_max')} "
            f"| {_fmt(lk.get('queries_mean'))} "
            f"| {_percent(t.get('success_rate'))} of {t.get('count')} |"
        )
    comparison = sim.get("comparison")
    if comparison:
        lines += [
            "",
            "The seed comparison (`simnet/scenarios/comparison.toml`; a simulation):",
            "",
            "| strategy | tasks | mean latency | accuracy | cost per task |",
            "|---|---|---|---|---|",
        ]
        for kind, f in comparison["strategies"].items():
            lines.append(
                f"| {kind} | {f.get('count')} | {_fmt(f.get('latency_mean'))} s "
                f"| {_fmt(f.get('accuracy'))} | {_fmt(f.get('cost_per_task'))} |"
            )
    return lines


def _percent(value: Any) -> str:
    return "—" if value is None else f"{value:.0%}"


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


def replace_section(document: str, heading: str, lines: list[str]) -> str:
    """``document`` with the section under ``heading`` (to the next ``## ``) replaced,
    or added at the end."""
    if heading not in document:
        return document.rstrip("\n") + "\n\n" + "\n".join([heading, "", *lines, ""])
    start = document.index(heading)
    end = document.find("\n## ", start + len(heading))
    if end < 0:
        return document[:start] + "\n".join([heading, "", *lines, ""])
    return document[:start] + "\n".join([heading, "", *lines, "", ""]) + document[end + 1 :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("simnet_scale",), help="run one benchmark")
    args = parser.parse_args()
    path = HERE / "RESULTS.md"
    if args.only == "simnet_scale":
        when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        # Other work on the machine slows a fast-mode run's wall clock (not its
        # simulated figures): say how busy the machine was.
        load = os.getloadavg()[0]
        lines = [
            f"Measured {when} by `python -m bench --only simnet_scale`"
            f" (1-minute load average at the start: {load:.1f} on {os.cpu_count()} CPUs).",
            "",
        ]
        lines += _simnet_lines(run("simnet_scale"))
        path.write_text(replace_section(path.read_text(), SIMNET_HEADING, lines))
    else:
        path.write_text(render({name: run(name) for name in BENCHMARKS}))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
