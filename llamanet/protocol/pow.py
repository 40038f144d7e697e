"""Proof-of-work that makes identities cost CPU.

A record's ``pow`` nonce is valid for peer ``P`` at difficulty ``d`` when
``sha256("llamanet/pow/v1" ‖ P ‖ nonce)`` starts with at least ``d`` zero bits.
The nonce depends only on the peer ID, so it is found once per identity and
difficulty, then reused in every record the peer signs.
"""

from __future__ import annotations

import hashlib
from typing import Final

POW_DOMAIN: Final = b"llamanet/pow/v1"
NONCE_LENGTH: Final = 8


def leading_zero_bits(digest: bytes) -> int:
    """Number of leading zero bits of ``digest``."""
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def pow_digest(peer_id: bytes, nonce: bytes) -> bytes:
    return hashlib.sha256(POW_DOMAIN + peer_id + nonce).digest()


def check_pow(peer_id: bytes, nonce: bytes, difficulty: int) -> bool:
    """True when ``nonce`` proves ``difficulty`` bits of work for ``peer_id``."""
    if difficulty <= 0:
        return True
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_LENGTH:
        return False
    return leading_zero_bits(pow_digest(peer_id, nonce)) >= difficulty


def solve_pow(
    peer_id: bytes, difficulty: int, *, start: int = 0, limit: int | None = None
) -> bytes | None:
    """Search nonces ``start, start+1, ...`` for one meeting ``difficulty``.

    Returns the nonce, or ``None`` if ``limit`` nonces were tried without success
    (callers that must stay responsive search in slices).
    """
    prefix = hashlib.sha256(POW_DOMAIN + peer_id)
    threshold = 1 << (256 - difficulty) if difficulty > 0 else 1 << 256
    counter = start
    end = None if limit is None else start + limit
    while end is None or counter < end:
        nonce = counter.to_bytes(NONCE_LENGTH, "big")
        h = prefix.copy()
        h.update(nonce)
        if int.from_bytes(h.digest(), "big") < threshold:
            return nonce
        counter += 1
    return None
