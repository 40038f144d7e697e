"""simnet's attacking groups in fast mode: forged records are refused by the real
validators, a task flood is held to the victim's per-peer limit, and the honest
workload goes on."""

from __future__ import annotations

from pathlib import Path

import pytest

from simnet.fast import run_fast
from simnet.metrics import summarize
from simnet.scenario import load_scenario

SCENARIOS = Path(__file__).parents[2] / "simnet" / "scenarios"

pytestmark = pytest.mark.timeout(300)


def test_forgers_and_flooders_do_not_stop_the_honest_workload() -> None:
    scenario = load_scenario(SCENARIOS / "attacks.toml").with_overrides(duration=6.0, settle=5.0)
    log = run_fast(scenario)
    summary = summarize(log)
    forged = [a for a in log.attacks if a.kind.startswith("forge.")]
    assert len(forged) >= 6
    assert {a.kind for a in forged} >= {"forge.peer_mismatch", "forge.higher_seq_tampered"}
    assert not [a for a in forged if a.outcome == "kept"]
    assert summary["attacks"]["forged_records_refused"] == 1.0
    rejected = summary["attacks"]["records_rejected_by_honest_nodes"]
    assert rejected.get("peer_mismatch", 0) >= 1 and rejected.get("bad_signature", 0) >= 1
    flood = [a for a in log.attacks if a.kind == "flood"]
    overloaded = sum(a.outcome == "overloaded" for a in flood)
    # The victim runs at most 8 of one requester's tasks at once: most are refused.
    assert len(flood) >= 200 and overloaded > len(flood) / 2
    assert summary["tasks"]["count"] >= 8
    assert summary["tasks"]["success_rate"] >= scenario.workload.min_success
