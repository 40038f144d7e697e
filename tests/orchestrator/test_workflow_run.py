"""Workflows run on real nodes on loopback."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import trio

from llamanet.backends.builtin import BuiltinBackend
from llamanet.errors import WorkflowError, WorkflowFailed
from llamanet.orchestrator.runner import StepEvent, run_workflow
from llamanet.orchestrator.workflow import parse_workflow

from ..doubles import DelayedAnswerDouble
from ..nodes import providers_of, start_node
from .test_workflow import FOUR_STEPS

BRANCH_SECONDS = 1.0


async def test_parallel_branches_on_different_peers_then_aggregation(tmp_path: Path) -> None:
    left = DelayedAnswerDouble("L", BRANCH_SECONDS, capability="test.left")
    right = DelayedAnswerDouble("R", BRANCH_SECONDS, capability="test.right")
    flow = tomllib.loads(FOUR_STEPS)
    del flow["steps"][2]["model"]  # the test double serves no model
    flow["steps"][2]["verify"] = 1
    workflow = parse_workflow(flow)
    async with (
        start_node(tmp_path / "x", backends=[left, BuiltinBackend()]) as x,
        start_node(tmp_path / "y", backends=[right], bootstrap=(x.addrs()[0],)) as y,
        start_node(tmp_path / "r", bootstrap=(x.addrs()[0], y.addrs()[0])) as requester,
    ):
        events: list[StepEvent] = []

        async def on_event(event: StepEvent) -> None:
            events.append(event)

        started = trio.current_time()
        result = await run_workflow(requester, workflow, "go", on_event=on_event)
        took = trio.current_time() - started

        assert result.output == "L\n\nR"  # the aggregation saw both branches
        steps = result.steps
        assert steps["left"].peers == [x.peer_id_text]
        assert steps["right"].peers == [y.peer_id_text]
        # The branches overlapped: the whole run took one branch plus overhead.
        assert BRANCH_SECONDS <= took < 2 * BRANCH_SECONDS
        assert abs(steps["left"].started_ms - steps["right"].started_ms) < 300
        assert [e.state for e in events if e.step == "join"] == ["started", "done"]
        assert events[0] == StepEvent(step="start", state="started")


async def test_missing_capabilities_are_listed_before_anything_runs(tmp_path: Path) -> None:
    async with start_node(tmp_path / "r") as requester:
        with pytest.raises(WorkflowError) as info:
            await run_workflow(requester, parse_workflow(tomllib.loads(FOUR_STEPS)), "go")
        # A node does not count itself: its own text.echo is not the swarm's.
        assert info.value.problems == [
            "no peer in the swarm offers 'test.left'",
            "no peer in the swarm offers 'test.right'",
            "no peer in the swarm offers 'text.echo'",
        ]


async def test_verification_asks_distinct_peers_and_a_failure_stops_the_run(
    tmp_path: Path,
) -> None:
    verified = parse_workflow(
        {
            "steps": [
                {"id": "sum", "capability": "math.eval", "input": "{{input}}", "verify": 2},
                {"id": "both", "aggregate": "majority", "inputs": ["sum", "sum"]},
            ]
        }
    )
    broken = parse_workflow(
        {
            "steps": [
                {"id": "bad", "capability": "math.eval", "input": "1 +", "retries": 0},
                {"id": "later", "capability": "text.echo", "input": "{{bad}}"},
            ]
        }
    )
    async with (
        start_node(tmp_path / "a") as a,
        start_node(tmp_path / "b", bootstrap=(a.addrs()[0],)) as b,
        start_node(tmp_path / "r", bootstrap=(a.addrs()[0], b.addrs()[0])) as requester,
    ):
        await providers_of(requester, "math.eval", 2)
        result = await run_workflow(requester, verified, "6*7")
        assert result.output == 42
        assert sorted(result.steps["sum"].peers) == sorted([a.peer_id_text, b.peer_id_text])
        with pytest.raises(WorkflowFailed, match="step 'bad' failed") as info:
            await run_workflow(requester, broken, None)
        assert "later" not in info.value.reports
