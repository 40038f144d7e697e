"""Verified execution: quorum of distinct peers, dissenters lose reputation.  (One
liar of three is a row of tests/trust/test_attack_matrix.py.)"""

from __future__ import annotations

from pathlib import Path

import multiaddr
import pytest

from llamanet.errors import VerificationError
from llamanet.orchestrator.verification import (
    Vote,
    answer_key,
    diverse,
    network_of,
    normalized_text,
    quorum,
)

from ..doubles import LyingMathDouble
from ..nodes import providers_of, start_node


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


async def test_no_majority_is_a_typed_error(tmp_path: Path) -> None:
    async with (
        start_node(tmp_path / "a", backends=[LyingMathDouble(1)]) as a,
        start_node(tmp_path / "b", backends=[LyingMathDouble(2)], bootstrap=(a.addrs()[0],)) as b,
        start_node(tmp_path / "r", bootstrap=(a.addrs()[0], b.addrs()[0])) as requester,
    ):
        await providers_of(requester, "math.eval", 2)
        with pytest.raises(VerificationError, match="no answer had a majority"):
            await requester.ask("math.eval", "1+1", verify=2)


async def test_knowing_fewer_providers_than_verifiers_looks_for_more(tmp_path: Path) -> None:
    async with (
        start_node(tmp_path / "a") as a,
        start_node(tmp_path / "b", bootstrap=(a.addrs()[0],)) as b,
        start_node(tmp_path / "c", bootstrap=(a.addrs()[0],)) as c,
        start_node(tmp_path / "r", bootstrap=(a.addrs()[0], b.addrs()[0])) as requester,
    ):
        await providers_of(requester, "math.eval", 3)
        # As a node that met one provider early on: it knows it, and only it.
        for forgotten in (b, c):
            requester.registry.remove(forgotten.peer_id)
        answer = await requester.ask("math.eval", "2*(3+4)", verify=3)
        assert answer.output == 14
        assert len({answer.peer, *(p for p, _ in answer.verified_by)}) == 3
