"""Which peers to ping when, and when a silent peer counts as gone.

A pure table (callers pass ``now``): a watched peer is pinged every
``interval``; a failed ping makes it *suspect* and it is pinged again after
``suspect_interval``; ``max_failures`` failures in a row and it is gone.  With
the defaults a peer that stops answering is declared gone 5-13 s after its last
good ping (interval + up to three timeouts and two short retries).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

DEFAULT_INTERVAL: Final = 5.0
DEFAULT_TIMEOUT: Final = 2.0
DEFAULT_SUSPECT_INTERVAL: Final = 1.0
DEFAULT_MAX_FAILURES: Final = 3


@dataclass(frozen=True, kw_only=True, slots=True)
class LivenessConfig:
    interval: float = DEFAULT_INTERVAL
    """Seconds between pings of a healthy peer."""
    timeout: float = DEFAULT_TIMEOUT
    """Seconds a ping may take before it counts as failed."""
    suspect_interval: float = DEFAULT_SUSPECT_INTERVAL
    """Seconds before re-pinging a peer whose last ping failed."""
    max_failures: int = DEFAULT_MAX_FAILURES
    """Consecutive failures after which a peer is gone."""

    def __post_init__(self) -> None:
        finite = all(
            math.isfinite(v) and v > 0 for v in (self.interval, self.timeout, self.suspect_interval)
        )
        if not finite or not isinstance(self.max_failures, int) or self.max_failures < 1:
            raise ValueError("liveness intervals must be finite and positive, max_failures >= 1")

    @property
    def worst_detection_time(self) -> float:
        """Longest time from a peer's last answered ping to it being declared gone."""
        return (
            self.interval
            + self.max_failures * self.timeout
            + (self.max_failures - 1) * self.suspect_interval
        )


@dataclass
class _Watch:
    next_ping_at: float
    failures: int = 0


class LivenessTable:
    def __init__(self, config: LivenessConfig | None = None) -> None:
        self.config = config or LivenessConfig()
        self._peers: dict[bytes, _Watch] = {}

    def __contains__(self, peer: object) -> bool:
        return peer in self._peers

    def __len__(self) -> int:
        return len(self._peers)

    def watch(self, peer: bytes, now: float) -> None:
        """Start (or restart) watching ``peer``, which was just seen alive."""
        self._peers[peer] = _Watch(next_ping_at=now + self.config.interval)

    def unwatch(self, peer: bytes) -> None:
        self._peers.pop(peer, None)

    def is_suspect(self, peer: bytes) -> bool:
        watch = self._peers.get(peer)
        return watch is not None and watch.failures > 0

    def due(self, now: float) -> list[bytes]:
        """Peers to ping now; each is not due again until its ping is reported."""
        peers = [p for p, w in self._peers.items() if w.next_ping_at <= now]
        for peer in peers:
            self._peers[peer].next_ping_at = float("inf")
        return peers

    def next_due_at(self) -> float | None:
        times = [w.next_ping_at for w in self._peers.values()]
        return min(times) if times else None

    def ping_succeeded(self, peer: bytes, now: float) -> None:
        if peer in self._peers:
            self.watch(peer, now)

    def ping_failed(self, peer: bytes, now: float) -> bool:
        """Record a failed ping; ``True`` when the peer is now gone (and unwatched)."""
        watch = self._peers.get(peer)
        if watch is None:
            return False
        watch.failures += 1
        if watch.failures >= self.config.max_failures:
            del self._peers[peer]
            return True
        watch.next_ping_at = now + self.config.suspect_interval
        return False
