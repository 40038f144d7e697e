"""Reputation: the pure scoring, the sqlite store, and a crash mid-write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from llamanet.trust.reputation import (
    DEFAULT_HALF_LIFE,
    NEUTRAL,
    Outcome,
    ReputationStore,
    Standing,
    score,
    updated,
)

PEER_A, PEER_B = b"\x00\x24" + b"a" * 36, b"\x00\x24" + b"b" * 36


def test_a_stranger_is_neutral_and_outcomes_move_the_score() -> None:
    assert score(Standing(), 0.0) == NEUTRAL
    good = updated(Standing(), Outcome.SUCCESS, 0.0)
    bad = updated(Standing(), Outcome.FAILURE, 0.0)
    assert score(good, 0.0) > NEUTRAL > score(bad, 0.0)
    # Lying in verification costs more than failing, which costs more than lateness.
    costs = {
        o: score(updated(Standing(), o, 0.0), 0.0)
        for o in (Outcome.DISAGREED, Outcome.TIMEOUT, Outcome.FAILURE, Outcome.LATE)
    }
    assert sorted(costs, key=costs.__getitem__) == [
        Outcome.DISAGREED,
        Outcome.TIMEOUT,
        Outcome.FAILURE,
        Outcome.LATE,
    ]


def test_old_behaviour_fades() -> None:
    bad = Standing()
    for _ in range(10):
        bad = updated(bad, Outcome.FAILURE, 0.0)
    assert score(bad, 0.0) < 0.1
    assert score(bad, 2 * DEFAULT_HALF_LIFE) > score(bad, 0.0)
    assert abs(score(bad, 100 * DEFAULT_HALF_LIFE) - NEUTRAL) < 1e-6


@given(st.lists(st.sampled_from(list(Outcome)), max_size=50), st.floats(0, 1e7))
def test_the_score_stays_in_range(outcomes: list[Outcome], later: float) -> None:
    standing, now = Standing(), 0.0
    for outcome in outcomes:
        standing = updated(standing, outcome, now)
        now += 60.0
    assert 0.0 < score(standing, now + later) < 1.0


def test_the_store_keeps_scores_per_peer_and_capability(tmp_path: Path) -> None:
    path = tmp_path / "reputation.sqlite"
    store = ReputationStore(path)
    store.record(PEER_A, "math.eval", Outcome.SUCCESS, 100.0)
    store.record(PEER_A, "llm.chat", Outcome.DISAGREED, 100.0)
    assert store.score(PEER_A, "math.eval", 100.0) > NEUTRAL
    assert store.score(PEER_A, "llm.chat", 100.0) < NEUTRAL
    assert store.score(PEER_B, "math.eval", 100.0) == NEUTRAL
    assert store.overall(PEER_A, 100.0) < NEUTRAL  # a lie outweighs a success
    store.close()
    again = ReputationStore(path)  # a restart
    assert again.score(PEER_A, "llm.chat", 100.0) < NEUTRAL
    assert again.check() == "ok"
    again.close()


WRITER = """
import sys
from pathlib import Path
from llamanet.trust.reputation import Outcome, ReputationStore
store = ReputationStore(Path(sys.argv[1]))
print("ready", flush=True)
i = 0
while True:
    store.record(bytes([0, 36]) + i.to_bytes(36, "big"), "x.y", Outcome.SUCCESS, float(i))
    i += 1
"""


def test_a_kill_mid_write_leaves_a_sound_store(tmp_path: Path) -> None:
    path = tmp_path / "reputation.sqlite"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        time.sleep(0.5)  # thousands of commits under way
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=10)
    finally:
        if writer.poll() is None:
            writer.kill()
        if writer.stdout is not None:
            writer.stdout.close()
    store = ReputationStore(path)
    assert store.check() == "ok"
    count = store._db.execute("SELECT count(*) FROM reputation").fetchone()[0]
    assert count > 100
    store.record(PEER_A, "x.y", Outcome.SUCCESS, 1.0)  # and it still takes writes
    store.close()
