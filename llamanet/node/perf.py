"""How fast this node's models are, measured on its own traffic.

For each model (keyed by digest, or name when the server gives no digest) the worker
records time to first token and decode speed of recent tasks; the record advertises
their medians, per model and for the node.  :func:`drifted` decides when those
figures (or the load) have moved enough since the last published record to be
worth a republish.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

SAMPLES: Final = 64
DRIFT_RATIO: Final = 0.25
"""A figure that moved by more than this fraction of its published value has drifted."""
LOAD_DRIFT: Final = 0.25
"""Load is 0..1: an absolute move this large has drifted."""


def percentile(samples: Iterable[float], pct: float) -> float:
    """The nearest-rank ``pct`` percentile of ``samples`` (not empty)."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))
    return ordered[index]


@dataclass(slots=True)
class ModelSpeed:
    """Recent samples for one model."""

    ttft: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES))
    rates: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES))

    def observe(self, *, ttft: float | None, tokens: float, started: float, ended: float) -> None:
        """One finished generation: ``ttft`` seconds to its first token (``None``
        when nothing streamed), ``tokens`` generated between ``started`` and ``ended``."""
        if ttft is not None:
            self.ttft.append(ttft)
        if tokens <= 0:
            return
        if ttft is not None and tokens > 1 and ended - started - ttft > 0:
            # Decode speed: the first token's time is prompt processing, not decoding.
            self.rates.append((tokens - 1) / (ended - started - ttft))
        elif ended > started:
            self.rates.append(tokens / (ended - started))

    def ttft_ms(self) -> float:
        return round(statistics.median(self.ttft) * 1000, 3) if self.ttft else 0.0

    def tokens_per_s(self) -> float:
        return round(statistics.median(self.rates), 3) if self.rates else 0.0


class SpeedBook:
    """:class:`ModelSpeed` per model key."""

    def __init__(self) -> None:
        self.models: dict[str, ModelSpeed] = {}

    def observe(
        self, key: str, *, ttft: float | None, tokens: float, started: float, ended: float
    ) -> None:
        speed = self.models.setdefault(key, ModelSpeed())
        speed.observe(ttft=ttft, tokens=tokens, started=started, ended=ended)

    def get(self, key: str) -> ModelSpeed | None:
        return self.models.get(key)

    def summary(self) -> dict[str, float]:
        """The node's figures: medians over every model's recent samples."""
        ttft = [s for m in self.models.values() for s in m.ttft]
        rates = [r for m in self.models.values() for r in m.rates]
        out: dict[str, float] = {}
        if ttft:
            out["ttft_ms"] = round(statistics.median(ttft) * 1000, 3)
        if rates:
            out["tokens_per_s"] = round(statistics.median(rates), 3)
        return out


def drifted(
    published: Mapping[str, float],
    current: Mapping[str, float],
    *,
    ratio: float = DRIFT_RATIO,
) -> list[str]:
    """Names of the figures in ``current`` that appeared, vanished or moved by more
    than ``ratio`` of their value in ``published`` (``load`` by ``LOAD_DRIFT``
    absolute)."""
    moved = []
    for name in sorted(set(published) | set(current)):
        old, new = published.get(name), current.get(name)
        if old is None or new is None:
            if (old or 0) != (new or 0):
                moved.append(name)
        elif name == "load":
            if abs(new - old) >= LOAD_DRIFT:
                moved.append(name)
        elif abs(new - old) > ratio * max(abs(old), 1e-9):
            moved.append(name)
    return moved
