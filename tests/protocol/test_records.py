from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from libp2p.peer.envelope import unmarshal_envelope

from llamanet.errors import (
    ExpiredRecordError,
    FutureRecordError,
    InsufficientWorkError,
    InvalidSignatureError,
    LocalProtocolError,
    MalformedRecordError,
    PeerMismatchError,
    RecordError,
    RecordTooLargeError,
    StaleRecordError,
)
from llamanet.protocol import _protobuf
from llamanet.protocol.codec import _pack
from llamanet.protocol.config import RecordPolicy
from llamanet.protocol.records import (
    RECORD_DOMAIN,
    RECORD_PAYLOAD_TYPE,
    CapabilityRecord,
    ModelInfo,
    check_newer,
    dht_key_for,
    open_record,
    seal_envelope,
    seal_record,
    select_best,
)
from llamanet.trust.keys import Identity

from .helpers import NOW, POLICY, make_record

ALICE = Identity(b"\x01" * 32)
MALLORY = Identity(b"\x02" * 32)


def test_roundtrip_keeps_every_field() -> None:
    record = make_record(
        ALICE,
        addrs=(b"\x04\x7f\x00\x00\x01\x06\x10\x05",),
        models=(
            ModelInfo(
                name="qwen2.5:7b", digest="sha256:ab", ctx=32768, params="7.6B", quant="Q4_K_M"
            ),
        ),
        perf={"p50_ms": 12.5, "tokens_per_s": 40.0},
        load=0.25,
        limits={"max_concurrency": 8, "max_input_bytes": 1 << 20},
        price=0.5,
    )
    signed = open_record(seal_record(record, ALICE), now=NOW, policy=POLICY)
    assert signed.record == record
    assert signed.peer == ALICE.peer_id


def test_envelope_is_rfc0002_compatible_with_py_libp2p() -> None:
    envelope = seal_record(make_record(ALICE), ALICE)
    parsed = unmarshal_envelope(envelope)
    parsed.validate(RECORD_DOMAIN)  # raises if the signature does not verify
    assert parsed.payload_type == RECORD_PAYLOAD_TYPE
    assert parsed.public_key.to_bytes() == ALICE.public_key


def test_cannot_sign_for_another_peer() -> None:
    with pytest.raises(LocalProtocolError):
        seal_record(make_record(ALICE), MALLORY)


def _tamper(envelope: bytes) -> bytes:
    fields = _protobuf.decode_fields(envelope)
    payload = bytearray(fields[3])
    payload[-1] ^= 1
    return (
        _protobuf.encode_bytes_field(1, fields[1])  # type: ignore[arg-type]
        + _protobuf.encode_bytes_field(2, fields[2])  # type: ignore[arg-type]
        + _protobuf.encode_bytes_field(3, bytes(payload))
        + _protobuf.encode_bytes_field(5, fields[5])  # type: ignore[arg-type]
    )


def test_forged_signature_is_rejected() -> None:
    with pytest.raises(InvalidSignatureError):
        open_record(_tamper(seal_record(make_record(ALICE), ALICE)), now=NOW, policy=POLICY)


def test_record_signed_by_someone_else_is_a_peer_mismatch() -> None:
    # Mallory signs a record that claims to be Alice's.
    payload = _pack(make_record(ALICE).to_wire())
    envelope = seal_envelope(MALLORY, RECORD_DOMAIN, RECORD_PAYLOAD_TYPE, payload)
    with pytest.raises(PeerMismatchError):
        open_record(envelope, now=NOW, policy=POLICY)


def test_record_under_the_wrong_key_is_a_peer_mismatch() -> None:
    envelope = seal_record(make_record(ALICE), ALICE)
    with pytest.raises(PeerMismatchError):
        open_record(envelope, now=NOW, policy=POLICY, expected_peer=MALLORY.peer_id)


def test_expired_record() -> None:
    envelope = seal_record(make_record(ALICE), ALICE)
    with pytest.raises(ExpiredRecordError):
        open_record(envelope, now=NOW + 3600, policy=POLICY)


def test_lifetime_over_a_day_is_refused() -> None:
    envelope = seal_record(make_record(ALICE, exp=int(NOW) + 2 * 86400), ALICE)
    with pytest.raises(ExpiredRecordError, match="lifetime"):
        open_record(envelope, now=NOW, policy=POLICY)


def test_record_from_the_future() -> None:
    envelope = seal_record(make_record(ALICE, now=NOW + 3600), ALICE)
    with pytest.raises(FutureRecordError):
        open_record(envelope, now=NOW, policy=POLICY)
    # within the allowed clock skew it is fine
    open_record(envelope, now=NOW + 3600 - POLICY.clock_skew, policy=POLICY)


def test_oversized_record() -> None:
    caps = tuple(f"c{i:03d}." + "x" * 120 for i in range(64))
    envelope = seal_record(make_record(ALICE, caps=caps), ALICE)
    assert len(envelope) > 8192
    with pytest.raises(RecordTooLargeError):
        open_record(envelope, now=NOW, policy=POLICY)


def test_insufficient_proof_of_work() -> None:
    envelope = seal_record(make_record(ALICE, pow=b""), ALICE)
    with pytest.raises(InsufficientWorkError):
        open_record(envelope, now=NOW, policy=POLICY)
    open_record(envelope, now=NOW, policy=RecordPolicy(pow_difficulty=0))
    hard = RecordPolicy(pow_difficulty=30)
    with pytest.raises(InsufficientWorkError):
        open_record(seal_record(make_record(ALICE), ALICE), now=NOW, policy=hard)


def test_replayed_lower_seq_is_stale() -> None:
    old = open_record(seal_record(make_record(ALICE, seq=1), ALICE), now=NOW, policy=POLICY)
    new = open_record(seal_record(make_record(ALICE, seq=2), ALICE), now=NOW, policy=POLICY)
    check_newer(new, old)
    check_newer(new, None)
    with pytest.raises(StaleRecordError):
        check_newer(old, new)
    with pytest.raises(StaleRecordError):
        check_newer(new, new)
    assert select_best([old, new, old]) == 1


@pytest.mark.parametrize(
    "payload",
    [
        [1, 2, 3],
        {"v": 1},
        {"v": 2, "peer": ALICE.peer_id, "seq": 1, "iat": 1, "exp": 2, "caps": []},
        {"v": 1, "peer": ALICE.peer_id, "seq": 1, "iat": 1, "exp": 2, "caps": ["BAD"]},
        {"v": 1, "peer": ALICE.peer_id, "seq": 1, "iat": 1, "exp": 2, "caps": [], "models": [1]},
        {"v": 1, "peer": ALICE.peer_id, "seq": 1, "iat": 1, "exp": 2, "caps": [], "load": 2},
        {"v": 1, "peer": ALICE.peer_id, "seq": 1, "iat": 1, "exp": 2, "caps": [], "perf": 1},
    ],
)
def test_malformed_payloads(payload: object) -> None:
    envelope = seal_envelope(ALICE, RECORD_DOMAIN, RECORD_PAYLOAD_TYPE, _pack(payload))
    with pytest.raises(MalformedRecordError):
        open_record(envelope, now=NOW, policy=POLICY)


def test_wrong_domain_does_not_verify() -> None:
    payload = _pack(make_record(ALICE).to_wire())
    envelope = seal_envelope(ALICE, "llamanet/receipt/v1", RECORD_PAYLOAD_TYPE, payload)
    with pytest.raises(InvalidSignatureError):
        open_record(envelope, now=NOW, policy=POLICY)


@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_record_errors(data: bytes) -> None:
    with contextlib.suppress(RecordError):
        open_record(data, now=NOW, policy=POLICY)


def test_dht_key() -> None:
    assert dht_key_for(ALICE.peer_id) == "/llamanet/caps/" + ALICE.peer_id_text


def test_record_validation_on_construction() -> None:
    with pytest.raises(LocalProtocolError, match="duplicate"):
        make_record(ALICE, caps=("a", "a"))
    with pytest.raises(LocalProtocolError, match="load"):
        make_record(ALICE, load=1.5)
    with pytest.raises(LocalProtocolError, match="peer"):
        CapabilityRecord(peer=b"nope", seq=1, iat=1, exp=2, caps=())
