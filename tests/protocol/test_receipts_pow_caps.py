from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llamanet.errors import LocalProtocolError
from llamanet.protocol.capabilities import (
    best_match,
    capability_matches,
    capability_prefixes,
    is_valid_capability,
    provider_key,
    provider_key_string,
    validate_capability,
    validate_swarm_name,
)
from llamanet.protocol.peer_ids import (
    peer_id_from_text,
    peer_id_to_text,
    public_key_from_peer_id,
    verify_signature,
)
from llamanet.protocol.pow import check_pow, leading_zero_bits, pow_digest, solve_pow
from llamanet.protocol.receipts import sign_receipt, verify_receipt
from llamanet.trust.keys import Identity

from .strategies import plain_values

WORKER = Identity(b"\x03" * 32)


@given(plain_values, st.text(max_size=20))
def test_receipt_verifies_for_the_exact_exchange(output: object, digest: str) -> None:
    receipt = sign_receipt(WORKER, b"task-body", output, digest, 123)
    assert verify_receipt(WORKER.peer_id, receipt, b"task-body", output, digest)
    assert not verify_receipt(WORKER.peer_id, receipt, b"task-bodY", output, digest)
    assert not verify_receipt(WORKER.peer_id, receipt, b"task-body", [output], digest)
    assert not verify_receipt(WORKER.peer_id, receipt, b"task-body", output, digest + "x")
    other = Identity(b"\x04" * 32)
    assert not verify_receipt(other.peer_id, receipt, b"task-body", output, digest)


def test_leading_zero_bits() -> None:
    assert leading_zero_bits(b"\x00\x00\xff") == 16
    assert leading_zero_bits(b"\x01") == 7
    assert leading_zero_bits(b"\x80") == 0
    assert leading_zero_bits(b"\x00") == 8


@pytest.mark.parametrize("difficulty", [0, 1, 8, 12])
def test_pow_solves_and_checks(difficulty: int) -> None:
    nonce = solve_pow(WORKER.peer_id, difficulty)
    assert nonce is not None
    assert check_pow(WORKER.peer_id, nonce, difficulty)
    if difficulty:
        assert leading_zero_bits(pow_digest(WORKER.peer_id, nonce)) >= difficulty
        assert not check_pow(Identity(b"\x05" * 32).peer_id, nonce, difficulty + 8)


def test_pow_search_can_be_sliced() -> None:
    assert solve_pow(WORKER.peer_id, 40, limit=10) is None
    assert not check_pow(WORKER.peer_id, b"short", 1)


def test_capability_names() -> None:
    for good in ["math.eval", "a", "code_generation.python", "llm.chat", "x1.y_2"]:
        assert is_valid_capability(good)
        assert validate_capability(good) == good
    for bad in ["", "A", "a..b", ".a", "a.", "a b", "a-b", "ä", "a" * 129, None, 5]:
        assert not is_valid_capability(bad)
    with pytest.raises(LocalProtocolError, match="invalid capability"):
        validate_capability("Bad")


def test_prefixes_and_matching() -> None:
    assert capability_prefixes("a.b.c") == ["a.b.c", "a.b", "a"]
    assert capability_matches("code_generation", "code_generation.python")
    assert capability_matches("a.b", "a.b")
    assert not capability_matches("code", "code_generation")
    assert best_match("text", ["text.stats", "text.echo", "math.eval"]) == "text.echo"
    assert best_match("text.echo", ["text.echo"]) == "text.echo"
    assert best_match("llm", ["math.eval"]) is None


def test_provider_key_is_cidv1_raw_sha256() -> None:
    key = provider_key("main", "math.eval")
    assert key[:4] == b"\x01\x55\x12\x20"
    assert key[4:] == hashlib.sha256(b"llamanet/cap/v1/main/math.eval").digest()
    assert provider_key("main", "a") != provider_key("other", "a")
    text = provider_key_string("main", "math.eval")
    assert text.startswith("b") and text == text.lower()
    from libp2p.bitswap.cid import parse_cid

    assert parse_cid(text).multihash == key[2:]


def test_swarm_names() -> None:
    assert validate_swarm_name("main") == "main"
    with pytest.raises(LocalProtocolError):
        validate_swarm_name("Main")


def test_peer_id_text_roundtrip() -> None:
    text = peer_id_to_text(WORKER.peer_id)
    assert text.startswith("12D3KooW")
    assert peer_id_from_text(text) == WORKER.peer_id
    assert public_key_from_peer_id(WORKER.peer_id) == WORKER.public_key


def test_peer_id_matches_py_libp2p() -> None:
    from libp2p.crypto.ed25519 import create_new_key_pair

    key_pair = create_new_key_pair(b"\x03" * 32)
    from libp2p.peer.id import ID

    assert ID.from_pubkey(key_pair.public_key).to_bytes() == WORKER.peer_id


def test_verify_signature_never_raises() -> None:
    assert not verify_signature(b"x" * 32, b"m", b"y" * 64)
    assert not verify_signature(b"short", b"m", b"y" * 64)
    assert verify_signature(WORKER.public_key, b"m", WORKER.sign(b"m"))
