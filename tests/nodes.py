"""Real llamanet nodes on loopback for tests: real libp2p hosts, real sockets,
mDNS off (tests run in the root network namespace)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from llamanet.backends.base import Backend
from llamanet.node.node import Node, open_node
from llamanet.testing import loopback_config


@asynccontextmanager
async def start_node(
    home: Path, *, backends: Sequence[Backend] | None = None, **overrides: Any
) -> AsyncIterator[Node]:
    async with open_node(loopback_config(home, **overrides), backends=backends) as node:
        with trio.fail_after(30):
            await node.publisher.first_publish.wait()
        yield node


@asynccontextmanager
async def start_swarm(
    base: Path,
    count: int,
    *,
    chain: bool = False,
    per_node: dict[int, dict[str, Any]] | None = None,
) -> AsyncIterator[list[Node]]:
    """``count`` nodes; node 0 is the bootstrap peer of all the others, or with
    ``chain`` node i bootstraps from node i-1 only."""
    per_node = per_node or {}
    nodes: list[Node] = []
    async with AsyncExitStack() as stack:
        for i in range(count):
            options = dict(per_node.get(i, {}))
            if nodes:
                seed = nodes[i - 1] if chain else nodes[0]
                options.setdefault("bootstrap", (seed.addrs()[0],))
            nodes.append(await stack.enter_async_context(start_node(base / f"n{i}", **options)))
        yield nodes


async def eventually(
    predicate: Callable[[], bool], *, timeout: float = 5.0, step: float = 0.02
) -> None:
    """Wait until ``predicate()`` holds, checking every ``step`` seconds; fail after
    ``timeout``.  For state another task changes without signalling us."""
    with trio.fail_after(timeout):
        for _ in range(int(timeout / step) + 1):
            if predicate():
                return
            await trio.sleep(step)
        raise AssertionError("condition never held")


async def providers_of(node: Node, capability: str, count: int, *, timeout: float = 10.0) -> None:
    """Wait until ``node`` finds ``count`` verified providers of ``capability``
    (announcements are paced, so the last may take a moment); fail after ``timeout``."""
    found = 0
    for _ in range(int(timeout / 0.1)):
        found = len(await node.find(capability))
        if found >= count:
            assert found == count, f"found {found} providers of {capability}, expected {count}"
            return
        await trio.sleep(0.1)
    raise AssertionError(
        f"found {found} providers of {capability}, expected {count} "
        f"(records refused: {dict(node.rejected_records)}; held: {len(node.registry)})"
    )
