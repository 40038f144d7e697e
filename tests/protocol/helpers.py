"""Shared builders for protocol tests (no sockets)."""

from __future__ import annotations

from typing import Any

from llamanet.protocol.config import RecordPolicy
from llamanet.protocol.pow import solve_pow
from llamanet.protocol.records import CapabilityRecord
from llamanet.trust.keys import Identity

NOW = 1_800_000_000.0
POLICY = RecordPolicy(pow_difficulty=8)


def make_record(identity: Identity, *, now: float = NOW, **overrides: Any) -> CapabilityRecord:
    nonce = solve_pow(identity.peer_id, POLICY.pow_difficulty)
    assert nonce is not None
    fields: dict[str, Any] = {
        "peer": identity.peer_id,
        "seq": int(now * 1000),
        "iat": int(now),
        "exp": int(now) + 3600,
        "caps": ("text.echo", "math.eval"),
        "pow": nonce,
    }
    fields.update(overrides)
    return CapabilityRecord(**fields)
