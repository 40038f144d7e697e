"""Ranking candidate peers for a task: a pure function of verified records.

This is the foundation's ranking (specificity, load, measured latency); the
orchestration issue extends it with model constraints, reputation, price and
exploration.  It never sees an unverified peer: input is :class:`SignedRecord`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from llamanet.protocol.capabilities import best_match
from llamanet.protocol.records import SignedRecord


@dataclass(frozen=True, slots=True)
class Candidate:
    record: SignedRecord
    capability: str
    """The capability of the record that serves the request."""
    score: tuple[float, ...]
    """The sort key: (specificity, load, p50 ms, number of capabilities); lower is better."""


def rank_candidates(
    records: Iterable[SignedRecord],
    capability: str,
    *,
    exclude: Iterable[bytes] = (),
) -> list[Candidate]:
    """Candidates able to serve ``capability``, best first.

    An exact capability match beats a more specific one (a request for
    ``text`` prefers a generic text skill); then lower advertised load; then lower
    self-measured p50 latency; then the specialist (a peer advertising fewer
    capabilities), which keeps work off generalists such as bootstrap nodes that
    serve everything; remaining ties are broken by peer ID so the order is stable.
    """
    skip = set(exclude)
    ranked: list[tuple[tuple[float, ...], bytes, Candidate]] = []
    for signed in records:
        if signed.peer in skip:
            continue
        rec = signed.record
        match = best_match(capability, rec.caps)
        if match is None:
            continue
        specificity = match.count(".") - capability.count(".")
        p50 = float(rec.perf.get("p50_ms", 0.0))
        key = (float(specificity), rec.load, p50, float(len(rec.caps)))
        ranked.append((key, rec.peer, Candidate(signed, match, key)))
    ranked.sort(key=lambda item: (item[0], item[1]))
    return [c for _, _, c in ranked]
