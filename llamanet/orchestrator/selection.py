"""Ranking candidate peers for a task: a pure function of verified records and
what this node has seen of each peer.

The sort key, lower first:

1. specificity: an exact capability match beats a more specific one (a request for
   ``text`` prefers a generic text skill);
2. expected cost: estimated time (round trip this node measured, else the peer's
   own p50; plus generation time from the matching model's measured speed)
   scaled up by advertised load and down by local reputation;
3. price per 1k tokens;
4. the specialist (fewer capabilities), which keeps work off generalists such as
   bootstrap nodes that serve everything;
5. peer ID, so the order is stable.

Peers nobody has measured count as fast, so new peers get tried; ``explore``
adds a deliberate chance of trying one that this node has never used.  Model
constraints (``name``, ``family``, ``digest``, ``min_ctx``) and a price cap
filter before ranking.  Input is only ever :class:`SignedRecord`: verified.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from llamanet.protocol.capabilities import best_match
from llamanet.protocol.records import ModelInfo, SignedRecord, model_meets

NEUTRAL_REPUTATION: Final = 0.5
"""The prior for a peer the trust layer knows nothing about (scale 0..1)."""
EXPECTED_TOKENS: Final = 256
"""Answer length assumed when turning a model's measured speed into time."""
BASE_MS: Final = 1.0
"""Every task costs at least this, so load and reputation order unmeasured peers."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PeerObservations:
    """What this node knows of peers from its own traffic and its trust layer."""

    rtt_ms: Mapping[bytes, float] = field(default_factory=dict)
    """Median round trip of recent tasks this node sent each peer."""
    reputation: Mapping[bytes, float] = field(default_factory=dict)
    """Local reputation 0..1 (absent: :data:`NEUTRAL_REPUTATION`)."""


@dataclass(frozen=True, slots=True)
class Candidate:
    record: SignedRecord
    capability: str
    """The capability of the record that serves the request."""
    score: tuple[float, ...]
    """The sort key (see the module docstring); lower is better."""
    model: ModelInfo | None = None
    """The peer's model that would serve a model task, if any."""


def rank_candidates(
    records: Iterable[SignedRecord],
    capability: str,
    *,
    exclude: Iterable[bytes] = (),
    model: Mapping[str, Any] | None = None,
    max_price: float | None = None,
    seen: PeerObservations | None = None,
    explore: float = 0.0,
    rng: random.Random | None = None,
) -> list[Candidate]:
    """Candidates able to serve ``capability`` (and ``model``'s constraints, at
    no more than ``max_price``), best first.

    With probability ``explore`` a candidate this node has never measured is moved
    to the front (``rng`` decides, for repeatable tests).
    """
    seen = seen or PeerObservations()
    skip = set(exclude)
    ranked: list[tuple[tuple[float, ...], bytes, Candidate]] = []
    for signed in records:
        rec = signed.record
        if signed.peer in skip or (max_price is not None and rec.price > max_price):
            continue
        match = best_match(capability, rec.caps)
        if match is None:
            continue
        chosen = _model_for(rec.models, model)
        if model and chosen is None:
            continue
        key = (
            float(match.count(".") - capability.count(".")),
            _expected_cost(signed, chosen, seen),
            float(rec.price),
            float(len(rec.caps)),
        )
        ranked.append((key, rec.peer, Candidate(signed, match, key, chosen)))
    ranked.sort(key=lambda item: (item[0], item[1]))
    candidates = [c for _, _, c in ranked]
    if explore > 0 and len(candidates) > 1 and (rng or random).random() < explore:
        fresh = [c for c in candidates[1:] if c.record.peer not in seen.rtt_ms]
        if fresh:
            pick = (rng or random).choice(fresh)
            candidates.remove(pick)
            candidates.insert(0, pick)
    return candidates


def _model_for(
    models: Iterable[ModelInfo], constraints: Mapping[str, Any] | None
) -> ModelInfo | None:
    """The fastest measured model meeting ``constraints`` (unmeasured count as fast)."""
    fitting = [m for m in models if not constraints or model_meets(m, constraints)]
    if not fitting:
        return None
    return min(fitting, key=lambda m: (_generation_ms(m), m.name))


def _generation_ms(model: ModelInfo | None) -> float:
    if model is None or model.tokens_per_s <= 0:
        return 0.0
    return model.ttft_ms + EXPECTED_TOKENS / model.tokens_per_s * 1000


def _expected_cost(signed: SignedRecord, model: ModelInfo | None, seen: PeerObservations) -> float:
    rec = signed.record
    latency = seen.rtt_ms.get(signed.peer, float(rec.perf.get("p50_ms", 0.0)))
    estimate = BASE_MS + latency + _generation_ms(model)
    reputation = min(1.0, max(0.0, seen.reputation.get(signed.peer, NEUTRAL_REPUTATION)))
    return estimate * (1.0 + rec.load) / (0.5 + reputation)
