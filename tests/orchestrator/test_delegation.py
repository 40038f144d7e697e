"""Delegation across real nodes on loopback: depth limits, budgets, the task tree
and cancellation of a whole tree."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from llamanet.errors import TaskFailedError, TaskRejectedError
from llamanet.node.node import Node
from llamanet.node.worker import Worker
from llamanet.protocol.messages import TaskOffer

from ..doubles import RelaySkillDouble
from ..nodes import eventually, start_node


@asynccontextmanager
async def relay_chain(
    base: Path, count: int, **options: Any
) -> AsyncIterator[tuple[Node, list[Node], list[RelaySkillDouble]]]:
    """A requester and ``count`` relay workers that all know each other."""
    doubles = [RelaySkillDouble() for _ in range(count)]
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            start_node(base / "w0", backends=[doubles[0]], **options)
        )
        workers = [first]
        for i in range(1, count):
            workers.append(
                await stack.enter_async_context(
                    start_node(
                        base / f"w{i}",
                        backends=[doubles[i]],
                        bootstrap=tuple(w.addrs()[0] for w in workers),
                        **options,
                    )
                )
            )
        requester = await stack.enter_async_context(
            start_node(base / "r", bootstrap=tuple(w.addrs()[0] for w in workers))
        )
        for node in [requester, *workers]:
            wanted = count - (node in workers)
            for _ in range(200):  # 10 s
                if len(await node.find("test.relay")) >= wanted:
                    break
                await trio.sleep(0.05)
        yield requester, workers, doubles


async def test_depth_grows_per_hop_and_the_limit_is_enforced(tmp_path: Path) -> None:
    async with relay_chain(tmp_path, 3, max_depth=2) as (requester, _, doubles):
        answer = await requester.ask(
            "test.relay", {"hops": 2, "cost": 30}, budget={"tokens": 100}, timeout=20
        )
        assert answer.output == [0, [1, [2]]]
        # The budget went down every hop (nothing was spent on the way down).
        budgets = sorted(((r.depth, r.budget) for d in doubles for r in d.seen), key=str)
        assert budgets == [(0, {"tokens": 100}), (1, {"tokens": 100.0}), (2, {"tokens": 100.0})]
        for d in doubles:
            d.seen.clear()
        # Three hops below the requester is one more than the swarm allows.
        with pytest.raises(TaskFailedError) as info:
            await requester.ask("test.relay", {"hops": 3}, timeout=20)
        assert info.value.code == "depth_exceeded"
        seen = [r for d in doubles for r in d.seen]
        assert max(r.depth for r in seen) == 2
        # Every sub-task names its parent.
        assert all(r.parent is not None for r in seen if r.depth > 0)
        ids = {r.id for r in seen}
        assert all(r.parent in ids for r in seen if r.depth > 0)


async def test_a_budget_is_passed_down_and_enforced(tmp_path: Path) -> None:
    async with relay_chain(tmp_path, 3) as (requester, _, doubles):
        with pytest.raises(TaskFailedError, match="budget is used up") as info:
            await requester.ask(
                "test.relay",
                {"hops": 1, "fanout": 4, "cost": 40},
                budget={"tokens": 100},
                timeout=20,
            )
        assert info.value.code == "too_large"
        leaves = [r for d in doubles for r in d.seen if r.depth == 1]
        # Each sub-task was given what was left: 100, then 60, then 20; the
        # fourth was refused before it was sent.
        budgets = sorted((r.budget or {}).get("tokens", 0) for r in leaves)
        assert budgets == [20.0, 60.0, 100.0]
        # A worker refuses a task whose budget is used up.
        with pytest.raises(TaskRejectedError) as refused:
            await requester.ask("test.relay", {"hops": 0}, budget={"tokens": 0}, timeout=5)
        assert refused.value.code == "too_large"


async def test_cancelling_the_root_cancels_the_whole_tree(tmp_path: Path) -> None:
    async with relay_chain(tmp_path, 3) as (requester, workers, doubles):
        async with trio.open_nursery() as nursery:

            async def ask() -> None:
                await requester.ask("test.relay", {"hops": 2, "sleep": 60}, timeout=60)

            nursery.start_soon(ask)
            await eventually(lambda: any(d.leaf_started.is_set() for d in doubles), timeout=10)
            # The tree can be inspected while it runs.
            running = [t for w in workers for t in w.running_tasks()]
            assert sorted(t["depth"] for t in running) == [0, 1, 2]
            root = next(t for t in running if t["depth"] == 0)
            assert root["subtasks"][0]["state"] == "running"
            nursery.cancel_scope.cancel()
        await eventually(lambda: sum(d.leaf_cancelled for d in doubles) == 1, timeout=10)
        await eventually(lambda: all(not w.running_tasks() for w in workers), timeout=10)


def test_model_tasks_are_capped_to_their_token_budget() -> None:
    from llamanet.backends.builtin import BuiltinBackend

    class ChatDouble(BuiltinBackend):
        def capabilities(self) -> list[str]:
            return ["llm.chat"]

    worker = Worker([ChatDouble()])
    offer = TaskOffer(
        id=b"t" * 16,
        cap="llm.chat",
        input={"messages": []},
        deadline=1,
        params={"max_tokens": 500},
        budget={"tokens": 120},
    )
    admitted = worker.admit(offer, b"p")
    assert not isinstance(admitted, Exception) and hasattr(admitted, "request")
    assert admitted.request.params["max_tokens"] == 120
