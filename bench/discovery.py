"""Time from a node's start until another node of a 20-node swarm finds its
capability.  Every node is a real ``llamanet node`` daemon in its own process on
loopback; the swarm's nodes serve ``text.echo`` and ``text.stats``, each joining
node serves ``math.eval``.

    python -m bench.discovery [--nodes 20] [--joins 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from llamanet.api.client import ApiClient
from llamanet.errors import DaemonError
from llamanet.trust.keys import load_or_create_identity

from ._util import wait_for_api


def spawn(
    home: Path, skills: str, bootstrap: str | None, stack: ExitStack
) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "llamanet", "node", "--home", str(home),
        "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--skills", skills,
        "--log-level", "warning", "--bootstrap-file", str(home.parent / "none.toml"),
        "--pow-difficulty", "8",
    ]  # fmt: skip
    if bootstrap:
        args += ["--bootstrap", bootstrap]
    proc = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    stack.callback(_stop, proc)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def find_peer(observer: ApiClient, capability: str, peer_id: str) -> bool:
    try:
        found = observer.get("/v1/find", cap=capability, timeout=5)
    except DaemonError:
        return False
    return any(row["peer_id"] == peer_id for row in found)


def measure(nodes: int, joins: int, base: Path) -> dict[str, Any]:
    with ExitStack() as stack:
        started = time.perf_counter()
        spawn(base / "n0", "text.echo,text.stats", None, stack)
        seed = wait_for_api(base / "n0")["addrs"][0]
        for i in range(1, nodes):
            spawn(base / f"n{i}", "text.echo,text.stats", seed, stack)
        for i in range(1, nodes):
            wait_for_api(base / f"n{i}", timeout=120)
        swarm_start = time.perf_counter() - started
        observer = stack.enter_context(ApiClient(base / f"n{nodes // 2}", timeout=30))
        entry = wait_for_api(base / "n1")["addrs"][0]
        times, api_ready = [], []
        for j in range(joins):
            home = base / f"join{j}"
            peer_id = load_or_create_identity(home).peer_id_text
            t0 = time.perf_counter()
            spawn(home, "math.eval", entry, stack)
            wait_for_api(home, timeout=60)
            api_ready.append(time.perf_counter() - t0)
            deadline = t0 + 120
            while not find_peer(observer, "math.eval", peer_id):
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"join {j} never became findable")
                time.sleep(0.05)
            times.append(time.perf_counter() - t0)
    return {
        "nodes": nodes,
        "swarm_start_s": swarm_start,
        "findable_after_start_s": times,
        "daemon_ready_s": api_ready,
        "median_s": statistics.median(times),
        "max_s": max(times),
        "median_ready_s": statistics.median(api_ready),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--joins", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llamanet-bench-") as tmp:
        result = measure(args.nodes, args.joins, Path(tmp))
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.nodes} daemons on loopback started in {result['swarm_start_s']:.1f} s")
    print(
        f"a new daemon's capability findable from another node after: median "
        f"{result['median_s']:.2f} s, max {result['max_s']:.2f} s over "
        f"{len(result['findable_after_start_s'])} joins (counted from process start; the "
        f"daemon itself is up after a median {result['median_ready_s']:.2f} s)"
    )


if __name__ == "__main__":
    main()
