"""Market mode: signed bids, the award rule, and a round between real nodes."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import trio

from llamanet.errors import DecodeError
from llamanet.node.node import Node
from llamanet.orchestrator.market import AwardRule, check_bid, order_bids
from llamanet.protocol.bids import (
    AWARD_DOMAIN,
    Award,
    AwardAccepted,
    Bid,
    BidMessage,
    CallForProposals,
    Decline,
    decode_bid_message,
    encode_bid_message,
)
from llamanet.trust.keys import Identity

from ..nodes import providers_of, start_node

ALICE, BOB, CAROL = (Identity(bytes([i]) * 32) for i in (1, 2, 3))
CFP = CallForProposals(
    id=b"c" * 16, cap="text.echo", summary="echo this", bid_deadline=2_000, task_deadline=10_000
)


def bid(who: Identity, *, price: float, eta_ms: int, exp: int = 5_000) -> Bid:
    unsigned = Bid(cfp=CFP.id, bidder=who.peer_id, cap=CFP.cap, price=price, eta_ms=eta_ms, exp=exp)
    return dataclasses.replace(unsigned, sig=who.sign(unsigned.signed_bytes()))


def test_bids_round_trip_and_are_checked() -> None:
    good = bid(ALICE, price=1.0, eta_ms=100)
    assert decode_bid_message(encode_bid_message(good)) == good
    assert check_bid(good, CFP, ALICE.peer_id) is None
    assert check_bid(good, CFP, BOB.peer_id) == "bid names another bidder"
    assert check_bid(dataclasses.replace(good, price=0.5), CFP, ALICE.peer_id) == "bad signature"
    other = dataclasses.replace(CFP, id=b"d" * 16)
    assert check_bid(good, other, ALICE.peer_id) == "bid is for another call"
    with pytest.raises(DecodeError):
        decode_bid_message(b"\x81\xa1t\xa5other")


def test_award_rules() -> None:
    cheap_slow = bid(ALICE, price=0.5, eta_ms=9_000)
    dear_fast = bid(BOB, price=3.0, eta_ms=100)
    middle = bid(CAROL, price=1.0, eta_ms=2_000)
    bids = [cheap_slow, dear_fast, middle]
    cheapest = order_bids(bids, AwardRule(), now_ms=1_000, task_deadline_ms=5_000)
    assert cheapest == [middle, dear_fast]  # the cheapest cannot finish in time
    fastest = order_bids(
        bids, AwardRule(kind="fastest", price_cap=2.0), now_ms=1_000, task_deadline_ms=5_000
    )
    assert fastest == [middle, cheap_slow]  # the fastest costs over the cap
    assert order_bids(bids, AwardRule(), now_ms=6_000, task_deadline_ms=99_000) == []  # expired
    with pytest.raises(ValueError, match="award rule"):
        AwardRule(kind="random")


async def test_a_round_with_a_late_and_a_forged_bid(tmp_path: Path) -> None:
    async with (
        start_node(tmp_path / "good", price=2.0) as good,
        start_node(tmp_path / "late", price=0.1, bootstrap=(good.addrs()[0],)) as late,
        start_node(tmp_path / "forger", price=0.0, bootstrap=(good.addrs()[0],)) as forger,
        start_node(
            tmp_path / "r", bootstrap=tuple(n.addrs()[0] for n in (good, late, forger))
        ) as requester,
    ):
        await providers_of(requester, "text.echo", 3)

        async def slow_bid(cfp: CallForProposals, requester_id: bytes) -> BidMessage:
            await trio.sleep(1.5)  # past the bid window
            return await late.market.default_bid(cfp, requester_id)

        async def forged_bid(cfp: CallForProposals, requester_id: bytes) -> BidMessage:
            honest = forger.market.sign_bid(cfp, price=0.0, eta_ms=1)
            return dataclasses.replace(honest, sig=CAROL.sign(honest.signed_bytes()))

        late.market.bid_policy = slow_bid
        forger.market.bid_policy = forged_bid
        answer, report = await requester.tender(
            "text.echo", "hello", summary="echo a greeting", bid_window=0.5, timeout=10
        )
        assert answer.output == "hello" and answer.peer == good.peer_id_text
        assert report.winner is not None and report.winner.bidder == good.peer_id
        assert report.winner.price == 2.0
        why = dict(report.set_aside)
        assert why[late.peer_id_text] == "no bid before the deadline"
        assert why[forger.peer_id_text] == "bad signature"
        # The winner ran the task under the call's id.
        assert report.cfp.id in good.market.awards


async def test_the_winner_checks_the_award(tmp_path: Path) -> None:
    async with (
        start_node(tmp_path / "w") as worker,
        start_node(tmp_path / "r", bootstrap=(worker.addrs()[0],)) as requester,
    ):
        cfp = dataclasses.replace(CFP, id=os.urandom(16))
        offered = await worker.market._answer_cfp(cfp, requester.peer_id)
        assert isinstance(offered, Bid)

        def award(bid: Bid, signer: Node | Identity) -> Award:
            identity = signer.identity if isinstance(signer, Node) else signer
            return Award(
                bid=bid.to_wire(),
                requester=requester.peer_id,
                sig=identity.sign(AWARD_DOMAIN + bid.sig),
            )

        # Signed by someone else than the requester: refused.
        refused = await worker.market._answer_award(award(offered, ALICE), requester.peer_id)
        assert isinstance(refused, Decline) and "not signed by the requester" in refused.reason
        # A bid the worker never made (a better price for the requester): refused.
        cheaper = worker.market.sign_bid(cfp, price=0.0, eta_ms=1)
        refused = await worker.market._answer_award(
            award(dataclasses.replace(cheaper, exp=cheaper.exp + 1), requester), requester.peer_id
        )
        assert isinstance(refused, Decline)
        # Another peer that learned the call's id awards our bid to itself, signed
        # by itself: refused, the bid was made to the requester.
        other = Award(
            bid=offered.to_wire(),
            requester=ALICE.peer_id,
            sig=ALICE.sign(AWARD_DOMAIN + offered.sig),
        )
        refused = await worker.market._answer_award(other, ALICE.peer_id)
        assert isinstance(refused, Decline) and "made to another peer" in refused.reason
        accepted = await worker.market._answer_award(award(offered, requester), requester.peer_id)
        assert isinstance(accepted, AwardAccepted) and accepted.cfp == cfp.id


async def test_a_workflow_step_awarded_by_bids(tmp_path: Path) -> None:
    from llamanet.orchestrator.runner import run_workflow
    from llamanet.orchestrator.workflow import parse_workflow

    flow = parse_workflow(
        {
            "steps": [
                {"id": "cheap", "capability": "math.eval", "market": "cheapest"},
                {"id": "capped", "capability": "math.eval", "market": "fastest", "price_cap": 1},
            ]
        }
    )
    async with (
        start_node(tmp_path / "dear", price=5.0) as dear,
        start_node(tmp_path / "cheap", price=0.5, bootstrap=(dear.addrs()[0],)) as cheap,
        start_node(tmp_path / "r", bootstrap=(dear.addrs()[0], cheap.addrs()[0])) as requester,
    ):
        await providers_of(requester, "math.eval", 2)
        result = await run_workflow(requester, flow, "6*7")
        assert result.output == 42
        assert result.steps["cheap"].peers == [cheap.peer_id_text]
        assert result.steps["capped"].peers == [cheap.peer_id_text]  # the other is over the cap
