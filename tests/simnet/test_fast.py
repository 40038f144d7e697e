"""simnet's fast mode in the suite: every node in this process under MockClock
over the in-memory transport."""

from __future__ import annotations

from pathlib import Path

import pytest

from simnet.__main__ import scaled
from simnet.fast import run_fast
from simnet.metrics import summarize
from simnet.scenario import arrivals, load_scenario

SCENARIOS = Path(__file__).parents[2] / "simnet" / "scenarios"

pytestmark = pytest.mark.timeout(300)


def test_fifty_nodes_in_simulated_time() -> None:
    scenario = load_scenario(SCENARIOS / "small.toml").with_overrides(
        mode="fast", duration=5.0, settle=5.0
    )
    scenario = scaled(scenario, 50)
    assert scenario.nodes == 50
    log = run_fast(scenario)
    summary = summarize(log)
    assert summary["tasks"]["count"] >= 8
    assert summary["tasks"]["success_rate"] >= 0.95
    assert summary["discovery"]["converged_fraction"] == 1.0
    # Simulated seconds: the workload's 5 s, and the report says how much traffic
    # the whole run took.
    assert log.duration == 5.0
    assert any("bytes per task" in note for note in log.notes)
    # ...and that its transport is plaintext, unlike a real node's.
    assert any("plaintext" in note and "Noise" in note for note in log.notes)


def test_the_same_seed_gives_the_same_answers() -> None:
    scenario = load_scenario(SCENARIOS / "small.toml").with_overrides(
        mode="fast", duration=3.0, settle=3.0
    )
    first, second = run_fast(scenario), run_fast(scenario)

    def outcome(log: object) -> list[tuple[object, ...]]:
        return [
            (round(t.submitted, 6), t.capability, t.peer, t.ok, t.correct)
            for t in log.tasks  # type: ignore[attr-defined]
        ]

    assert outcome(first) == outcome(second)
    # Every arrival the seed draws is a task in the log (which is in finishing order).
    submitted = sorted(first.tasks, key=lambda t: t.submitted)
    assert [t.capability for t in submitted] == [a.capability for a in arrivals(scenario)]
    other = run_fast(scenario.with_overrides(seed=scenario.seed + 1))
    assert outcome(other) != outcome(first)
