"""simnet's real mode in the suite: real llamanet nodes in worker processes on
127.0.0.1 (mDNS off), shortened versions of the shipped scenarios."""

from __future__ import annotations

from pathlib import Path

import pytest

from simnet.__main__ import scaled
from simnet.runner import NODES_PER_PROCESS, _shares, run_processes
from simnet.scenario import bootstrap_indices, load_scenario
from simnet.swarm import peer_text

SCENARIOS = Path(__file__).parents[2] / "simnet" / "scenarios"

pytestmark = pytest.mark.timeout(300)


def test_a_large_swarm_leaves_the_requesters_process_to_them_and_the_bootstrap_nodes() -> None:
    scenario = scaled(load_scenario(SCENARIOS / "scale.toml"), 200)
    shares = _shares(scenario, NODES_PER_PROCESS)
    assert shares[0] == [0, *bootstrap_indices(scenario)]
    assert len(shares) == 5 and all(len(s) <= NODES_PER_PROCESS for s in shares)
    assert sorted(i for s in shares for i in s) == list(range(200))
    # Round-robin: a ramp (which starts nodes in index order) loads them alike.
    assert {len(s) for s in shares[1:]} <= {47, 48}
    assert all(s == sorted(s) and s[1] - s[0] == 4 for s in shares[1:])
    # A swarm that fits in one process keeps one.
    small = load_scenario(SCENARIOS / "small.toml")
    assert _shares(small, NODES_PER_PROCESS) == [list(range(10))]


def test_ten_nodes_in_three_processes_answer_checkable_questions(tmp_path: Path) -> None:
    scenario = load_scenario(SCENARIOS / "small.toml").with_overrides(duration=8.0, settle=15.0)
    assert scenario.nodes == 10
    # Four nodes a process: the requester and the bootstrap node in one, the
    # others in two more, as a large swarm is laid out.
    log = run_processes(scenario, "real", logs=tmp_path, per_process=4)
    assert len(list(tmp_path.glob("worker-*.log"))) == 3
    assert len(log.tasks) >= 10
    ok = [t for t in log.tasks if t.ok]
    assert len(ok) / len(log.tasks) >= 0.95
    # Profiles answer right 90% of the time in their domain: accuracy is measured.
    assert 0.6 <= sum(bool(t.correct) for t in ok) / len(ok) <= 1.0
    assert {t.group for t in ok} == {"math", "code"}
    found = {(d.node, d.capability) for d in log.discovery}
    assert len(found) == log.expected_discoveries == 20
    assert log.lookups and all(x.latency >= 0 for x in log.lookups)
    # Lookups start from every process's nodes, and the run waits for them all.
    head = {peer_text(scenario.seed, i) for i in (0, *bootstrap_indices(scenario))}
    origins = {x.origin for x in log.lookups}
    assert origins & head and origins - head
    assert log.reputation and log.peak_rss_mb > 0
    assert any("simulation" in note for note in log.notes)


def test_under_churn_tasks_still_succeed(tmp_path: Path) -> None:
    scenario = load_scenario(SCENARIOS / "churn.toml").with_overrides(duration=20.0, settle=15.0)
    log = run_processes(scenario, "real", logs=tmp_path)
    assert len(log.churn) >= 3
    assert {c.kind for c in log.churn} >= {"leave", "crash"}
    assert len(log.tasks) >= 30
    success = sum(t.ok for t in log.tasks) / len(log.tasks)
    assert scenario.workload.min_success is not None
    assert success >= scenario.workload.min_success, [t.error for t in log.tasks if not t.ok]


def test_with_a_fifth_of_liars_verified_tasks_stay_correct(tmp_path: Path) -> None:
    scenario = load_scenario(SCENARIOS / "liars.toml").with_overrides(duration=12.0, settle=15.0)
    log = run_processes(scenario, "real", logs=tmp_path)
    ok = [t for t in log.tasks if t.ok]
    assert len(ok) >= 0.95 * len(log.tasks) and len(ok) >= 10
    assert all(t.verify == 3 and t.correct for t in ok)
    last = max(s.at for s in log.reputation)
    final = [s for s in log.reputation if s.at == last]
    liars = [s.score for s in final if s.liar]
    honest = [s.score for s in final if not s.liar]
    # A liar is found out whenever it is asked (exploration picks it now and
    # then; which tasks it lands on is up to chance in real mode): then it drops
    # below neutral, while no honest peer does.
    assert all(score < 0.5 for score in liars if score != 0.5)
    assert min(honest) >= 0.5
