"""Market mode on a node: answering calls for proposals and awards, and tendering.

The protocol and the award rule are in :mod:`llamanet.protocol.bids` and
:mod:`llamanet.orchestrator.market`; this is the part that needs the node (its
key, its worker, its streams).  :class:`Market` is a node's
``market``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import trio
from libp2p.peer.id import ID

from llamanet.adapters.bids import BidServer, exchange
from llamanet.adapters.libp2p_host import BID_PROTOCOL, open_stream
from llamanet.errors import (
    DecodeError,
    LlamanetError,
    NoCandidatesError,
    RemoteProtocolError,
    TransportError,
)
from llamanet.orchestrator.market import AwardRule, TenderReport, check_bid, order_bids
from llamanet.orchestrator.selection import rank_candidates
from llamanet.protocol.bids import (
    AWARD_DOMAIN,
    Award,
    AwardAccepted,
    Bid,
    BidMessage,
    CallForProposals,
    Decline,
)
from llamanet.protocol.capabilities import best_match, validate_capability
from llamanet.protocol.peer_ids import peer_id_to_text
from llamanet.trust.reputation import Outcome

if TYPE_CHECKING:
    from .node import Answer, Node

log = logging.getLogger(__name__)

BID_VALIDITY: Final = 30.0
DEFAULT_ETA_MS: Final = 1000.0
MAX_OPEN_BIDS: Final = 1024
LATE_FACTOR: Final = 2.0
LATE_SLACK_MS: Final = 100.0
BidPolicy = Callable[[CallForProposals, bytes], Awaitable[BidMessage]]


class Market:
    """A node's side of market mode: its bids, the awards it accepted, and tenders."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.bid_policy: BidPolicy = self.default_bid
        """Decides this node's answer to a call for proposals (replaceable, e.g. by
        simulated agents)."""
        self.my_bids: OrderedDict[bytes, tuple[bytes, Bid]] = OrderedDict()
        """Our open bids by call id, with the peer each was made to."""
        self.awards: OrderedDict[bytes, Bid] = OrderedDict()
        """Calls we won and accepted, by call id (the id their task arrives with)."""
        self.server = BidServer(self._answer_cfp, self._answer_award)

    def sign_bid(self, cfp: CallForProposals, *, price: float, eta_ms: int) -> Bid:
        """A bid of ours for ``cfp``, signed, valid for ``BID_VALIDITY`` seconds."""
        unsigned = Bid(
            cfp=cfp.id,
            bidder=self.node.peer_id,
            cap=cfp.cap,
            price=float(price),
            eta_ms=int(eta_ms),
            exp=int((self.node.clock() + BID_VALIDITY) * 1000),
        )
        return dataclasses.replace(unsigned, sig=self.node.identity.sign(unsigned.signed_bytes()))

    async def default_bid(self, cfp: CallForProposals, requester: bytes) -> BidMessage:
        """Bid our advertised price and our measured time, scaled by load; decline
        what we do not serve or have no room for."""
        if best_match(cfp.cap, self.node.worker.capabilities()) is None:
            return Decline(cfp=cfp.id, reason=f"{cfp.cap} is not served here")
        if self.node.worker.in_flight >= self.node.worker.limits.max_concurrency:
            return Decline(cfp=cfp.id, reason="no free task slot")
        typical = self.node.worker.p50_ms() or DEFAULT_ETA_MS
        return self.sign_bid(
            cfp, price=self.node.config.price, eta_ms=int(typical * (1 + self.node.worker.load))
        )

    async def _answer_cfp(self, cfp: CallForProposals, requester: bytes) -> BidMessage:
        answer = await self.bid_policy(cfp, requester)
        if isinstance(answer, Bid):
            self.my_bids[cfp.id] = (requester, answer)
            while len(self.my_bids) > MAX_OPEN_BIDS:
                self.my_bids.popitem(last=False)
        return answer

    async def _answer_award(self, award: Award, requester: bytes) -> BidMessage:
        """Accept an award only for our own unexpired bid, awarded by whom we bid to."""
        try:
            bid = award.winning_bid()
        except DecodeError:
            return Decline(cfp=b"\0" * 16, reason="the award holds no valid bid")
        bid_to, ours = self.my_bids.get(bid.cfp, (None, None))
        if award.requester != requester or not award.verify():
            reason = "the award is not signed by the requester"
        elif ours is None or ours != bid:
            reason = "that is not a bid of ours"
        elif bid_to != requester:
            # Only whoever asked us for the bid can award it; another peer who
            # learned the call's id cannot hand our bid a job of its own.
            reason = "that bid was made to another peer"
        elif bid.exp <= self.node.clock() * 1000:
            reason = "our bid has expired"
        else:
            self.awards[bid.cfp] = bid
            while len(self.awards) > MAX_OPEN_BIDS:
                self.awards.popitem(last=False)
            return AwardAccepted(cfp=bid.cfp)
        log.info("refused an award from %s: %s", ID(requester), reason)
        return Decline(cfp=bid.cfp, reason=reason)

    async def tender(
        self,
        capability: str,
        input: Any,
        *,
        summary: str = "",
        rule: AwardRule | None = None,
        bidders: int = 3,
        bid_window: float = 1.0,
        timeout: float = 30.0,
        **options: Any,
    ) -> tuple[Answer, TenderReport]:
        """Ask the ``bidders`` best candidates for bids, award by ``rule`` and run
        the task on the winner.  ``options`` as :meth:`ask`."""
        self.node._check_running()
        validate_capability(capability)
        rule = rule or AwardRule()
        now = self.node.clock()
        cfp = CallForProposals(
            id=os.urandom(16),
            cap=capability,
            summary=summary[:1024],
            bid_deadline=int((now + bid_window) * 1000),
            task_deadline=int((now + timeout) * 1000),
        )
        records = self.node._known_providers(capability) or await self.node.find(capability)
        seen = self.node._observations(capability, (r.peer for r in records))
        ranked = rank_candidates(records, capability, seen=seen)[:bidders]
        report = TenderReport(cfp=cfp)
        answered: set[bytes] = set()

        async def ask_for_bid(peer: bytes) -> None:
            try:
                answer = await exchange(await open_stream(self.node.host, peer, BID_PROTOCOL), cfp)
            except (TransportError, RemoteProtocolError) as exc:
                report.set_aside.append((peer_id_to_text(peer), f"unreachable: {exc}"))
                answered.add(peer)
                return
            answered.add(peer)
            if isinstance(answer, Decline):
                report.set_aside.append((peer_id_to_text(peer), f"declined: {answer.reason}"))
            elif isinstance(answer, Bid):
                why = check_bid(answer, cfp, peer)
                if why is None:
                    report.bids.append(answer)
                else:
                    report.set_aside.append((peer_id_to_text(peer), why))
            else:
                report.set_aside.append((peer_id_to_text(peer), f"answered {answer.wire_type!r}"))

        with trio.move_on_after(bid_window):
            async with trio.open_nursery() as nursery:
                for candidate in ranked:
                    nursery.start_soon(ask_for_bid, candidate.record.peer)
        for candidate in ranked:
            if candidate.record.peer not in answered:
                late = candidate.record.record.peer_text
                report.set_aside.append((late, "no bid before the deadline"))
        order = order_bids(
            report.bids,
            rule,
            now_ms=int(self.node.clock() * 1000),
            task_deadline_ms=cfp.task_deadline,
        )
        for bid in order:
            award = Award(
                bid=bid.to_wire(),
                requester=self.node.peer_id,
                sig=self.node.identity.sign(AWARD_DOMAIN + bid.sig),
            )
            try:
                stream = await open_stream(self.node.host, bid.bidder, BID_PROTOCOL)
                reply = await exchange(stream, award)
            except (TransportError, RemoteProtocolError) as exc:
                report.set_aside.append((peer_id_to_text(bid.bidder), f"award failed: {exc}"))
                continue
            if not isinstance(reply, AwardAccepted):
                why = reply.reason if isinstance(reply, Decline) else reply.wire_type
                report.set_aside.append((peer_id_to_text(bid.bidder), f"refused the award: {why}"))
                continue
            report.winner = bid
            remaining = cfp.task_deadline / 1000 - self.node.clock()
            answer = await self.node.ask(
                capability,
                input,
                peer=peer_id_to_text(bid.bidder),
                task_id=cfp.id,
                timeout=max(0.1, remaining),
                **options,
            )
            if answer.elapsed_ms > LATE_FACTOR * bid.eta_ms + LATE_SLACK_MS:
                # Delivered, but far past what it promised when it bid.
                self.node.reputation.record(bid.bidder, capability, Outcome.LATE, self.node.clock())
            return answer, report
        raise NoCandidatesError(
            capability,
            f"no acceptable bid ({rule.kind})",
            [(p, LlamanetError(why)) for p, why in report.set_aside],
        )
