"""Planning: turn a goal into a workflow by asking a ``planning.decompose`` peer.

The planner is an LLM served with ``protocol/planner.py``'s prompt (declare it as an agent:
``[[agents]] capability = "planning.decompose"``, with ``model`` and no ``system``
to get this prompt).  It answers with the workflow as JSON; the answer is
validated (JSON found in surrounding prose, steps checked as any workflow), and
when it has problems the planner is asked once more with the problems listed.
A plan that is still invalid is rejected with every problem.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Final

from llamanet.errors import NoCandidatesError, WorkflowError
from llamanet.protocol.planner import PLANNER_CAPABILITY

from .workflow import Workflow, parse_workflow

if TYPE_CHECKING:
    from llamanet.node.node import Node

REPAIR_ROUNDS: Final = 1

_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def planning_request(goal: str, capabilities: list[str], problems: list[str] | None) -> str:
    lines = [f"Goal: {goal}", "Capabilities available: " + ", ".join(sorted(capabilities))]
    if problems:
        lines.append("Your previous plan had these problems; answer with a corrected plan:")
        lines += [f"- {p}" for p in problems]
    return "\n".join(lines)


def extract_plan(output: Any) -> Any:
    """The workflow document in a planner's answer (a map, or JSON in text)."""
    if isinstance(output, dict):
        return output
    if isinstance(output, str):
        match = _JSON_OBJECT.search(output)
        if match:
            try:
                return json.loads(match.group(0))
            except ValueError as exc:
                raise WorkflowError([f"the plan is not valid JSON: {exc}"], "plan") from exc
    raise WorkflowError(["the planner's answer holds no JSON object"], "plan")


async def make_plan(
    node: Node, goal: str, *, timeout: float = 120.0
) -> tuple[Workflow, dict[str, Any]]:
    """A validated workflow for ``goal`` and its document; :class:`WorkflowError`
    when the planner cannot produce a valid one, :class:`NoCandidatesError` when
    no peer plans."""
    if not await node.find(PLANNER_CAPABILITY, limit=1):
        raise NoCandidatesError(
            PLANNER_CAPABILITY,
            f"no peer in the swarm offers {PLANNER_CAPABILITY!r}: declare a planner with "
            f'[[agents]] capability = "{PLANNER_CAPABILITY}" and a model, on any node',
        )
    capabilities = node.swarm_capabilities()
    problems: list[str] | None = None
    for _ in range(REPAIR_ROUNDS + 1):
        prompt = planning_request(goal, capabilities, problems)
        answer = await node.ask(PLANNER_CAPABILITY, prompt, timeout=timeout)
        try:
            document = extract_plan(answer.output)
            workflow = parse_workflow(document, source="plan")
            missing = sorted(workflow.capabilities() - set(capabilities))
            if missing:
                raise WorkflowError([f"no peer in the swarm offers {c!r}" for c in missing], "plan")
            return workflow, document
        except WorkflowError as exc:
            problems = exc.problems
    raise WorkflowError(problems or ["no plan"], "the planner's plan")
