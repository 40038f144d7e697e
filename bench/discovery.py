"""Time from a node's start until another node of a 20-node swarm can find its
capability, on loopback, all nodes in this process.

    python -m bench.discovery [--nodes 20] [--joins 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

from llamanet.backends.base import Backend, Chunk, Completion, TaskRequest
from llamanet.backends.builtin import BuiltinBackend
from llamanet.node.node import Node, open_node
from llamanet.protocol.records import ModelInfo

from ._util import loopback_node_config


class ProbeSkill:
    """A capability only the joining node offers, so finding it proves the join."""

    name = "probe"

    def __init__(self, capability: str) -> None:
        self.capability = capability

    def capabilities(self) -> Sequence[str]:
        return (self.capability,)

    def models(self) -> Sequence[ModelInfo]:
        return ()

    async def execute(self, request: TaskRequest) -> AsyncGenerator[Chunk | Completion, None]:
        yield Completion(output=request.input)


async def measure(nodes: int, joins: int, base: Path) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        swarm: list[Node] = []
        started = time.perf_counter()
        for i in range(nodes):
            boot = (swarm[0].addrs()[0],) if swarm else ()
            node = await stack.enter_async_context(
                open_node(loopback_node_config(base / f"n{i}", bootstrap=boot))
            )
            swarm.append(node)
        for node in swarm:
            await node.first_publish.wait()
        swarm_start = time.perf_counter() - started
        observer = swarm[nodes // 2]
        times = []
        for j in range(joins):
            capability = f"bench.probe{j}"
            t0 = time.perf_counter()
            config = loopback_node_config(base / f"join{j}", bootstrap=(swarm[1].addrs()[0],))
            backends: list[Backend] = [BuiltinBackend(), ProbeSkill(capability)]
            joiner = await stack.enter_async_context(open_node(config, backends=backends))
            with trio.fail_after(60):
                for _attempt in range(100_000):  # bounded; fail_after ends it first
                    found = await observer.find(capability)
                    if any(r.peer == joiner.peer_id for r in found):
                        break
                    await trio.sleep(0.05)
            times.append(time.perf_counter() - t0)
        return {
            "nodes": nodes,
            "swarm_start_s": swarm_start,
            "findable_after_start_s": times,
            "median_s": statistics.median(times),
            "max_s": max(times),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--joins", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llamanet-bench-") as tmp:
        result = trio.run(measure, args.nodes, args.joins, Path(tmp))
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.nodes}-node swarm on loopback started in {result['swarm_start_s']:.2f} s")
    print(
        f"new node's capability findable from another node after: median "
        f"{result['median_s']:.3f} s, max {result['max_s']:.3f} s "
        f"({len(result['findable_after_start_s'])} joins)"
    )


if __name__ == "__main__":
    main()
