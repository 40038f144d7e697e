"""Delegation: a worker asking the swarm for sub-tasks of the task it runs.

A backend gets a :class:`Delegation` as ``request.delegate``.  Each sub-task it
asks for goes out with ``parent`` = the task's id, ``depth`` one more than the
task's (a worker refuses a task deeper than its swarm's maximum with
``depth_exceeded``), a deadline no later than the task's, and a ``budget``: what
is left of the task's budget (or ``share`` of it).  What each answer used (tokens,
and credits at the answering peer's price) is taken off, and once a budget runs
out further sub-tasks are refused with :class:`BudgetExceededError`.  A sub-task
that fails fails with its own code, so ``depth_exceeded`` from three hops down
reaches the original requester as ``depth_exceeded``.  Sub-tasks run inside the
task's own trio task: cancelling the task cancels them, all the way down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llamanet.errors import (
    BackendError,
    BudgetExceededError,
    DelegatedTaskError,
    LlamanetError,
    TaskError,
)
from llamanet.protocol.budget import BUDGET_KEYS, credits_for, tokens_used

if TYPE_CHECKING:
    from llamanet.backends.base import TaskRequest
    from llamanet.node.node import Answer, Node


@dataclass(slots=True)
class Child:
    capability: str
    peer: str = ""
    budget: dict[str, float] = field(default_factory=dict)
    spent: dict[str, float] = field(default_factory=dict)
    state: str = "running"


class Delegation:
    """Asks the swarm on behalf of one task (``request``)."""

    def __init__(self, node: Node, request: TaskRequest) -> None:
        self._node = node
        self._request = request
        budget = request.budget or {}
        self.remaining: dict[str, float] = {
            k: float(budget[k]) for k in BUDGET_KEYS if isinstance(budget.get(k), int | float)
        }
        self.children: list[Child] = []

    async def __call__(
        self, capability: str, input: Any, *, share: float = 1.0, **options: Any
    ) -> Answer:
        """Run a sub-task; ``options`` as :meth:`Node.ask`."""
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        spent_out = [k for k, v in self.remaining.items() if v <= 0]
        if spent_out:
            raise BudgetExceededError(
                f"the task's {' and '.join(spent_out)} budget is used up; no more sub-tasks"
            )
        budget = {k: v * share for k, v in self.remaining.items()}
        child = Child(capability=capability, budget=budget)
        self.children.append(child)
        timeout = self._request.deadline - self._node.clock()
        if timeout <= 0:
            child.state = "deadline_exceeded"
            raise BackendError("no time left for sub-tasks")
        try:
            answer = await self._node.ask(
                capability,
                input,
                parent=self._request.id,
                depth=self._request.depth + 1,
                budget=budget or None,
                timeout=timeout,
                **options,
            )
        except TaskError as exc:
            child.state = exc.code
            raise DelegatedTaskError(exc) from exc
        except BackendError:
            child.state = "failed"
            raise
        except LlamanetError as exc:  # no candidates, unreachable, timed out
            child.state = "failed"
            raise BackendError(f"sub-task {capability}: {exc}") from exc
        child.peer, child.state = answer.peer, "ok"
        tokens = tokens_used(answer.usage)
        child.spent = {
            "tokens": tokens,
            "credits": credits_for(tokens, self._node.price_of(answer.peer)),
        }
        for key in self.remaining:
            self.remaining[key] -= child.spent[key]
        return answer

    def tree(self) -> list[dict[str, Any]]:
        """The sub-tasks asked so far, for inspection."""
        return [
            {"capability": c.capability, "peer": c.peer, "state": c.state,
             "budget": c.budget, "spent": c.spent}
            for c in self.children
        ]  # fmt: skip
