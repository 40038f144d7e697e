"""The messages of ``/llamanet/bid/1.0.0`` (market mode), sans-I/O.

One exchange per stream, each message one frame (the task protocol's framing):

* requester -> peer: ``cfp`` (call for proposals: task summary, capability, when
  bids close, when the task must be done); peer -> requester: ``bid`` (price,
  estimated completion, expiry, signed by the bidder) or ``decline``;
* requester -> winner: ``award`` (the winning bid, signed by the requester);
  winner -> requester: ``award_ok`` or ``decline``.  The winner checks the award
  (its own bid, unexpired, awarded by whom it bid to) before it will run the task,
  which then travels on the task protocol with the call's id as the task id.

A bid's signature covers ``llamanet/bid/v1`` and the msgpack encoding of its
fields, so any peer can check a bid against the bidder's peer ID.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from llamanet.errors import DecodeError, LocalProtocolError
from llamanet.protocol.capabilities import is_valid_capability
from llamanet.protocol.codec import check_plain_value, pack_value
from llamanet.protocol.messages import _check_task_id, _is_int, _is_number, _require
from llamanet.protocol.peer_ids import is_valid_peer_id, public_key_from_peer_id, verify_signature

BID_PROTOCOL: Final = "/llamanet/bid/1.0.0"
BID_DOMAIN: Final = b"llamanet/bid/v1"
AWARD_DOMAIN: Final = b"llamanet/award/v1"
MAX_SUMMARY: Final = 1024


class BidMessage:
    __slots__ = ()
    wire_type: ClassVar[str]

    def to_wire(self) -> dict[str, Any]:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        return {"t": self.wire_type, **fields}


@dataclass(frozen=True, kw_only=True, slots=True)
class CallForProposals(BidMessage):
    wire_type: ClassVar[str] = "cfp"

    id: bytes
    cap: str
    summary: str
    bid_deadline: int
    """Unix ms: bids arriving later are ignored."""
    task_deadline: int
    """Unix ms: when the task must be done."""

    def __post_init__(self) -> None:
        _check_task_id(self.id)
        _require(isinstance(self.cap, str) and is_valid_capability(self.cap), "bad capability")
        _require(isinstance(self.summary, str) and len(self.summary) <= MAX_SUMMARY,
                 f"summary must be at most {MAX_SUMMARY} characters")  # fmt: skip
        _require(_is_int(self.bid_deadline) and self.bid_deadline > 0, "bad bid deadline")
        _require(_is_int(self.task_deadline) and self.task_deadline > 0, "bad task deadline")


@dataclass(frozen=True, kw_only=True, slots=True)
class Bid(BidMessage):
    wire_type: ClassVar[str] = "bid"

    cfp: bytes
    bidder: bytes
    cap: str
    price: float
    """Credits per 1k tokens."""
    eta_ms: int
    """Estimated time from award to result."""
    exp: int
    """Unix ms: the bid cannot be awarded after this."""
    sig: bytes = b""

    def __post_init__(self) -> None:
        _check_task_id(self.cfp, "cfp")
        _require(is_valid_peer_id(self.bidder), "bidder must be an Ed25519 peer ID")
        _require(isinstance(self.cap, str) and is_valid_capability(self.cap), "bad capability")
        _require(_is_number(self.price) and self.price >= 0, "price must be >= 0")
        _require(_is_int(self.eta_ms) and self.eta_ms >= 0, "eta_ms must be >= 0")
        _require(_is_int(self.exp) and self.exp > 0, "bad expiry")
        _require(isinstance(self.sig, bytes) and len(self.sig) in (0, 64), "bad signature")

    def signed_bytes(self) -> bytes:
        fields = [self.cfp, self.bidder, self.cap, float(self.price), self.eta_ms, self.exp]
        return BID_DOMAIN + pack_value(fields)

    def verify(self) -> bool:
        """Whether ``sig`` is the bidder's signature over this bid."""
        try:
            key = public_key_from_peer_id(self.bidder)
        except DecodeError:
            return False
        return len(self.sig) == 64 and verify_signature(key, self.signed_bytes(), self.sig)


@dataclass(frozen=True, kw_only=True, slots=True)
class Decline(BidMessage):
    wire_type: ClassVar[str] = "decline"

    cfp: bytes
    reason: str = ""

    def __post_init__(self) -> None:
        _check_task_id(self.cfp, "cfp")
        _require(isinstance(self.reason, str) and len(self.reason) <= MAX_SUMMARY, "bad reason")


@dataclass(frozen=True, kw_only=True, slots=True)
class Award(BidMessage):
    wire_type: ClassVar[str] = "award"

    bid: dict[str, Any]
    """The winning bid, as sent."""
    requester: bytes
    sig: bytes
    """The requester's signature over ``llamanet/award/v1`` and the bid's signature."""

    def __post_init__(self) -> None:
        _require(isinstance(self.bid, dict), "bid must be a map")
        _require(is_valid_peer_id(self.requester), "requester must be an Ed25519 peer ID")
        _require(isinstance(self.sig, bytes) and len(self.sig) == 64, "bad signature")

    def winning_bid(self) -> Bid:
        return decode_bid_message(pack_value(self.bid))  # type: ignore[return-value]

    def verify(self) -> bool:
        try:
            bid = self.winning_bid()
            key = public_key_from_peer_id(self.requester)
        except (LocalProtocolError, DecodeError):
            return False
        return verify_signature(key, AWARD_DOMAIN + bid.sig, self.sig)


@dataclass(frozen=True, kw_only=True, slots=True)
class AwardAccepted(BidMessage):
    wire_type: ClassVar[str] = "award_ok"

    cfp: bytes

    def __post_init__(self) -> None:
        _check_task_id(self.cfp, "cfp")


BID_MESSAGES: Final[dict[str, type[BidMessage]]] = {
    cls.wire_type: cls for cls in (CallForProposals, Bid, Decline, Award, AwardAccepted)
}


def encode_bid_message(message: BidMessage) -> bytes:
    return pack_value(message.to_wire())


def decode_bid_message(body: bytes) -> BidMessage:
    """One frame body of the bid protocol; :class:`DecodeError` if it is not one."""
    import msgpack

    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise DecodeError(f"bid message is not msgpack: {exc}") from exc
    tag = obj.get("t") if isinstance(obj, dict) else None
    if not isinstance(tag, str) or tag not in BID_MESSAGES:
        raise DecodeError("unknown bid message")
    cls = BID_MESSAGES[obj.pop("t")]
    try:
        check_plain_value(obj)
        return cls(**obj)
    except (LocalProtocolError, TypeError) as exc:
        raise DecodeError(f"invalid {cls.wire_type!r} message: {exc}") from exc
