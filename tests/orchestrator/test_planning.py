"""Planning: a goal becomes a validated workflow (repaired once if needed) and runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import llamanet
from llamanet.backends.builtin import BuiltinBackend
from llamanet.errors import NoCandidatesError, WorkflowError
from llamanet.orchestrator.planning import extract_plan, make_plan
from llamanet.orchestrator.runner import run_workflow
from llamanet.protocol.planner import PLANNER_PROMPT

from ..api.test_server import serving
from ..doubles import PlannerDouble
from ..nodes import start_node

PLAN = {
    "name": "sum-and-count",
    "output": "final",
    "steps": [
        {"id": "sum", "capability": "math.eval", "input": "2+3"},
        {"id": "count", "capability": "text.stats", "input": "{{input}}"},
        {"id": "final", "aggregate": "concatenate", "inputs": ["sum", "count"]},
    ],
}
BROKEN = {"steps": [{"id": "sum", "capability": "math.eval", "input": "{{nothing}}"}]}


def test_plans_are_found_in_prose() -> None:
    assert extract_plan(f"Here you go:\n```json\n{json.dumps(PLAN)}\n```") == PLAN
    assert extract_plan(PLAN) == PLAN
    with pytest.raises(WorkflowError, match="no JSON object"):
        extract_plan("I cannot help with that")
    assert "JSON" in PLANNER_PROMPT and "{{input}}" in PLANNER_PROMPT


async def test_a_goal_is_planned_repaired_and_run(tmp_path: Path) -> None:
    planner = PlannerDouble(json.dumps(BROKEN), "Sure! " + json.dumps(PLAN))
    async with (
        start_node(tmp_path / "w", backends=[BuiltinBackend()]) as worker,
        start_node(tmp_path / "p", backends=[planner], bootstrap=(worker.addrs()[0],)) as p,
        start_node(tmp_path / "r", bootstrap=(worker.addrs()[0], p.addrs()[0])) as requester,
    ):
        assert await requester.find("text.stats") and await requester.find("planning.decompose")
        workflow, document = await make_plan(requester, "count the words of this goal")
        assert document == PLAN and workflow.output == "final"
        first, second = planner.prompts
        assert "Goal: count the words of this goal" in str(first)
        assert "math.eval" in str(first) and "text.stats" in str(first)
        assert "refers to unknown step 'nothing'" in str(second)  # the repair round
        result = await run_workflow(requester, workflow, "count the words of this goal")
        assert result.output[0] == 5 and result.output[1]["words"] == 6

        # Through the daemon's API, as `llamanet solve` does.
        planner.answers = [PLAN]
        async with serving(requester), llamanet.connect(requester.config.home) as client:
            solved = await client.solve("three little words")
        assert solved["plan"] == PLAN and solved["output"][1]["words"] == 3

        # A planner that never gets it right is rejected with the problems.
        planner.answers = [BROKEN, {"steps": [{"id": "x", "capability": "vision.ocr"}]}]
        with pytest.raises(WorkflowError, match=r"no peer in the swarm offers 'vision\.ocr'"):
            await make_plan(requester, "read this image")


async def test_no_planner_is_a_clear_error(tmp_path: Path) -> None:
    async with start_node(tmp_path / "r") as requester:
        with pytest.raises(NoCandidatesError, match=r"planning\.decompose"):
            await make_plan(requester, "anything")


async def test_a_planner_agent_without_a_prompt_gets_the_built_in_one() -> None:
    from collections.abc import AsyncGenerator, Sequence

    from llamanet.backends.agents import AgentBackend, AgentSpec
    from llamanet.backends.base import Chunk, Completion, TaskRequest
    from llamanet.protocol.records import ModelInfo

    class ChatRecorder:
        """TEST DOUBLE: a chat model that records what it is sent."""

        name = "chat-recorder"
        sent: list[object] = []

        def capabilities(self) -> Sequence[str]:
            return ["llm.chat"]

        def models(self) -> Sequence[ModelInfo]:
            return [ModelInfo(name="planner-model")]

        async def execute(self, request: TaskRequest) -> AsyncGenerator[Chunk | Completion, None]:
            self.sent.append(request.input)
            yield Completion(output="{}")

    inner = ChatRecorder()
    agent = AgentBackend(
        [AgentSpec(capability="planning.decompose", model="planner-model")], [inner]
    )
    request = TaskRequest(
        id=b"t" * 16, capability="planning.decompose", requested="planning.decompose",
        input="Goal: x",
    )  # fmt: skip
    async for _ in agent.execute(request):
        pass
    (sent,) = inner.sent
    assert isinstance(sent, dict)
    assert sent["messages"][0] == {"role": "system", "content": PLANNER_PROMPT}
