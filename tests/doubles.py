"""Test doubles, named as such.  Real backends are the built-in skills; these stand
in for a slow, crashing or verbose model where a test needs one."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

import trio

from llamanet.backends.base import Chunk, Completion, TaskRequest
from llamanet.protocol.records import ModelInfo


class SlowSkillDouble:
    """TEST DOUBLE: ``test.slow`` sleeps ``params["seconds"]`` (default 10) after a
    first chunk, then answers ``"done"``.  Counts starts, cancellations, finishes."""

    name = "slow-double"

    def __init__(self) -> None:
        self.started = 0
        self.cancelled = 0
        self.finished = 0
        self.first_chunk_sent = trio.Event()

    def capabilities(self) -> Sequence[str]:
        return ("test.slow",)

    def models(self) -> Sequence[ModelInfo]:
        return ()

    async def execute(self, request: TaskRequest) -> AsyncGenerator[Chunk | Completion, None]:
        self.started += 1
        try:
            yield Chunk("working")
            self.first_chunk_sent.set()
            await trio.sleep(float(request.params.get("seconds", 10)))
        except trio.Cancelled:
            self.cancelled += 1
            raise
        self.finished += 1
        yield Completion(output="done", usage={"seconds": 1})


class CrashingSkillDouble:
    """TEST DOUBLE: ``test.crash`` raises a bug-like exception; ``test.big`` returns
    an output larger than any frame limit used in tests; ``test.noresult`` ends
    without a completion."""

    name = "crash-double"

    def capabilities(self) -> Sequence[str]:
        return ("test.crash", "test.big", "test.noresult")

    def models(self) -> Sequence[ModelInfo]:
        return ()

    async def execute(self, request: TaskRequest) -> AsyncGenerator[Chunk | Completion, None]:
        if request.capability == "test.crash":
            raise RuntimeError("simulated bug in a backend")
        if request.capability == "test.big":
            yield Completion(output="x" * (2 * 1024 * 1024))
            return
        yield Chunk("partial")


class DelayedAnswerDouble:
    """TEST DOUBLE: ``test.delay`` (or ``capability``) waits ``delay`` seconds before
    any output, then answers ``label`` (one chunk, then the result).  Counts starts
    and cancellations."""

    name = "delay-double"

    def __init__(self, label: str, delay: float, capability: str = "test.delay") -> None:
        self.label = label
        self.delay = delay
        self.capability = capability
        self.started = 0
        self.cancelled = 0

    def capabilities(self) -> Sequence[str]:
        return (self.capability,)

    def models(self) -> Sequence[ModelInfo]:
        return ()

    async def execute(self, request: TaskRequest) -> AsyncGenerator[Chunk | Completion, None]:
        self.started += 1
        try:
            await trio.sleep(self.delay)
        except trio.Cancelled:
            self.cancelled += 1
            raise
        yield Chunk(self.label)
        yield Completion(output=self.label)


class RelaySkillDouble:
    """TEST DOUBLE: ``test.relay`` delegates ``{"hops": n}`` down a chain of peers
    until ``hops`` is 0, and answers each hop's depth, outermost first.  With
    ``fanout`` it asks that many sub-tasks one after another; each leaf "uses"
    ``cost`` tokens, or what its budget allows; ``sleep`` makes the leaf wait."""

    name = "relay-double"

    def __init__(self) -> None:
        self.leaf_started = trio.Event()
        self.leaf_cancelled = 0
        self.seen: list[TaskRequest] = []

    def capabilities(self) -> Sequence[str]:
        return ("test.relay",)

    def models(self) -> Sequence[ModelInfo]:
        return ()

    async def execute(self, request: TaskRequest) -> AsyncGenerator[Chunk | Completion, None]:
        self.seen.append(request)
        spec = request.input if isinstance(request.input, dict) else {}
        hops = int(spec.get("hops", 0))
        if hops == 0:
            self.leaf_started.set()
            try:
                await trio.sleep(float(spec.get("sleep", 0)))
            except trio.Cancelled:
                self.leaf_cancelled += 1
                raise
            allowed = (request.budget or {}).get("tokens", spec.get("cost", 40))
            used = min(float(spec.get("cost", 40)), float(allowed))
            yield Completion(output=[request.depth], usage={"completion_tokens": used})
            return
        outputs: list[object] = [request.depth]
        child = {**spec, "hops": hops - 1, "fanout": 1}
        for _ in range(int(spec.get("fanout", 1))):
            answer = await request.delegate("test.relay", child)
            outputs.append(answer.output)
        yield Completion(output=outputs, usage={})


class PlannerDouble:
    """TEST DOUBLE: ``planning.decompose`` answering scripted plans in turn (an LLM
    with random weights cannot plan); records the prompts it was given."""

    name = "planner-double"

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.prompts: list[object] = []

    def capabilities(self) -> Sequence[str]:
        return ("planning.decompose",)

    def models(self) -> Sequence[ModelInfo]:
        return ()

    async def execute(self, request: TaskRequest) -> AsyncGenerator[Chunk | Completion, None]:
        self.prompts.append(request.input)
        yield Completion(output=self.answers.pop(0) if self.answers else "no idea")


class LyingMathDouble:
    """TEST DOUBLE: serves ``math.eval`` and always answers ``answer``."""

    name = "lying-math"

    def __init__(self, answer: object) -> None:
        self.answer = answer

    def capabilities(self) -> Sequence[str]:
        return ("math.eval",)

    def models(self) -> Sequence[ModelInfo]:
        return ()

    async def execute(self, request: TaskRequest) -> AsyncGenerator[Chunk | Completion, None]:
        yield Completion(output=self.answer)
