"""Simulated agents: a llamanet backend whose speed and accuracy come from a
scenario profile, answering questions whose right answer is known, so a run
measures success and accuracy instead of assuming them.

Questions are small structured puzzles in three domains (``sim.code``,
``sim.math``, ``sim.reason``); ``sim.composite`` asks one of each at once.  The
agent works out the true answer (standing in for a model that understands the
question) and returns it with its profile's accuracy; otherwise a plausible wrong
answer.  Whether a given agent gets a given question right is drawn from the
run's seed, the agent and the question, so a seed fixes every answer.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncGenerator, Sequence
from typing import Any, Final

import trio

from llamanet.backends.base import Chunk, Completion, TaskRequest
from llamanet.errors import SkillInputError
from llamanet.protocol.records import ModelInfo

from .scenario import DOMAINS, Group, Profile

NAMES: Final = ("Ada", "Bo", "Cy", "Di", "Ed", "Flo")
SLOW_FACTOR: Final = 10.0


def make_question(seed: int, number: int, capability: str) -> dict[str, Any]:
    """Question ``number`` of a run, for ``capability`` (``sim.<domain>`` or
    ``sim.composite``)."""
    rng = random.Random(f"question:{seed}:{number}:{capability}")
    if capability == "sim.composite":
        parts = [make_question(seed, number, f"sim.{d}") for d in DOMAINS]
        return {"id": number, "domain": "composite", "parts": parts}
    domain = capability.removeprefix("sim.")
    if domain == "math":
        a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(0, 999)
        return {"id": number, "domain": domain, "q": f"What is {a}*{b}+{c}?", "args": [a, b, c]}
    if domain == "code":
        word, n = rng.choice(["ab", "xyz", "llama", "swarm"]), rng.randint(1, 40)
        return {
            "id": number,
            "domain": domain,
            "q": f"What does len({word!r} * {n}) return in Python?",
            "args": [word, n],
        }
    if domain == "reason":
        order = rng.sample(NAMES, 3)
        return {
            "id": number,
            "domain": domain,
            "q": f"{order[0]} is older than {order[1]}, who is older than {order[2]}. "
            "Who is the youngest?",
            "args": order,
        }
    raise ValueError(f"no questions for {capability!r}")


def true_answer(question: dict[str, Any]) -> Any:
    domain, args = question["domain"], question.get("args")
    if domain == "composite":
        return [true_answer(part) for part in question["parts"]]
    if domain == "math":
        a, b, c = args  # type: ignore[misc]
        return a * b + c
    if domain == "code":
        word, n = args  # type: ignore[misc]
        return len(word) * n
    if domain == "reason":
        return args[2]  # type: ignore[index]
    raise SkillInputError(f"unknown question domain {domain!r}")


def is_correct(question: dict[str, Any], output: Any) -> bool:
    return bool(output == true_answer(question))


def _wrong(question: dict[str, Any], right: Any) -> Any:
    if question["domain"] == "reason":
        return question["args"][0]
    return right + 1


class SimulatedAgent:
    """TEST DOUBLE for a model (simnet's simulated agent): serves ``group``'s
    capabilities with ``profile``'s speed and accuracy, and its behaviour."""

    name = "simulated-agent"

    def __init__(self, *, seed: int, index: int, group: Group, profile: Profile) -> None:
        self.seed = seed
        self.index = index
        self.group = group
        self.profile = profile
        self.served = 0
        self._slots = trio.Semaphore(profile.concurrency) if profile.concurrency else None

    def capabilities(self) -> Sequence[str]:
        return self.group.capabilities

    def models(self) -> Sequence[ModelInfo]:
        return ()

    def _draw(self, question_id: int, part: int, what: str) -> float:
        digest = hashlib.sha256(
            f"{what}:{self.seed}:{self.index}:{question_id}:{part}".encode()
        ).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def _answer(self, question: dict[str, Any], part: int, misbehaves: bool) -> Any:
        right = true_answer(question)
        if misbehaves and self.group.behaviour == "wrong":
            return _wrong(question, right)
        accuracy = (
            self.profile.accuracy
            if question["domain"] in self.profile.domains
            else self.profile.other_accuracy
        )
        if self._draw(question["id"], part, "right") < accuracy:
            return right
        return _wrong(question, right)

    async def execute(self, request: TaskRequest) -> AsyncGenerator[Chunk | Completion, None]:
        question = request.input
        if not isinstance(question, dict) or "domain" not in question or "id" not in question:
            raise SkillInputError("a simnet question is a map with 'id' and 'domain'")
        parts = question["parts"] if question["domain"] == "composite" else [question]
        misbehaves = (
            self.group.behaviour != "honest"
            and self._draw(question["id"], -1, "behaves") < self.group.behaviour_rate
        )
        if misbehaves and self.group.behaviour == "drop":
            await trio.sleep_forever()
        tokens = self.profile.answer_tokens * len(parts)
        jitter = 0.9 + 0.2 * self._draw(question["id"], -2, "jitter")
        ttft = self.profile.ttft_ms / 1000 * jitter
        rest = tokens / self.profile.tokens_per_s * jitter
        if misbehaves and self.group.behaviour == "slow":
            ttft, rest = ttft * SLOW_FACTOR, rest * SLOW_FACTOR
        self.served += 1
        if self._slots is not None:
            await self._slots.acquire()
        try:
            await trio.sleep(ttft)
            yield Chunk("…")
            await trio.sleep(rest)
        finally:
            if self._slots is not None:
                self._slots.release()
        answers = [self._answer(p, i, misbehaves) for i, p in enumerate(parts)]
        # The answer alone, so that verifiers' outputs compare equal; the time the
        # agent spent travels in ``usage`` for the overhead breakdown.
        yield Completion(
            output=answers if question["domain"] == "composite" else answers[0],
            usage={
                "prompt_tokens": 20 * len(parts),
                "completion_tokens": tokens,
                "exec_ms": round((ttft + rest) * 1000, 3),
            },
        )
