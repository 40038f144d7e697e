"""Running a :class:`~llamanet.orchestrator.workflow.Workflow` on the swarm.

Every step starts as soon as the steps it depends on are done, so independent
steps run at once (on whichever peers rank best for each).  A capability step is
one :meth:`Node.ask`, which already fails over between candidates; ``retries``
asks again after that fails as a whole; ``verify = n`` asks ``n`` distinct peers
(:meth:`Node.ask` with ``verify``) and needs a majority of them to agree.
Aggregators run here, on the requester.
A step that fails ends the run and cancels the steps still going.  ``on_event``
sees every step start, finish or fail, for live progress.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from llamanet.errors import LlamanetError, WorkflowError, WorkflowFailed
from llamanet.protocol.budget import credits_for, tokens_used

from .market import AwardRule
from .verification import answer_key
from .workflow import Step, Workflow, render

if TYPE_CHECKING:
    from llamanet.node.node import Answer, Node


@dataclass(frozen=True, kw_only=True, slots=True)
class StepEvent:
    step: str
    state: str
    """``started``, ``done``, ``retrying`` or ``failed``."""
    elapsed_ms: float = 0.0
    peers: tuple[str, ...] = ()
    error: str = ""


@dataclass(kw_only=True, slots=True)
class StepReport:
    step: str
    capability: str
    output: Any = None
    peers: list[str] = field(default_factory=list)
    """Who ran it (several with ``verify``; none for an aggregator)."""
    started_ms: float = 0.0
    """Since the workflow started."""
    elapsed_ms: float = 0.0
    tokens: float = 0.0
    credits: float = 0.0
    """Tokens times each peer's advertised price per 1k tokens."""
    tries: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "capability": self.capability,
            "peers": self.peers,
            "started_ms": round(self.started_ms, 1),
            "elapsed_ms": round(self.elapsed_ms, 1),
            "tokens": self.tokens,
            "credits": round(self.credits, 6),
            "tries": self.tries,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkflowResult:
    output: Any
    steps: Mapping[str, StepReport]
    elapsed_ms: float


EventCallback = Callable[[StepEvent], Awaitable[None]]


async def check_swarm(node: Node, workflow: Workflow, *, timeout: float = 10.0) -> None:
    """:class:`WorkflowError` listing every capability no peer offers."""
    missing: list[str] = []

    async def look(capability: str) -> None:
        if not await node.find(capability, limit=1, timeout=timeout):
            missing.append(f"no peer in the swarm offers {capability!r}")

    async with trio.open_nursery() as nursery:
        for capability in sorted(workflow.capabilities()):
            nursery.start_soon(look, capability)
    if missing:
        raise WorkflowError(sorted(missing), workflow.name)


async def run_workflow(
    node: Node,
    workflow: Workflow,
    input: Any,
    *,
    on_event: EventCallback | None = None,
    check: bool = True,
) -> WorkflowResult:
    """Run ``workflow`` on ``input``; the output is its ``output`` step's.
    The run and its steps are recorded in ``node.activity``."""
    with node.activity.track("workflow", label=workflow.name):
        return await _run_workflow(node, workflow, input, on_event=on_event, check=check)


async def _run_workflow(
    node: Node,
    workflow: Workflow,
    input: Any,
    *,
    on_event: EventCallback | None,
    check: bool,
) -> WorkflowResult:
    if check:
        await check_swarm(node, workflow)
    began = trio.current_time()
    values: dict[str, Any] = {"input": input}
    reports: dict[str, StepReport] = {}
    done = {step.id: trio.Event() for step in workflow.steps}
    failure: list[WorkflowFailed] = []

    async def emit(event: StepEvent) -> None:
        if on_event is not None:
            await on_event(event)

    async def run_step(step: Step, nursery: trio.Nursery) -> None:
        for dependency in step.depends_on:
            await done[dependency].wait()
        report = StepReport(step=step.id, capability=step.capability or step.aggregate or "")
        report.started_ms = (trio.current_time() - began) * 1000
        reports[step.id] = report
        await emit(StepEvent(step=step.id, state="started"))
        started = trio.current_time()
        try:
            with node.activity.track("step", report.capability, label=step.id):
                values[step.id] = report.output = await _execute(node, step, values, report, emit)
        except (LlamanetError, KeyError) as exc:
            reason = str(exc)
            await emit(StepEvent(step=step.id, state="failed", error=reason))
            failure.append(WorkflowFailed(step.id, reason, reports))
            nursery.cancel_scope.cancel()
            return
        report.elapsed_ms = (trio.current_time() - started) * 1000
        await emit(
            StepEvent(
                step=step.id,
                state="done",
                elapsed_ms=report.elapsed_ms,
                peers=tuple(report.peers),
            )
        )
        done[step.id].set()

    async with trio.open_nursery() as nursery:
        for step in workflow.steps:
            nursery.start_soon(run_step, step, nursery)
    if failure:
        raise failure[0]
    return WorkflowResult(
        output=values[workflow.output],
        steps=reports,
        elapsed_ms=(trio.current_time() - began) * 1000,
    )


async def _execute(
    node: Node,
    step: Step,
    values: Mapping[str, Any],
    report: StepReport,
    emit: EventCallback,
) -> Any:
    if step.aggregate is not None:
        outputs = [values[name] for name in step.inputs]
        return await _aggregate(node, step, outputs, values["input"], report)
    assert step.capability is not None
    task_input = render(step.input, values)
    answer = await _ask_with_retries(node, step, task_input, report, emit)
    return answer.output


async def _ask_with_retries(
    node: Node,
    step: Step,
    task_input: Any,
    report: StepReport,
    emit: EventCallback,
) -> Answer:
    assert step.capability is not None
    last: LlamanetError | None = None
    for attempt in range(step.retries + 1):
        report.tries += 1
        try:
            if step.market is not None:
                rule = AwardRule(kind=step.market, price_cap=step.price_cap)
                answer, _ = await node.tender(
                    step.capability, task_input, rule=rule, timeout=step.timeout, summary=step.id
                )
            else:
                answer = await node.ask(
                    step.capability,
                    task_input,
                    model=step.model,
                    max_price=step.price_cap,
                    timeout=step.timeout,
                    verify=step.verify,
                )
        except LlamanetError as exc:
            last = exc
            if attempt < step.retries:
                await emit(StepEvent(step=step.id, state="retrying", error=str(exc)))
            continue
        _account(node, report, answer)
        return answer
    assert last is not None
    raise last


def _account(node: Node, report: StepReport, answer: Answer) -> None:
    report.peers.extend([p for p, _ in answer.verified_by] or [answer.peer])
    tokens = tokens_used(answer.usage)
    report.tokens += tokens
    report.credits += credits_for(tokens, node.price_of(answer.peer))


async def _aggregate(
    node: Node, step: Step, outputs: list[Any], task_input: Any, report: StepReport
) -> Any:
    if step.aggregate == "concatenate":
        if all(isinstance(o, str) for o in outputs):
            return "\n\n".join(outputs)
        return list(outputs)
    if step.aggregate == "majority":
        votes = Counter(_exact(o) for o in outputs)
        best = max(votes.values())
        # Ties go to the earliest input.
        return next(o for o in outputs if votes[_exact(o)] == best)
    assert step.aggregate == "best" and step.score is not None
    scores = []
    for output in outputs:
        answer = await node.ask(
            step.score, {"candidate": output, "input": task_input}, timeout=step.timeout
        )
        _account(node, report, answer)
        scores.append(_score(answer.output, step))
    return outputs[max(range(len(outputs)), key=lambda i: (scores[i], -i))]


def _score(value: Any, step: Step) -> float:
    if isinstance(value, dict):
        value = value.get("score")
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value.strip())
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise WorkflowError([f"{step.score} answered {value!r}, not a score"], step.id)
    return float(value)


def _exact(value: Any) -> str:
    return answer_key(value, "exact")
