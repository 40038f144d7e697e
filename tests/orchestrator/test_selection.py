"""Ranking candidate peers: a pure function of verified records."""

from __future__ import annotations

import random
from dataclasses import replace
from functools import cache
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from llamanet.orchestrator.selection import Candidate, PeerObservations, rank_candidates
from llamanet.protocol.capabilities import capability_matches
from llamanet.protocol.pow import solve_pow
from llamanet.protocol.records import CapabilityRecord, ModelInfo, SignedRecord, seal_record
from llamanet.trust.keys import Identity

from ..protocol.helpers import NOW, POLICY

IDENTITIES = [Identity(bytes([0x40 + i]) * 32) for i in range(8)]
A, B, C, D = IDENTITIES[:4]


@cache
def _nonce(identity: Identity) -> bytes:
    nonce = solve_pow(identity.peer_id, POLICY.pow_difficulty)
    assert nonce is not None
    return nonce


def signed(
    identity: Identity,
    caps: tuple[str, ...] = ("text.echo",),
    *,
    load: float = 0.0,
    p50: float | None = None,
    **overrides: Any,
) -> SignedRecord:
    record = CapabilityRecord(
        peer=identity.peer_id,
        seq=1,
        iat=int(NOW),
        exp=int(NOW) + 3600,
        caps=caps,
        load=load,
        perf={} if p50 is None else {"p50_ms": p50},
        pow=_nonce(identity),
        **overrides,
    )
    return SignedRecord(record, seal_record(record, identity))


def peers(candidates: list[Candidate]) -> list[bytes]:
    return [c.record.peer for c in candidates]


def test_nothing_to_rank() -> None:
    assert rank_candidates([], "text.echo") == []


def test_records_that_do_not_match_are_dropped() -> None:
    ranked = rank_candidates(
        [signed(A, ("math.eval",)), signed(B, ("text.echo",)), signed(C, ("textual.echo",))],
        "text",
    )
    assert peers(ranked) == [B.peer_id]


def test_the_candidate_names_the_capability_that_serves_the_request() -> None:
    (candidate,) = rank_candidates([signed(A, ("text.stats", "text.echo", "math.eval"))], "text")
    assert candidate.capability == "text.echo"
    (exact,) = rank_candidates([signed(A, ("text", "text.echo"))], "text")
    assert exact.capability == "text"


def test_an_exact_match_beats_a_more_specific_one_even_when_busier_and_slower() -> None:
    exact = signed(A, ("text",), load=1.0, p50=60_000.0)
    specific = signed(B, ("text.echo",), load=0.0, p50=1.0)
    ranked = rank_candidates([specific, exact], "text")
    assert peers(ranked) == [A.peer_id, B.peer_id]
    assert ranked[0].score < ranked[1].score


def test_a_less_specific_match_beats_a_deeper_one() -> None:
    shallow = signed(A, ("code.python",), load=0.9)
    deep = signed(B, ("code.python.django",), load=0.0)
    assert peers(rank_candidates([deep, shallow], "code")) == [A.peer_id, B.peer_id]


def test_lower_load_wins() -> None:
    ranked = rank_candidates(
        [signed(A, load=0.75), signed(B, load=0.0), signed(C, load=0.25)], "text.echo"
    )
    assert peers(ranked) == [B.peer_id, C.peer_id, A.peer_id]


def test_lower_p50_wins() -> None:
    ranked = rank_candidates(
        [signed(A, p50=900.0), signed(B, p50=15.0), signed(C, p50=120.0)], "text.echo"
    )
    assert peers(ranked) == [B.peer_id, C.peer_id, A.peer_id]


def test_an_unmeasured_peer_counts_as_fast() -> None:
    ranked = rank_candidates([signed(A, p50=50.0), signed(B)], "text.echo")
    assert peers(ranked) == [B.peer_id, A.peer_id]


def test_the_specialist_wins_a_tie() -> None:
    generalist = signed(A, ("text.echo", "text.stats", "math.eval"))
    specialist = signed(B, ("text.echo",))
    assert peers(rank_candidates([generalist, specialist], "text.echo")) == [
        B.peer_id,
        A.peer_id,
    ]


def test_remaining_ties_are_broken_by_peer_id() -> None:
    records = [signed(identity) for identity in IDENTITIES]
    expected = sorted(i.peer_id for i in IDENTITIES)
    assert peers(rank_candidates(records, "text.echo")) == expected
    assert peers(rank_candidates(reversed(records), "text.echo")) == expected


def test_excluded_peers_are_skipped() -> None:
    records = [signed(A), signed(B, load=0.5), signed(C)]
    ranked = rank_candidates(records, "text.echo", exclude=[A.peer_id, C.peer_id])
    assert peers(ranked) == [B.peer_id]


def test_accepts_any_iterable() -> None:
    ranked = rank_candidates((signed(i) for i in (A, B)), "text", exclude=iter([B.peer_id]))
    assert peers(ranked) == [A.peer_id]


# --- model constraints, speed, price, reputation, exploration --------------------------------

QWEN = ModelInfo(name="qwen2.5:7b", digest="sha256:aa", ctx=32768, family="qwen2")
LLAMA = ModelInfo(name="llama3.2:3b", digest="sha256:bb", ctx=8192, family="llama")


def test_model_constraints_filter_and_name_the_model() -> None:
    records = [
        signed(A, ("llm.chat",), models=(QWEN,)),
        signed(B, ("llm.chat",), models=(LLAMA,)),
        signed(C, ("llm.chat",)),
    ]
    ranked = rank_candidates(records, "llm.chat", model={"family": "llama"})
    assert peers(ranked) == [B.peer_id] and ranked[0].model == LLAMA
    assert peers(rank_candidates(records, "llm.chat", model={"min_ctx": 16000})) == [A.peer_id]
    assert rank_candidates(records, "llm.chat", model={"digest": "sha256:cc"}) == []


def test_measured_model_speed_counts() -> None:
    slow = signed(A, ("llm.chat",), models=(replace(QWEN, tokens_per_s=5.0, ttft_ms=900.0),))
    fast = signed(B, ("llm.chat",), models=(replace(QWEN, tokens_per_s=80.0, ttft_ms=40.0),))
    assert peers(rank_candidates([slow, fast], "llm.chat")) == [B.peer_id, A.peer_id]
    # Each peer is judged by its fastest model that fits.
    both = signed(C, ("llm.chat",), models=(replace(LLAMA, tokens_per_s=1.0), QWEN))
    assert rank_candidates([both], "llm.chat")[0].model == QWEN


def test_own_round_trips_beat_advertised_figures() -> None:
    claims_fast, claims_slow = signed(A, p50=1.0), signed(B, p50=500.0)
    assert peers(rank_candidates([claims_fast, claims_slow], "text.echo")) == [
        A.peer_id,
        B.peer_id,
    ]
    seen = PeerObservations(rtt_ms={A.peer_id: 900.0, B.peer_id: 20.0})
    assert peers(rank_candidates([claims_fast, claims_slow], "text.echo", seen=seen)) == [
        B.peer_id,
        A.peer_id,
    ]


def test_price_breaks_ties_and_a_cap_filters() -> None:
    dear, cheap = signed(A, price=5.0), signed(B, price=0.5)
    assert peers(rank_candidates([dear, cheap], "text.echo")) == [B.peer_id, A.peer_id]
    assert peers(rank_candidates([dear, cheap], "text.echo", max_price=1.0)) == [B.peer_id]


def test_reputation_scales_the_expected_cost() -> None:
    records = [signed(A, p50=10.0), signed(B, p50=10.0), signed(C, p50=10.0)]
    seen = PeerObservations(reputation={A.peer_id: 0.0, C.peer_id: 1.0})
    assert peers(rank_candidates(records, "text.echo", seen=seen)) == [
        C.peer_id,
        B.peer_id,  # neutral prior
        A.peer_id,
    ]


def test_exploration_sometimes_tries_a_peer_never_used() -> None:
    records = [signed(A, p50=1.0), signed(B, p50=50.0), signed(C, p50=80.0)]
    seen = PeerObservations(rtt_ms={A.peer_id: 1.0, B.peer_id: 50.0})
    rng = random.Random(7)
    firsts = [
        peers(rank_candidates(records, "text.echo", seen=seen, explore=0.2, rng=rng))[0]
        for _ in range(500)
    ]
    # Only the never-measured C is explored, about a fifth of the time.
    assert set(firsts) == {A.peer_id, C.peer_id}
    assert 60 < firsts.count(C.peer_id) < 140
    assert peers(rank_candidates(records, "text.echo", seen=seen))[0] == A.peer_id


# --- properties ---------------------------------------------------------------------------

CAPS = ("text", "text.echo", "text.stats", "math.eval", "code.python", "code.python.django")
QUERIES = ("text", "text.echo", "math", "code", "code.python", "image")

record_shapes = st.tuples(
    st.lists(st.sampled_from(CAPS), min_size=1, max_size=4, unique=True).map(tuple),
    st.sampled_from([0.0, 0.25, 0.5, 1.0]) | st.floats(0.0, 1.0),
    st.none() | st.sampled_from([0.0, 10.0, 60_000.0]) | st.floats(0.0, 1e6),
)


@given(
    shapes=st.lists(record_shapes, max_size=len(IDENTITIES)),
    query=st.sampled_from(QUERIES),
    excluded=st.sets(st.sampled_from(range(len(IDENTITIES)))),
    seed=st.randoms(use_true_random=False),
)
def test_ranking_is_a_permutation_of_the_matches_and_ignores_input_order(
    shapes: list[tuple[tuple[str, ...], float, float | None]],
    query: str,
    excluded: set[int],
    seed: random.Random,
) -> None:
    records = [
        signed(identity, caps, load=load, p50=p50)
        for identity, (caps, load, p50) in zip(IDENTITIES, shapes, strict=False)
    ]
    exclude = [IDENTITIES[i].peer_id for i in excluded]
    ranked = rank_candidates(records, query, exclude=exclude)

    matching = [
        r
        for r in records
        if r.peer not in exclude and any(capability_matches(query, c) for c in r.record.caps)
    ]
    assert sorted(peers(ranked)) == sorted(r.peer for r in matching)
    assert all(c.capability in c.record.record.caps for c in ranked)
    assert [c.score for c in ranked] == sorted(c.score for c in ranked)

    shuffled = list(records)
    seed.shuffle(shuffled)
    assert rank_candidates(shuffled, query, exclude=exclude) == ranked
