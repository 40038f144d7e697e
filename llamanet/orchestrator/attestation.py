"""Model attestation by spot checks.

Peers that claim the same model digest should answer a seeded, greedy prompt with
the same text.  A spot check sends one canary prompt (the same for all, with a
fixed seed and temperature 0) to the peers claiming a digest, takes the majority
answer as the model's, and flags the peers whose answer differs.

What this proves: a flagged peer is not running that model with the same
weights and sampling as the majority, or is not running it faithfully.  What it
does not: a peer that detects canaries (they are ordinary prompts, but a peer
could recognise them) can answer them honestly and cheat otherwise; a majority of
colluding liars defines the "truth"; and different builds or hardware can change
greedy output slightly for the same weights (false flags are possible, which is
why a flag costs reputation rather than a ban).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

CANARY_TOKENS: Final = 16
CANARY_SEED: Final = 1234
MIN_CLAIMANTS: Final = 3
"""Fewer claimants than this cannot outvote a liar: such digests are not checked."""
_TOPICS: Final = (
    "the history of the printing press",
    "how bridges carry load",
    "the water cycle",
    "why the sky is blue",
    "how vaccines train the immune system",
    "the rules of chess",
)


def canary_prompt(digest: str, round_number: int) -> str:
    """A canary for ``digest`` in a given round: deterministic, so every peer gets
    the same one, and different from round to round."""
    index = int.from_bytes(hashlib.sha256(f"{digest}:{round_number}".encode()).digest()[:4], "big")
    return f"Write one sentence about {_TOPICS[index % len(_TOPICS)]}."


@dataclass(kw_only=True, slots=True)
class SpotCheck:
    digest: str
    prompt: str
    answers: dict[str, str] = field(default_factory=dict)
    """Peer (text) -> its normalized answer."""
    majority: str | None = None
    flagged: list[str] = field(default_factory=list)
    agreeing: list[str] = field(default_factory=list)


def next_digest_to_check(
    claims: Iterable[tuple[bytes, str]], last_checked: Mapping[str, float]
) -> str | None:
    """The digest a scheduled spot check should look at: among those claimed by at
    least :data:`MIN_CLAIMANTS` distinct peers (``claims`` holds (peer, digest)
    pairs), the one checked longest ago (never checked first; ties by name)."""
    claimants: dict[str, set[bytes]] = {}
    for peer, digest in claims:
        claimants.setdefault(digest, set()).add(peer)
    eligible = [d for d, peers in claimants.items() if len(peers) >= MIN_CLAIMANTS]
    if not eligible:
        return None
    return min(eligible, key=lambda d: (last_checked.get(d, -float("inf")), d))
