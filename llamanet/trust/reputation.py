"""Local reputation: what this node has seen of each peer, per capability.

Each outcome adds weight to a peer's good or bad side; both sides fade with a
half-life, so old behaviour counts less than recent.  The score is the mean of a
Beta distribution over those weights with a uniform prior: 0.5 for a stranger,
towards 1 for a peer that keeps delivering, towards 0 for one that fails, times
out, comes late or disagrees with its peers in verification.  :func:`updated` and
:func:`score` are pure; :class:`ReputationStore` keeps the state in sqlite (WAL
mode) under the node's home, so it survives restarts, and a crash mid-write
loses at most that write.
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

DEFAULT_HALF_LIFE: Final = 7 * 24 * 3600.0
NEUTRAL: Final = 0.5


class Outcome(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    TIMEOUT = "timeout"
    LATE = "late"
    """Answered, but well past the time it promised (a market bid's estimate)."""
    AGREED = "agreed"
    DISAGREED = "disagreed"
    """Answered differently from the quorum in a verification or spot check."""


# (good, bad) weight of each outcome: lying costs more than failing.
WEIGHTS: Final[dict[Outcome, tuple[float, float]]] = {
    Outcome.SUCCESS: (1.0, 0.0),
    Outcome.FAILURE: (0.0, 1.0),
    Outcome.TIMEOUT: (0.0, 1.5),
    Outcome.LATE: (0.0, 0.5),
    Outcome.AGREED: (1.0, 0.0),
    Outcome.DISAGREED: (0.0, 4.0),
}


@dataclass(frozen=True, slots=True)
class Standing:
    good: float = 0.0
    bad: float = 0.0
    updated: float = 0.0


def decayed(standing: Standing, now: float, half_life: float = DEFAULT_HALF_LIFE) -> Standing:
    """``standing`` faded to ``now``."""
    age = max(0.0, now - standing.updated)
    factor = 0.5 ** (age / half_life)
    return Standing(standing.good * factor, standing.bad * factor, max(now, standing.updated))


def updated(
    standing: Standing, outcome: Outcome, now: float, half_life: float = DEFAULT_HALF_LIFE
) -> Standing:
    """``standing`` after ``outcome`` at ``now``."""
    current = decayed(standing, now, half_life)
    good, bad = WEIGHTS[outcome]
    return Standing(current.good + good, current.bad + bad, current.updated)


def score(standing: Standing, now: float, half_life: float = DEFAULT_HALF_LIFE) -> float:
    """0..1; :data:`NEUTRAL` with nothing known."""
    current = decayed(standing, now, half_life)
    return (current.good + 1.0) / (current.good + current.bad + 2.0)


class ReputationStore:
    """Standings per (peer, capability) in a sqlite file."""

    def __init__(self, path: Path | None, *, half_life: float = DEFAULT_HALF_LIFE) -> None:
        self.half_life = half_life
        self.path = path
        target = ":memory:" if path is None else str(path)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit is atomic and survives a process crash; only a
        # power loss may drop the last commits (reputation can afford that).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS reputation ("
            " peer BLOB NOT NULL, capability TEXT NOT NULL,"
            " good REAL NOT NULL, bad REAL NOT NULL, updated REAL NOT NULL,"
            " PRIMARY KEY (peer, capability))"
        )

    def close(self) -> None:
        self._db.close()

    def standing(self, peer: bytes, capability: str) -> Standing:
        row = self._db.execute(
            "SELECT good, bad, updated FROM reputation WHERE peer = ? AND capability = ?",
            (peer, capability),
        ).fetchone()
        return Standing(*row) if row else Standing()

    def record(self, peer: bytes, capability: str, outcome: Outcome, now: float) -> float:
        """Note ``outcome``; returns the new score."""
        with self._transaction():
            new = updated(self.standing(peer, capability), outcome, now, self.half_life)
            self._db.execute(
                "INSERT INTO reputation (peer, capability, good, bad, updated)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (peer, capability) DO UPDATE SET"
                " good = excluded.good, bad = excluded.bad, updated = excluded.updated",
                (peer, capability, new.good, new.bad, new.updated),
            )
        return score(new, now, self.half_life)

    def score(self, peer: bytes, capability: str, now: float) -> float:
        return score(self.standing(peer, capability), now, self.half_life)

    def scores(self, peers: Iterable[bytes], capability: str, now: float) -> dict[bytes, float]:
        return {peer: self.score(peer, capability, now) for peer in peers}

    def overall(self, peer: bytes, now: float) -> float:
        """A peer's score over all capabilities (for listings)."""
        rows = self._db.execute(
            "SELECT good, bad, updated FROM reputation WHERE peer = ?", (peer,)
        ).fetchall()
        good = bad = 0.0
        for row in rows:
            current = decayed(Standing(*row), now, self.half_life)
            good, bad = good + current.good, bad + current.bad
        return (good + 1.0) / (good + bad + 2.0)

    def check(self) -> str:
        """sqlite's own integrity check ("ok" when the file is sound)."""
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> None:
            self.db.execute("BEGIN IMMEDIATE")

        def __exit__(self, kind: object, *rest: object) -> None:
            self.db.execute("ROLLBACK" if kind else "COMMIT")

    def _transaction(self) -> ReputationStore._Tx:
        return ReputationStore._Tx(self._db)
