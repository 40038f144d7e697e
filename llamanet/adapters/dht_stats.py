"""What the DHT's operations cost: counts by outcome, time and lookup depth.

A lookup's *hops* are the length of the longest chain of referrals it followed:
a peer taken from our own routing table is one hop away, a peer that such a peer
named is two, and so on.  Its *queries* are the RPCs it sent.  Both are counted
by :class:`LookupTrace`, which the adapter fills while a lookup runs.
"""

from __future__ import annotations

import bisect
import contextvars
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final

OPERATIONS: Final = ("get_record", "put_record", "find_providers", "provide", "refresh")
OUTCOMES: Final = ("ok", "empty", "timeout", "error")
SECONDS_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
HOPS_BUCKETS: Final = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)


@dataclass(slots=True)
class Histogram:
    """Cumulative buckets as Prometheus exposes them (``le``), plus sum and count."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        for i in range(bisect.bisect_left(self.bounds, value), len(self.bounds)):
            self.counts[i] += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), ending with +Inf."""
        return [*zip(self.bounds, self.counts, strict=True), (float("inf"), self.count)]


@dataclass(slots=True)
class LookupTrace:
    """The walk of one lookup: who was asked, and at what depth."""

    queries: int = 0
    hops: int = 0
    timed_out: bool = False
    _depth: dict[bytes, int] = field(default_factory=dict)

    def queried(self, peer: bytes, named: Iterable[bytes]) -> None:
        """``peer`` answered (or failed to), naming the peers in ``named``."""
        self.queries += 1
        depth = self._depth.get(peer, 0) + 1
        self.hops = max(self.hops, depth)
        for other in named:
            self._depth.setdefault(other, depth)


_current: contextvars.ContextVar[LookupTrace | None] = contextvars.ContextVar(
    "llamanet_dht_lookup_trace", default=None
)


def current_trace() -> LookupTrace | None:
    """The trace of the lookup this task runs in (trio tasks inherit it)."""
    return _current.get()


@contextmanager
def tracing() -> Iterator[LookupTrace]:
    """Trace the lookups made inside the block; an enclosing trace gets the totals
    when the block ends, so each level counts what happened inside it."""
    outer = _current.get()
    trace = LookupTrace()
    token = _current.set(trace)
    try:
        yield trace
    finally:
        _current.reset(token)
        if outer is not None:
            outer.queries += trace.queries
            outer.hops = max(outer.hops, trace.hops)
            outer.timed_out = outer.timed_out or trace.timed_out


@dataclass(slots=True)
class DhtStats:
    """Every DHT operation this node started, since it started."""

    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    seconds: dict[str, Histogram] = field(default_factory=dict)
    hops: dict[str, Histogram] = field(default_factory=dict)
    queries: Counter[str] = field(default_factory=Counter)

    def record(self, op: str, outcome: str, seconds: float, trace: LookupTrace) -> None:
        if op not in OPERATIONS or outcome not in OUTCOMES:
            raise ValueError(f"unknown DHT operation or outcome: {op}, {outcome}")
        self.outcomes[op, outcome] += 1
        self.seconds.setdefault(op, Histogram(SECONDS_BUCKETS)).observe(seconds)
        self.queries[op] += trace.queries
        if trace.queries:
            self.hops.setdefault(op, Histogram(HOPS_BUCKETS)).observe(trace.hops)
