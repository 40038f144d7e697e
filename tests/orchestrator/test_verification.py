"""Verified execution: quorum of distinct peers, dissenters lose reputation."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from pathlib import Path

import multiaddr
import pytest

from llamanet.backends.base import Chunk, Completion, TaskRequest
from llamanet.errors import NoCandidatesError, VerificationError
from llamanet.orchestrator.verification import (
    Vote,
    answer_key,
    diverse,
    network_of,
    normalized_text,
    quorum,
)
from llamanet.protocol.records import ModelInfo
from llamanet.trust.reputation import NEUTRAL

from ..nodes import providers_of, start_node


class LyingMath:
    """TEST DOUBLE: serves math.eval and always answers ``answer``."""

    name = "lying-math"

    def __init__(self, answer: object) -> None:
        self.answer = answer

    def capabilities(self) -> Sequence[str]:
        return ("math.eval",)

    def models(self) -> Sequence[ModelInfo]:
        return ()

    async def execute(self, request: TaskRequest) -> AsyncGenerator[Chunk | Completion, None]:
        yield Completion(output=self.answer)


def test_answer_keys_and_quorum() -> None:
    assert normalized_text("  The Answer is 42. ") == normalized_text("the answer   is 42")
    assert answer_key("Hi!", "text", "sha256:a") == answer_key("hi", "text", "sha256:a")
    assert answer_key("hi", "text", "sha256:a") != answer_key("hi", "text", "sha256:b")
    assert answer_key({"b": 1, "a": 2}, "exact") == answer_key({"a": 2, "b": 1}, "exact")
    assert quorum([Vote("p1", "x"), Vote("p2", "x"), Vote("p3", "y")]) == (
        "x",
        ["p1", "p2"],
        ["p3"],
    )
    assert quorum([Vote("p1", "x"), Vote("p2", "y")]) is None  # a tie is no majority
    assert quorum([]) is None


def test_verifiers_come_from_different_networks_first() -> None:
    def addr(ip: str) -> bytes:
        return bytes(multiaddr.Multiaddr(f"/ip4/{ip}/tcp/4001").to_bytes())

    assert network_of([addr("127.0.0.1"), addr("8.8.4.4")]) == "8.8.4.0/24"  # routable first
    assert network_of([addr("10.1.2.3")]) == "10.1.2.0/24"
    nets = {b"a": "1.0.0.0/24", b"b": "1.0.0.0/24", b"c": "2.0.0.0/24", b"d": "3.0.0.0/24"}
    assert diverse([b"a", b"b", b"c", b"d"], nets, 3) == [b"a", b"c", b"d"]
    assert diverse([b"a", b"b"], nets, 2) == [b"a", b"b"]  # same network when it must


async def test_one_liar_of_three_is_outvoted_and_loses_reputation(tmp_path: Path) -> None:
    async with (
        start_node(tmp_path / "h1") as honest1,
        start_node(tmp_path / "h2", bootstrap=(honest1.addrs()[0],)) as honest2,
        start_node(tmp_path / "liar", backends=[LyingMath(41)], bootstrap=(honest1.addrs()[0],))
        as liar,
        start_node(
            tmp_path / "r", bootstrap=tuple(n.addrs()[0] for n in (honest1, honest2, liar))
        ) as requester,
    ):  # fmt: skip
        await providers_of(requester, "math.eval", 3)
        answer = await requester.ask("math.eval", "6*7", verify=3)
        assert answer.output == 42
        assert sorted(p for p, _ in answer.verified_by) == sorted(
            [honest1.peer_id_text, honest2.peer_id_text]
        )
        assert all(len(receipt.signature) == 64 for _, receipt in answer.verified_by)
        now = requester.clock()
        assert requester.reputation.score(liar.peer_id, "math.eval", now) < NEUTRAL
        assert requester.reputation.score(honest1.peer_id, "math.eval", now) > NEUTRAL
        # The node keeps serving: plain asks still work, and asking for more
        # verifiers than there are peers is a clear error.
        assert (await requester.ask("math.eval", "1+1", exclude=[liar.peer_id_text])).output == 2
        with pytest.raises(NoCandidatesError, match="needs 4 distinct peers"):
            await requester.ask("math.eval", "1+1", verify=4)


async def test_no_majority_is_a_typed_error(tmp_path: Path) -> None:
    async with (
        start_node(tmp_path / "a", backends=[LyingMath(1)]) as a,
        start_node(tmp_path / "b", backends=[LyingMath(2)], bootstrap=(a.addrs()[0],)) as b,
        start_node(tmp_path / "r", bootstrap=(a.addrs()[0], b.addrs()[0])) as requester,
    ):
        await providers_of(requester, "math.eval", 2)
        with pytest.raises(VerificationError, match="no answer had a majority"):
            await requester.ask("math.eval", "1+1", verify=2)
