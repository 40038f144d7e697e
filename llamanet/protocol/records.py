"""Signed capability records: what a node can do, sealed with its identity key.

A record is a msgpack map (:class:`CapabilityRecord`) sealed in a libp2p signed
envelope (RFC 0002): protobuf ``{public_key, payload_type, payload, signature}``
where the signature covers ``varint-prefixed(domain) ‖ varint-prefixed(payload_type)
‖ varint-prefixed(payload)`` with domain ``llamanet/caps/v1``.  The signature is
checked over the exact payload bytes *before* the payload is decoded.

:func:`open_record` applies every rule a record must pass wherever it arrives
from (DHT, direct fetch, mDNS): size, signature, peer match, lifetime, expiry,
issue time, proof-of-work.  Sequence numbers are compared by whoever already
holds a record (:func:`check_newer`), since only they know the previous one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from llamanet.errors import (
    DecodeError,
    ExpiredRecordError,
    FutureRecordError,
    InsufficientWorkError,
    InvalidSignatureError,
    LocalProtocolError,
    MalformedRecordError,
    PeerMismatchError,
    RecordTooLargeError,
    StaleRecordError,
)
from llamanet.protocol import _protobuf
from llamanet.protocol.capabilities import MAX_CAPABILITIES, is_valid_capability
from llamanet.protocol.codec import _pack, _unpack, check_plain_value
from llamanet.protocol.config import RecordPolicy
from llamanet.protocol.peer_ids import (
    Signer,
    is_valid_peer_id,
    marshal_public_key,
    peer_id_from_public_key,
    peer_id_to_text,
    unmarshal_public_key,
    verify_signature,
)
from llamanet.protocol.pow import NONCE_LENGTH, check_pow
from llamanet.protocol.varint import encode_uvarint

RECORD_DOMAIN: Final = "llamanet/caps/v1"
# Multicodec private-use range (0x300000-0x3fffff); docs/PROTOCOL.md.
RECORD_PAYLOAD_TYPE: Final = encode_uvarint(0x300001)
RECORD_VERSION: Final = 1
MAX_ADDRS: Final = 16
MAX_ADDR_LENGTH: Final = 256
MAX_MODELS: Final = 32
DHT_KEY_PREFIX: Final = "/llamanet/caps/"


def dht_key_for(peer_id: bytes) -> str:
    """The DHT key a peer's record is published under."""
    return DHT_KEY_PREFIX + peer_id_to_text(peer_id)


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise LocalProtocolError(msg)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelInfo:
    """One model a node serves."""

    name: str
    digest: str = ""
    """``sha256:<hex>`` of the model file, or the digest Ollama reports."""
    ctx: int = 0
    """Context window in tokens (0 when unknown)."""
    params: str = ""
    """Parameter count as the model server reports it, e.g. ``7.6B``."""
    quant: str = ""
    family: str = ""
    ttft_ms: float = 0.0
    """Median time to first token the serving node measured (0 when not yet)."""
    tokens_per_s: float = 0.0
    """Median decode speed the serving node measured (0 when not yet)."""

    def __post_init__(self) -> None:
        for name in ("name", "digest", "params", "quant", "family"):
            value = getattr(self, name)
            _require(isinstance(value, str) and len(value) <= 256, f"model {name} must be a string")
        _require(bool(self.name), "model name must not be empty")
        _require(_is_int(self.ctx) and self.ctx >= 0, "model ctx must be a non-negative integer")
        for name in ("ttft_ms", "tokens_per_s"):
            value = getattr(self, name)
            _require(_is_number(value) and value >= 0, f"model {name} must be a number >= 0")

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "name": self.name,
            "digest": self.digest,
            "ctx": self.ctx,
            "params": self.params,
            "quant": self.quant,
            "family": self.family,
        }
        # Measured figures only once measured: records are capped at 8 KiB.
        if self.ttft_ms:
            wire["ttft_ms"] = self.ttft_ms
        if self.tokens_per_s:
            wire["tokens_per_s"] = self.tokens_per_s
        return wire


def model_meets(model: ModelInfo, constraints: Mapping[str, Any]) -> bool:
    """True when ``model`` satisfies a task's model constraints (``name``, ``family``,
    ``digest`` exactly; ``min_ctx`` as a lower bound on the context window)."""
    for key in ("name", "family", "digest"):
        if key in constraints and constraints[key] != getattr(model, key):
            return False
    return not ("min_ctx" in constraints and model.ctx < constraints["min_ctx"])


@dataclass(frozen=True, kw_only=True, slots=True)
class CapabilityRecord:
    """The payload of a signed record (field meanings: docs/PROTOCOL.md)."""

    peer: bytes
    seq: int
    iat: int
    exp: int
    caps: tuple[str, ...]
    addrs: tuple[bytes, ...] = ()
    models: tuple[ModelInfo, ...] = ()
    perf: Mapping[str, float] = field(default_factory=dict)
    load: float = 0.0
    limits: Mapping[str, int] = field(default_factory=dict)
    price: float = 0.0
    pow: bytes = b""
    v: int = RECORD_VERSION

    def __post_init__(self) -> None:
        _require(self.v == RECORD_VERSION, f"unsupported record version {self.v!r}")
        _require(is_valid_peer_id(self.peer), "peer must be an Ed25519 peer ID")
        _require(
            _is_int(self.seq) and 0 <= self.seq < 1 << 63, "seq must be a non-negative integer"
        )
        _require(_is_int(self.iat) and _is_int(self.exp), "iat and exp must be unix seconds")
        _require(
            isinstance(self.caps, tuple) and len(self.caps) <= MAX_CAPABILITIES,
            f"at most {MAX_CAPABILITIES} capabilities",
        )
        for cap in self.caps:
            _require(is_valid_capability(cap), f"invalid capability name {cap!r}")
        _require(len(set(self.caps)) == len(self.caps), "duplicate capability")
        _require(
            isinstance(self.addrs, tuple)
            and len(self.addrs) <= MAX_ADDRS
            and all(isinstance(a, bytes) and 0 < len(a) <= MAX_ADDR_LENGTH for a in self.addrs),
            f"addrs must be at most {MAX_ADDRS} multiaddrs in binary form",
        )
        _require(
            isinstance(self.models, tuple)
            and len(self.models) <= MAX_MODELS
            and all(isinstance(m, ModelInfo) for m in self.models),
            f"models must be at most {MAX_MODELS} ModelInfo entries",
        )
        for name, mapping in (("perf", self.perf), ("limits", self.limits)):
            _require(
                isinstance(mapping, Mapping)
                and all(isinstance(k, str) and _is_number(v) for k, v in mapping.items()),
                f"{name} must map strings to numbers",
            )
        _require(_is_number(self.load) and 0.0 <= self.load <= 1.0, "load must be in 0..1")
        _require(_is_number(self.price) and self.price >= 0, "price must be >= 0")
        _require(
            isinstance(self.pow, bytes) and len(self.pow) in (0, NONCE_LENGTH),
            f"pow must be empty or a {NONCE_LENGTH}-byte nonce",
        )

    @property
    def peer_text(self) -> str:
        return peer_id_to_text(self.peer)

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": self.v,
            "peer": self.peer,
            "seq": self.seq,
            "iat": self.iat,
            "exp": self.exp,
            "addrs": list(self.addrs),
            "caps": list(self.caps),
            "models": [m.to_wire() for m in self.models],
            "perf": dict(self.perf),
            "load": self.load,
            "limits": dict(self.limits),
            "price": self.price,
            "pow": self.pow,
        }

    @classmethod
    def from_wire(cls, obj: Any) -> CapabilityRecord:
        """Build from a decoded payload map; :class:`MalformedRecordError` if it is not one."""
        if not isinstance(obj, dict):
            raise MalformedRecordError("record payload must be a map")
        required = ("v", "peer", "seq", "iat", "exp", "caps")
        missing = [k for k in required if k not in obj]
        if missing:
            raise MalformedRecordError(f"record payload lacks {', '.join(missing)}")
        try:
            check_plain_value(obj)
            models_raw = obj.get("models", [])
            if not isinstance(models_raw, list) or not all(isinstance(m, dict) for m in models_raw):
                raise MalformedRecordError("models must be a list of maps")
            known = {
                "name",
                "digest",
                "ctx",
                "params",
                "quant",
                "family",
                "ttft_ms",
                "tokens_per_s",
            }
            models = tuple(
                ModelInfo(**{k: v for k, v in m.items() if k in known}) for m in models_raw
            )
            caps, addrs = obj["caps"], obj.get("addrs", [])
            if not isinstance(caps, list) or not isinstance(addrs, list):
                raise MalformedRecordError("caps and addrs must be lists")
            perf, limits = obj.get("perf", {}), obj.get("limits", {})
            if not isinstance(perf, dict) or not isinstance(limits, dict):
                raise MalformedRecordError("perf and limits must be maps")
            return cls(
                v=obj["v"],
                peer=obj["peer"],
                seq=obj["seq"],
                iat=obj["iat"],
                exp=obj["exp"],
                caps=tuple(caps),
                addrs=tuple(addrs),
                models=models,
                perf=perf,
                load=obj.get("load", 0.0),
                limits=limits,
                price=obj.get("price", 0.0),
                pow=obj.get("pow", b""),
            )
        except (LocalProtocolError, DecodeError, TypeError) as exc:
            raise MalformedRecordError(f"invalid record payload: {exc}") from exc


@dataclass(frozen=True, slots=True)
class SignedRecord:
    """A record that passed :func:`open_record`, with the exact envelope bytes that
    were verified (so it can be passed on unchanged)."""

    record: CapabilityRecord
    envelope: bytes

    @property
    def peer(self) -> bytes:
        return self.record.peer

    @property
    def seq(self) -> int:
        return self.record.seq


def _signing_input(domain: str, payload_type: bytes, payload: bytes) -> bytes:
    d = domain.encode()
    return (
        encode_uvarint(len(d))
        + d
        + encode_uvarint(len(payload_type))
        + payload_type
        + encode_uvarint(len(payload))
        + payload
    )


def seal_envelope(signer: Signer, domain: str, payload_type: bytes, payload: bytes) -> bytes:
    """An RFC 0002 signed envelope around ``payload``."""
    signature = signer.sign(_signing_input(domain, payload_type, payload))
    return (
        _protobuf.encode_bytes_field(1, marshal_public_key(signer.public_key))
        + _protobuf.encode_bytes_field(2, payload_type)
        + _protobuf.encode_bytes_field(3, payload)
        + _protobuf.encode_bytes_field(5, signature)
    )


def open_envelope(data: bytes, domain: str, payload_type: bytes) -> tuple[bytes, bytes]:
    """Verify an envelope; returns ``(public_key, payload)``.

    Raises :class:`MalformedRecordError` or :class:`InvalidSignatureError`.
    """
    try:
        fields = _protobuf.decode_fields(data)
        key_field, type_field = fields.get(1), fields.get(2)
        payload, signature = fields.get(3), fields.get(5)
        if not (
            isinstance(key_field, bytes)
            and isinstance(type_field, bytes)
            and isinstance(payload, bytes)
            and isinstance(signature, bytes)
        ):
            raise MalformedRecordError("envelope lacks a field")
        public_key = unmarshal_public_key(key_field)
    except DecodeError as exc:
        raise MalformedRecordError(f"invalid envelope: {exc}") from exc
    if type_field != payload_type:
        raise MalformedRecordError("envelope carries a different payload type")
    if not verify_signature(public_key, _signing_input(domain, payload_type, payload), signature):
        raise InvalidSignatureError("envelope signature does not verify")
    return public_key, payload


def seal_record(record: CapabilityRecord, signer: Signer) -> bytes:
    """Sign ``record`` with ``signer``, whose peer ID must be ``record.peer``."""
    if signer.peer_id != record.peer:
        raise LocalProtocolError("a record can only be signed by the peer it describes")
    return seal_envelope(signer, RECORD_DOMAIN, RECORD_PAYLOAD_TYPE, _pack(record.to_wire()))


def open_record(
    envelope: bytes,
    *,
    now: float,
    policy: RecordPolicy,
    expected_peer: bytes | None = None,
) -> SignedRecord:
    """Verify a sealed record and decode it, applying every rule in the module
    docstring.  ``expected_peer`` is the peer the record must describe (from the DHT
    key or the stream it came on).  Raises a :class:`RecordError` subclass.
    """
    if not isinstance(envelope, bytes):
        raise MalformedRecordError("record must be bytes")
    if len(envelope) > policy.max_record_size:
        raise RecordTooLargeError(
            f"record of {len(envelope)} bytes exceeds {policy.max_record_size}"
        )
    public_key, payload = open_envelope(envelope, RECORD_DOMAIN, RECORD_PAYLOAD_TYPE)
    try:
        obj = _unpack(payload)
    except DecodeError as exc:
        raise MalformedRecordError(f"record payload: {exc}") from exc
    record = CapabilityRecord.from_wire(obj)
    signer_peer = peer_id_from_public_key(public_key)
    if record.peer != signer_peer:
        raise PeerMismatchError("record describes a different peer than the one that signed it")
    if expected_peer is not None and record.peer != expected_peer:
        raise PeerMismatchError(
            f"record of {peer_id_to_text(record.peer)} arrived for {peer_id_to_text(expected_peer)}"
        )
    if record.exp <= record.iat or record.exp - record.iat > policy.max_lifetime:
        raise ExpiredRecordError(
            f"record lifetime {record.exp - record.iat}s is outside 0..{policy.max_lifetime:.0f}s"
        )
    if now >= record.exp:
        raise ExpiredRecordError(f"record expired {now - record.exp:.0f}s ago")
    if record.iat > now + policy.clock_skew:
        raise FutureRecordError(f"record issued {record.iat - now:.0f}s in the future")
    if not check_pow(record.peer, record.pow, policy.pow_difficulty):
        raise InsufficientWorkError(
            f"record proof-of-work is below the swarm difficulty of {policy.pow_difficulty} bits"
        )
    return SignedRecord(record, envelope)


def check_newer(candidate: SignedRecord, held: SignedRecord | None) -> None:
    """Raise :class:`StaleRecordError` unless ``candidate`` supersedes ``held``
    (strictly higher ``seq``; an identical envelope is not news either)."""
    if held is None:
        return
    if candidate.seq <= held.seq:
        raise StaleRecordError(f"record seq {candidate.seq} is not above the held seq {held.seq}")


def select_best(records: Sequence[SignedRecord]) -> int:
    """Index of the record with the highest ``seq`` (the first of equals)."""
    if not records:
        raise ValueError("no records to select from")
    best = 0
    for i, rec in enumerate(records):
        if rec.seq > records[best].seq:
            best = i
    return best
