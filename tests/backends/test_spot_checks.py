"""Model attestation by spot checks: three peers really run the tiny model, a
fourth claims its digest but answers with something else."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from llamanet.backends.base import Chunk, Completion, TaskRequest
from llamanet.backends.gguf_model import GgufBackend
from llamanet.backends.model_files import DigestCache
from llamanet.orchestrator.attestation import canary_prompt, next_digest_to_check
from llamanet.protocol.records import ModelInfo
from llamanet.trust.reputation import NEUTRAL

from ..nodes import eventually, providers_of, start_node

pytestmark = pytest.mark.llm


class Impostor:
    """TEST DOUBLE: claims a real model's entry (digest included) but answers
    with a cheaper model's text."""

    name = "impostor"

    def __init__(self, claimed: ModelInfo) -> None:
        self.claimed = claimed

    def capabilities(self) -> Sequence[str]:
        return ("llm.chat", "llm.generate")

    def models(self) -> Sequence[ModelInfo]:
        return (self.claimed,)

    async def execute(self, request: TaskRequest) -> AsyncGenerator[Chunk | Completion, None]:
        yield Chunk("Sure, here is a sentence.")
        yield Completion(output="Sure, here is a sentence.", model_digest=self.claimed.digest)


def test_canaries_are_the_same_for_everyone_and_change_per_round() -> None:
    assert canary_prompt("sha256:aa", 1) == canary_prompt("sha256:aa", 1)
    assert len({canary_prompt("sha256:aa", r) for r in range(20)}) > 1


def test_the_schedule_checks_the_digest_checked_longest_ago_with_three_claimants() -> None:
    claims = [(b"a", "sha256:x"), (b"b", "sha256:x"), (b"c", "sha256:x"), (b"c", "sha256:x")]
    claims += [(b"a", "sha256:y"), (b"b", "sha256:y"), (b"d", "sha256:y")]
    claims += [(b"a", "sha256:z"), (b"b", "sha256:z")]  # two cannot outvote a liar
    assert next_digest_to_check(claims, {}) == "sha256:x"
    assert next_digest_to_check(claims, {"sha256:x": 5.0}) == "sha256:y"
    assert next_digest_to_check(claims, {"sha256:x": 5.0, "sha256:y": 9.0}) == "sha256:x"
    assert next_digest_to_check(claims[-2:], {}) is None


async def test_a_peer_faking_a_model_digest_is_flagged(tiny_gguf: Path, tmp_path: Path) -> None:
    cache = DigestCache(tmp_path / "digests.json")
    async with AsyncExitStack() as stack:
        honest_backends = []
        for _ in range(3):
            backend = GgufBackend(tiny_gguf, digest_cache=cache)
            await backend.open()
            stack.push_async_callback(backend.aclose)
            honest_backends.append(backend)
        model = honest_backends[0].models()[0]
        first = await stack.enter_async_context(
            start_node(tmp_path / "h0", backends=[honest_backends[0]], warmup=False)
        )
        seeds = (first.addrs()[0],)
        others = [
            await stack.enter_async_context(
                start_node(tmp_path / f"h{i}", backends=[b], warmup=False, bootstrap=seeds)
            )
            for i, b in enumerate(honest_backends[1:], 1)
        ]
        impostor = await stack.enter_async_context(
            start_node(tmp_path / "fake", backends=[Impostor(model)], warmup=False, bootstrap=seeds)
        )
        checker = await stack.enter_async_context(
            start_node(
                tmp_path / "checker",
                bootstrap=tuple(n.addrs()[0] for n in (first, *others, impostor)),
                spot_check_interval=0.5,
            )
        )
        # The check asks the claimants it holds records of: fetch them directly.
        for node in (first, *others, impostor):
            await checker.fetch_record(node.peer_id)
        await providers_of(checker, "llm.generate", 4)

        # The schedule finds the digest four peers claim and checks it by itself.
        await eventually(lambda: any(c.flagged for c in checker.spot_checks), timeout=30)
        scheduled = next(c for c in checker.spot_checks if c.flagged)
        assert scheduled.digest == model.digest
        assert scheduled.flagged == [impostor.peer_id_text]

        check = await checker.spot_check(model.digest, round_number=7)
        assert check.flagged == [impostor.peer_id_text]
        assert sorted(check.agreeing) == sorted(n.peer_id_text for n in (first, *others))
        assert check.majority and check.majority != check.answers[impostor.peer_id_text]
        now = checker.clock()
        assert checker.reputation.score(impostor.peer_id, "llm.generate", now) < NEUTRAL
