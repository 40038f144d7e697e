"""Market mode: award a task by asking for bids first.

The requester sends a call for proposals to the best-ranked candidates; each
answers with a signed bid (price per 1k tokens, estimated completion, expiry) or
declines.  Bids arriving after the call's bid deadline, with a signature that is
not the bidder's, for another call or another capability are set aside.  The rest
are ordered by the stated rule — ``cheapest`` that can finish by the task's
deadline, or ``fastest`` under a price cap — and awarded in that order until a
winner accepts the award (it checks the award is for its own unexpired bid).
:func:`order_bids` is the pure part.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from llamanet.protocol.bids import Bid, CallForProposals

RULES: Final = ("cheapest", "fastest")


@dataclass(frozen=True, kw_only=True, slots=True)
class AwardRule:
    kind: str = "cheapest"
    price_cap: float | None = None
    """For ``fastest`` (and optionally ``cheapest``): bids above it are left out."""

    def __post_init__(self) -> None:
        if self.kind not in RULES:
            raise ValueError(f"award rule must be one of {', '.join(RULES)}")


@dataclass(kw_only=True, slots=True)
class TenderReport:
    """What happened in one round, for the caller to show or log."""

    cfp: CallForProposals
    bids: list[Bid] = field(default_factory=list)
    set_aside: list[tuple[str, str]] = field(default_factory=list)
    """``(peer, why)``: declined, late, bad signature, refused the award."""
    winner: Bid | None = None


def check_bid(bid: Bid, cfp: CallForProposals, sender: bytes) -> str | None:
    """Why ``bid`` cannot be considered, or ``None`` if it can."""
    if bid.cfp != cfp.id or bid.cap != cfp.cap:
        return "bid is for another call"
    if bid.bidder != sender:
        return "bid names another bidder"
    if not bid.verify():
        return "bad signature"
    return None


def order_bids(
    bids: Iterable[Bid], rule: AwardRule, *, now_ms: int, task_deadline_ms: int
) -> list[Bid]:
    """The bids the rule allows, best first."""
    live = [b for b in bids if b.exp > now_ms]
    if rule.price_cap is not None:
        live = [b for b in live if b.price <= rule.price_cap]
    if rule.kind == "cheapest":
        live = [b for b in live if now_ms + b.eta_ms <= task_deadline_ms]
        return sorted(live, key=lambda b: (b.price, b.eta_ms, b.bidder))
    return sorted(live, key=lambda b: (b.eta_ms, b.price, b.bidder))
