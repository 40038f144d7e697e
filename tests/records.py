"""Signed records made to order for tests: valid, stale, expired, future-dated,
with or without enough proof-of-work, and tampered ones."""

from __future__ import annotations

import time

from llamanet.protocol.config import TEST_POW_DIFFICULTY
from llamanet.protocol.pow import solve_pow
from llamanet.protocol.records import CapabilityRecord, seal_record
from llamanet.trust.keys import Identity


def envelope_for(
    identity: Identity,
    *,
    seq: int,
    iat: float | None = None,
    lifetime: float = 3600,
    pow: bytes | None = None,
) -> bytes:
    """A record of ``identity`` sealed by it; ``pow`` defaults to a nonce with the
    test swarm's difficulty."""
    now = time.time() if iat is None else iat
    if pow is None:
        pow = solve_pow(identity.peer_id, TEST_POW_DIFFICULTY) or b""
    record = CapabilityRecord(
        peer=identity.peer_id,
        seq=seq,
        iat=int(now),
        exp=int(now + lifetime),
        caps=("text.stats",),
        pow=pow,
    )
    return seal_record(record, identity)


def tamper(envelope: bytes) -> bytes:
    """``envelope`` with one bit flipped inside the signed payload."""
    data = bytearray(envelope)
    data[len(data) // 2] ^= 0x01
    return bytes(data)
