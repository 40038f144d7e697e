"""Orchestration costs: what a workflow adds per step, and how fast a requester gets
past a worker that died.

* overhead per step: a 10-step workflow of ``text.echo`` steps (whose work takes
  microseconds) run by an in-process requester against ``llamanet node`` daemons,
  as a chain (each step waits for the previous) and as a fan-out (nine parallel
  steps and a concatenation); the time per step is nearly all orchestration;
* recovery: two daemons serve ``text.echo``; the requester prefers one, which is
  then killed with SIGKILL; the time of the next ask (which fails over to the
  other) is compared with a normal ask.

    python -m bench.orchestration [--rounds 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from llamanet.node.node import Node, open_node
from llamanet.orchestrator.runner import run_workflow
from llamanet.orchestrator.workflow import Workflow, parse_workflow
from llamanet.protocol.peer_ids import peer_id_from_text

from ._util import loopback_node_config, percentile, wait_for_api

STEPS = 10


def chain() -> Workflow:
    steps = [{"id": "s0", "capability": "text.echo", "input": "{{input}}"}]
    steps += [
        {"id": f"s{i}", "capability": "text.echo", "input": f"{{{{s{i - 1}}}}}"}
        for i in range(1, STEPS)
    ]
    return parse_workflow({"steps": steps})


def fan_out() -> Workflow:
    steps: list[dict[str, Any]] = [
        {"id": f"s{i}", "capability": "text.echo", "input": "{{input}}"} for i in range(STEPS - 1)
    ]
    steps.append({"id": "join", "aggregate": "concatenate", "inputs": [s["id"] for s in steps]})
    return parse_workflow({"steps": steps})


def start_daemon(base: Path, name: str) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "llamanet", "node", "--home", str(base / name),
         "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--log-level", "warning",
         "--bootstrap-file", str(base / "none.toml"), "--pow-difficulty", "8",
         "--skills", "text.echo"],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return proc, wait_for_api(base / name)["addrs"][0]


async def providers(node: Node, peer: str, timeout: float = 20.0) -> None:
    """Wait (bounded) until ``node`` holds ``peer``'s record offering text.echo."""
    for _ in range(int(timeout / 0.05)):
        if any(r.record.peer_text == peer for r in await node.find("text.echo")):
            return
        await trio.sleep(0.05)
    raise RuntimeError(f"{peer} never offered text.echo")


async def workflow_overhead(node: Node, rounds: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    for label, workflow in (("chain", chain()), ("fan_out", fan_out())):
        await run_workflow(node, workflow, "warm")  # connections, pooled streams
        per_step = []
        for _ in range(rounds):
            result = await run_workflow(node, workflow, "x", check=False)
            per_step.append(result.elapsed_ms / STEPS)
        figures[f"{label}_per_step_ms"] = round(statistics.median(per_step), 3)
        figures[f"{label}_total_ms"] = round(statistics.median(per_step) * STEPS, 3)
    return figures


async def recovery(base: Path, node: Node, rounds: int) -> dict[str, float]:
    backup, backup_addr = start_daemon(base, "backup")
    normal, after_kill = [], []
    try:
        await node.connect(backup_addr)
        for i in range(rounds):
            victim, victim_addr = start_daemon(base, f"victim{i}")
            try:
                victim_id = victim_addr.rsplit("/p2p/", 1)[1]
                await node.connect(victim_addr)
                await providers(node, victim_id)
                # The victim is the requester's first choice.
                node._rtt[peer_id_from_text(victim_id)].extend([0.01] * 8)
                for _ in range(5):
                    started = time.perf_counter()
                    answer = await node.ask("text.echo", "x", timeout=10)
                    normal.append((time.perf_counter() - started) * 1000)
                assert answer.peer == victim_id
                os.kill(victim.pid, signal.SIGKILL)
                victim.wait(timeout=10)
                started = time.perf_counter()
                answer = await node.ask("text.echo", "x", timeout=10)
                after_kill.append((time.perf_counter() - started) * 1000)
                assert answer.peer != victim_id
            finally:
                if victim.poll() is None:
                    victim.kill()
                    victim.wait(timeout=10)
    finally:
        backup.terminate()
        backup.wait(timeout=10)
    return {
        "normal_ask_p50_ms": round(statistics.median(normal), 3),
        "ask_after_kill_p50_ms": round(statistics.median(after_kill), 3),
        "ask_after_kill_max_ms": round(max(after_kill), 3),
        "ask_after_kill_p90_ms": round(percentile(after_kill, 90), 3),
    }


async def measure(base: Path, worker_addrs: list[str], rounds: int) -> dict[str, Any]:
    config = loopback_node_config(base / "requester", bootstrap=tuple(worker_addrs))
    async with open_node(config) as node:
        for addr in worker_addrs:
            await providers(node, addr.rsplit("/p2p/", 1)[1])
        overhead = await workflow_overhead(node, rounds)
        recovered = await recovery(base, node, max(3, rounds // 2))
    return {"steps": STEPS, "rounds": rounds, **overhead, **recovered}


def run(rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="llamanet-bench-") as tmp:
        base = Path(tmp)
        workers = [start_daemon(base, f"w{i}") for i in range(3)]
        try:
            return trio.run(measure, base, [addr for _, addr in workers], rounds)
        finally:
            for proc, _ in workers:
                proc.terminate()
                proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(max(2, min(args.rounds, 200)))
    if args.json:
        print(json.dumps(result))
        return
    print(f"{STEPS}-step workflow of text.echo, median of {result['rounds']} runs:")
    print(f"  chain    {result['chain_per_step_ms']:.2f} ms per step "
          f"({result['chain_total_ms']:.1f} ms in all)")  # fmt: skip
    print(f"  fan-out  {result['fan_out_per_step_ms']:.2f} ms per step "
          f"({result['fan_out_total_ms']:.1f} ms in all)")  # fmt: skip
    print(f"recovery from a killed worker: next ask p50 {result['ask_after_kill_p50_ms']:.1f} ms"
          f" (max {result['ask_after_kill_max_ms']:.1f} ms) vs "
          f"{result['normal_ask_p50_ms']:.2f} ms normally")  # fmt: skip


if __name__ == "__main__":
    main()
