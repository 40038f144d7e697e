"""Limits and policy for the protocol core, as frozen dataclasses.

Defaults are module constants so docs and tests can refer to them by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from llamanet.protocol.codec import DEFAULT_MAX_FRAME_SIZE

MAX_RECORD_SIZE: Final = 8 * 1024
MAX_RECORD_LIFETIME: Final = 24 * 3600.0
DEFAULT_CLOCK_SKEW: Final = 120.0
DEFAULT_POW_DIFFICULTY: Final = 20
"""About a second of one core per new identity with CPython's sha256 (mean 0.8 s,
~1.3 M hashes/s on this project's machines; ``python -m bench.identity_cost``
measures it).  Test and benchmark swarms set :data:`TEST_POW_DIFFICULTY`."""
TEST_POW_DIFFICULTY: Final = 8
MAX_POW_DIFFICULTY: Final = 40


@dataclass(frozen=True, kw_only=True, slots=True)
class RecordPolicy:
    """What a node accepts as a valid capability record."""

    pow_difficulty: int = DEFAULT_POW_DIFFICULTY
    """Leading zero bits required of sha256(domain ‖ peer ‖ nonce); a swarm setting."""
    max_record_size: int = MAX_RECORD_SIZE
    """Size limit of a sealed record, in bytes."""
    max_lifetime: float = MAX_RECORD_LIFETIME
    """Longest ``exp - iat`` accepted, in seconds."""
    clock_skew: float = DEFAULT_CLOCK_SKEW
    """How far in the future ``iat`` may be before the record is refused, in seconds."""

    def __post_init__(self) -> None:
        if not 0 <= self.pow_difficulty <= MAX_POW_DIFFICULTY:
            raise ValueError(f"pow_difficulty must be in 0..{MAX_POW_DIFFICULTY}")
        if self.max_record_size <= 0 or self.max_lifetime <= 0 or self.clock_skew < 0:
            raise ValueError("record limits must be positive")


@dataclass(frozen=True, kw_only=True, slots=True)
class SessionConfig:
    """Limits of one task stream."""

    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    """Frames with a longer length prefix are refused before their body is read."""

    def __post_init__(self) -> None:
        if self.max_frame_size <= 0:
            raise ValueError("max_frame_size must be positive")
