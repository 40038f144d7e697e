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
