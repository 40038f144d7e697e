"""LAN discovery figures on a virtual LAN of network namespaces (root only; all
multicast stays in the namespaces): time from a node's start until the other nodes
hold its verified record, and from a SIGKILL until they drop it.

    python -m bench.lan [--nodes 4] [--joins 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from llamanet.testing.lan import LanNodes
from llamanet.testing.netns import VirtualLan, netns_available


def measure(nodes: int, joins: int, base: Path) -> dict[str, Any]:
    with VirtualLan(nodes) as virtual:
        lan = LanNodes(virtual, base)
        for i in range(nodes):
            lan.start(i)
        ids = {}
        for i in range(nodes):
            lan.wait_for(i, "starting node", 0, 60)
            ids[i] = lan.peer_id(i)
        joiner, observers = nodes - 1, range(nodes - 1)
        held: list[float] = []
        for _ in range(joins):
            proc = lan.procs[joiner]
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
            time.sleep(1)
            lan.start(joiner)
            started = lan.wait_for(joiner, "starting node", time.time() - 1, 60)
            for i in observers:
                met = lan.wait_for(i, f"met {ids[joiner]} on the LAN", started, 30)
                held.append(met - started)
        killed_at = time.time()
        lan.procs[joiner].send_signal(signal.SIGKILL)
        dropped = [
            lan.wait_for(i, f"peer {ids[joiner]} left", killed_at, 60) - killed_at
            for i in observers
        ]
    return {
        "nodes": nodes,
        "start_to_record_held_s": held,
        "median_s": statistics.median(held),
        "max_s": max(held),
        "kill_to_dropped_s": dropped,
        "drop_median_s": statistics.median(dropped),
        "drop_max_s": max(dropped),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--joins", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    reason = netns_available()
    if reason is not None:
        result: dict[str, Any] = {"skipped": reason}
    else:
        with tempfile.TemporaryDirectory(prefix="llamanet-bench-") as tmp:
            result = measure(args.nodes, args.joins, Path(tmp))
    if args.json:
        print(json.dumps(result))
    elif "skipped" in result:
        print(f"skipped: {result['skipped']}")
    else:
        print(
            f"{args.nodes} nodes on a namespace LAN: a (re)started node's verified record is "
            f"held by the others after median {result['median_s']:.2f} s, max "
            f"{result['max_s']:.2f} s ({len(result['start_to_record_held_s'])} samples); a "
            f"SIGKILLed node is dropped after median {result['drop_median_s']:.1f} s, max "
            f"{result['drop_max_s']:.1f} s"
        )


if __name__ == "__main__":
    main()
