"""Rate limits as pure data structures: callers pass ``now`` and act on the answer."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` tokens per second."""

    capacity: float
    rate: float
    tokens: float = field(default=-1.0)
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        if self.capacity <= 0 or self.rate <= 0:
            raise ValueError("capacity and rate must be positive")
        if self.tokens < 0:
            self.tokens = self.capacity
        self.tokens = min(self.tokens, self.capacity)

    def _refill(self, now: float) -> None:
        if now > self.updated_at:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated_at) * self.rate)
        self.updated_at = max(self.updated_at, now)

    def try_take(self, now: float, amount: float = 1.0) -> bool:
        """Take ``amount`` tokens if available."""
        self._refill(now)
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False

    def wait_time(self, now: float, amount: float = 1.0) -> float:
        """Seconds until ``amount`` tokens will be available (0 if they are now)."""
        self._refill(now)
        missing = amount - self.tokens
        return max(0.0, missing / self.rate)


MAX_TRACKED_PEERS = 4096
"""Peers whose buckets are remembered; the least recently seen are forgotten (a
forgotten peer starts again with a full bucket, which only helps an honest one)."""


class PeerBuckets:
    """One :class:`TokenBucket` per peer (``burst`` tokens, ``rate`` per second),
    bounded in the number of peers tracked."""

    def __init__(self, rate: float, burst: float, *, max_peers: int = MAX_TRACKED_PEERS) -> None:
        if max_peers <= 0:
            raise ValueError("max_peers must be positive")
        TokenBucket(burst, rate)  # the same checks, once, at construction
        self.rate = rate
        self.burst = burst
        self.max_peers = max_peers
        self._buckets: OrderedDict[bytes, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def try_take(self, peer: bytes, now: float) -> float:
        """Take a token for ``peer``: 0.0 if it had one, else the seconds to wait."""
        bucket = self._buckets.pop(peer, None) or TokenBucket(self.burst, self.rate)
        self._buckets[peer] = bucket  # most recent last
        while len(self._buckets) > self.max_peers:
            self._buckets.popitem(last=False)
        if bucket.try_take(now):
            return 0.0
        return max(bucket.wait_time(now), 1e-3)
