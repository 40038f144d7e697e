"""Workflows: a DAG of steps, from TOML or JSON, checked before anything runs.

::

    name = "review"
    output = "summary"              # the step whose output is the answer (default: the last)

    [[steps]]
    id = "facts"
    capability = "llm.chat"
    model = { family = "llama" }    # optional model constraints
    input = { messages = [{ role = "user", content = "List facts about {{input}}" }] }
    retries = 1                     # further candidates after a failure (default 1)
    market = "cheapest"             # optional: award by bids ("cheapest" or "fastest")
    price_cap = 2.0                 # optional: credits per 1k tokens
    verify = 1                      # distinct peers that must agree (default 1)

    [[steps]]
    id = "summary"
    aggregate = "concatenate"       # or "majority", "best" (with score = "<capability>")
    inputs = ["facts", "other"]

An input template is any value; in strings ``{{input}}``, ``{{input.key}}``,
``{{<step>}}`` and ``{{<step>.key}}`` are replaced by the task input and earlier
steps' outputs.  A string that is exactly one reference takes the referenced value
whole (a map stays a map).  A step depends on every step it references, on its
``inputs`` and on ``after``.  Problems are collected, not stopped at: the error
lists them all.  This module is pure: no network, no clock.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from llamanet.errors import WorkflowError
from llamanet.protocol.capabilities import is_valid_capability

AGGREGATORS: Final = ("concatenate", "majority", "best")
MAX_STEPS: Final = 256
_REFERENCE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z0-9_]+)*)\s*\}\}")
_STEP_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_STEP_KEYS: Final = frozenset(
    {"id", "capability", "model", "input", "retries", "verify", "after", "aggregate",
     "inputs", "score", "timeout", "market", "price_cap"}
)  # fmt: skip


@dataclass(frozen=True, kw_only=True, slots=True)
class Step:
    id: str
    capability: str | None = None
    """What runs the step; ``None`` for a built-in aggregator."""
    aggregate: str | None = None
    inputs: tuple[str, ...] = ()
    """Steps an aggregator combines."""
    score: str | None = None
    """For ``aggregate = "best"``: the capability that scores each candidate."""
    model: Mapping[str, Any] | None = None
    input: Any = "{{input}}"
    retries: int = 1
    verify: int = 1
    timeout: float = 60.0
    after: tuple[str, ...] = ()
    market: str | None = None
    """Award the step by bids (``cheapest`` or ``fastest``) instead of ranking."""
    price_cap: float | None = None
    depends_on: frozenset[str] = frozenset()
    """Every step this one waits for (references, inputs and after)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Workflow:
    name: str
    steps: tuple[Step, ...]
    output: str
    order: tuple[str, ...] = field(default=())
    """The steps in an order that respects their dependencies."""

    def step(self, step_id: str) -> Step:
        return next(s for s in self.steps if s.id == step_id)

    def capabilities(self) -> set[str]:
        """Capabilities the swarm must offer for this workflow to run."""
        caps = {s.capability for s in self.steps if s.capability}
        caps |= {s.score for s in self.steps if s.score}
        return caps


def load_workflow(path: Path) -> Workflow:
    """Read a workflow from a ``.toml`` or ``.json`` file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkflowError([f"cannot read {path}: {exc.strerror}"], str(path)) from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise WorkflowError([f"not valid {path.suffix[1:] or 'TOML'}: {exc}"], str(path)) from exc
    return parse_workflow(data, source=str(path))


def parse_workflow(data: Any, *, source: str = "workflow") -> Workflow:
    """Check ``data`` (a decoded TOML/JSON document) and build the workflow."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise WorkflowError(["a workflow is a table with [[steps]]"], source)
    unknown = set(data) - {"name", "output", "steps", "description"}
    if unknown:
        problems.append(f"unknown top-level key(s): {', '.join(sorted(unknown))}")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise WorkflowError([*problems, "a workflow needs at least one [[steps]] entry"], source)
    if len(raw_steps) > MAX_STEPS:
        problems.append(f"at most {MAX_STEPS} steps")
    steps: list[Step] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_steps, 1):
        step = _parse_step(index, raw, problems)
        if step is None:
            continue
        if step.id in seen:
            problems.append(f"step {step.id!r} is defined twice")
        seen.add(step.id)
        steps.append(step)
    for step in steps:
        for ref in sorted(step.depends_on):
            if ref not in seen:
                problems.append(f"step {step.id!r} refers to unknown step {ref!r}")
            elif ref == step.id:
                problems.append(f"step {step.id!r} refers to itself")
    output = data.get("output", steps[-1].id if steps else "")
    if not isinstance(output, str) or output not in seen:
        problems.append(f"output {output!r} is not a step")
    order = _order(steps, problems) if not problems else ()
    if problems:
        raise WorkflowError(problems, source)
    name = data.get("name", "workflow")
    return Workflow(name=str(name), steps=tuple(steps), output=output, order=order)


def _parse_step(index: int, raw: Any, problems: list[str]) -> Step | None:
    if not isinstance(raw, dict):
        problems.append(f"step {index} is not a table")
        return None
    step_id = raw.get("id")
    if not isinstance(step_id, str) or not _STEP_ID.match(step_id) or step_id == "input":
        problems.append(
            f"step {index}: id must be a name like draft_1 (not 'input'), got {step_id!r}"
        )
        return None
    where = f"step {step_id!r}"
    unknown = set(raw) - _STEP_KEYS
    if unknown:
        problems.append(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    capability, aggregate = raw.get("capability"), raw.get("aggregate")
    if (capability is None) == (aggregate is None):
        problems.append(f"{where}: give exactly one of capability or aggregate")
    if capability is not None and not (
        isinstance(capability, str) and is_valid_capability(capability)
    ):
        problems.append(f"{where}: {capability!r} is not a capability name")
    if aggregate is not None and aggregate not in AGGREGATORS:
        problems.append(f"{where}: aggregate must be one of {', '.join(AGGREGATORS)}")
    inputs = _names(raw.get("inputs", []), f"{where}: inputs", problems)
    after = _names(raw.get("after", []), f"{where}: after", problems)
    if aggregate is not None and not inputs:
        problems.append(f"{where}: an aggregator needs inputs = [step, ...]")
    score = raw.get("score")
    if aggregate == "best" and not (isinstance(score, str) and is_valid_capability(score)):
        problems.append(f"{where}: aggregate = 'best' needs score = '<capability>'")
    model = raw.get("model")
    if model is not None and not isinstance(model, dict):
        problems.append(f"{where}: model must be a table of constraints")
    retries, verify = raw.get("retries", 1), raw.get("verify", 1)
    if not _is_int(retries) or not 0 <= retries <= 10:
        problems.append(f"{where}: retries must be an integer 0..10")
    if not _is_int(verify) or not 1 <= verify <= 9:
        problems.append(f"{where}: verify must be an integer 1..9")
    timeout = raw.get("timeout", 60.0)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout <= 3600:
        problems.append(f"{where}: timeout must be seconds in (0, 3600]")
    market, price_cap = raw.get("market"), raw.get("price_cap")
    if market is not None and market not in ("cheapest", "fastest"):
        problems.append(f"{where}: market must be 'cheapest' or 'fastest'")
    if market is not None and (aggregate is not None or verify != 1):
        problems.append(f"{where}: market goes with a capability step and verify = 1")
    if price_cap is not None and not (isinstance(price_cap, int | float) and price_cap >= 0):
        problems.append(f"{where}: price_cap must be a number >= 0")
    template = raw.get("input", "{{input}}")
    refs = references(template) - {"input"}
    return Step(
        id=step_id,
        capability=capability if isinstance(capability, str) else None,
        aggregate=aggregate if isinstance(aggregate, str) else None,
        inputs=inputs,
        score=score if isinstance(score, str) else None,
        model=model if isinstance(model, dict) else None,
        input=template,
        retries=retries if _is_int(retries) else 1,
        verify=verify if _is_int(verify) else 1,
        timeout=float(timeout) if isinstance(timeout, int | float) else 60.0,
        after=after,
        market=market if isinstance(market, str) else None,
        price_cap=float(price_cap) if isinstance(price_cap, int | float) else None,
        depends_on=frozenset(refs | set(inputs) | set(after)),
    )


def _names(value: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"{where} must be a list of step ids")
        return ()
    return tuple(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _order(steps: Sequence[Step], problems: list[str]) -> tuple[str, ...]:
    """Kahn's algorithm; a cycle is a problem that names its steps."""
    waiting = {s.id: set(s.depends_on) for s in steps}
    order: list[str] = []
    ready = [s.id for s in steps if not waiting[s.id]]
    while ready:
        current = ready.pop(0)
        order.append(current)
        for step in steps:
            deps = waiting[step.id]
            if current in deps:
                deps.discard(current)
                if not deps:
                    ready.append(step.id)
    stuck = [s.id for s in steps if s.id not in order]
    if stuck:
        problems.append(f"steps {', '.join(stuck)} depend on each other in a cycle")
    return tuple(order)


def references(template: Any) -> set[str]:
    """Step ids (and ``input``) a template refers to."""
    found: set[str] = set()
    for text in _strings(template):
        found.update(m.group(1) for m in _REFERENCE.finditer(text))
    return found


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def render(template: Any, values: Mapping[str, Any]) -> Any:
    """``template`` with references replaced from ``values`` (``input`` and step
    outputs).  A string that is one reference becomes the value itself."""
    if isinstance(template, dict):
        return {k: render(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [render(v, values) for v in template]
    if not isinstance(template, str):
        return template
    whole = _REFERENCE.fullmatch(template.strip())
    if whole:
        return _lookup(whole, values)
    return _REFERENCE.sub(lambda m: _as_text(_lookup(m, values)), template)


def _lookup(match: re.Match[str], values: Mapping[str, Any]) -> Any:
    value = values[match.group(1)]
    for key in filter(None, match.group(2).split(".")):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise WorkflowError([f"{match.group(0)}: no {key!r} in {_as_text(value)[:80]}"])
    return value


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)
