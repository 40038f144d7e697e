"""Rate limits as pure data structures: callers pass ``now`` and act on the answer."""

from __future__ import annotations

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
