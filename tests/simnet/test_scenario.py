"""Scenario files: what parses, what is refused (every problem at once), and the
facts derived from the seed."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from simnet.scenario import (
    ScenarioError,
    arrivals,
    bootstrap_indices,
    bootstraps_of,
    churn_schedule,
    load_scenario,
    node_seed,
    parse_scenario,
    placements,
)

SHIPPED = sorted((Path(__file__).parents[2] / "simnet" / "scenarios").glob("*.toml"))

MINIMAL = """
name = "t"
[profiles.p]
accuracy = 0.5
[[groups]]
name = "g"
count = 3
profile = "p"
capabilities = ["sim.math"]
[workload]
mix = { "sim.math" = 1.0 }
"""


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_scenario_parses(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.nodes == scenario.requesters + sum(g.count for g in scenario.groups)


def test_a_minimal_scenario_has_defaults() -> None:
    scenario = parse_scenario(tomllib.loads(MINIMAL), source="t.toml")
    assert (scenario.mode, scenario.seed, scenario.requesters, scenario.nodes) == ("fast", 1, 1, 4)
    assert [p.group.name if p.group else None for p in placements(scenario)] == [
        None, "g", "g", "g"
    ]  # fmt: skip


def test_groups_are_interleaved_so_a_ramp_brings_a_mix() -> None:
    data = tomllib.loads(MINIMAL)
    data["groups"][0]["count"] = 6
    data["groups"].append({**data["groups"][0], "name": "h", "count": 3})
    data["groups"].append({**data["groups"][0], "name": "x", "count": 1})
    scenario = parse_scenario(data, source="t.toml")
    names = [p.group.name if p.group else None for p in placements(scenario)]
    assert names == [None, "g", "h", "g", "g", "h", "x", "g", "g", "h", "g"]
    assert [p.index for p in placements(scenario)] == list(range(11))


def test_joins_spread_over_the_bootstrap_peers() -> None:
    data = tomllib.loads(MINIMAL)
    data["groups"][0]["count"] = 12
    data["node"] = {"bootstrap_nodes": 4}
    scenario = parse_scenario(data, source="t.toml")
    assert bootstrap_indices(scenario) == (1, 2, 3, 4)
    # Each bootstrap peer dials only those started before it ...
    assert [bootstraps_of(scenario, i) for i in (1, 2, 3, 4)] == [(), (1,), (1, 2), (2, 3)]
    # ... and every other node two of them, each taking a share of the joins.
    dialled = [b for i in range(5, 13) for b in bootstraps_of(scenario, i)]
    assert all(len(bootstraps_of(scenario, i)) == 2 for i in range(5, 13))
    assert {b: dialled.count(b) for b in (1, 2, 3, 4)} == {1: 4, 2: 4, 3: 4, 4: 4}
    # The requesters too: one bootstrap peer is the default.
    single = parse_scenario(tomllib.loads(MINIMAL), source="t.toml")
    assert [bootstraps_of(single, i) for i in range(4)] == [(1,), (), (1,), (1,)]


def test_every_problem_is_reported_with_where_it_is() -> None:
    data = tomllib.loads(MINIMAL)
    data["bogus"] = 1
    data["mode"] = "warp"
    data["groups"][0] |= {"profile": "nope", "behaviour": "evil", "count": 0}
    data["workload"] |= {"mix": {"sim.code": 1.0}, "verify": 0, "strategy": "magic"}
    data["ramp"] = -1
    data["network"] = {"connection_budget": 2}
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data, source="bad.toml")
    text = str(info.value)
    assert text.startswith("bad.toml:")
    for expected in (
        "unknown key 'bogus'",
        "mode must be one of fast, real, lan",
        "groups[0].profile: no profile 'nope'",
        "groups[0].behaviour must be one of",
        "groups[0].count must be at least 1",
        "workload.verify must be at least 1",
        "workload.strategy must be one of",
        "workload.mix.sim.code: no group offers 'sim.code'",
        "ramp must be zero or a positive number of seconds",
        "network.connection_budget: at least 3 connections",
    ):
        assert expected in text


def test_a_composite_workload_needs_what_its_strategy_asks_for() -> None:
    data = tomllib.loads(MINIMAL)
    data["workload"] = {"mix": {"sim.composite": 1.0}, "strategy": "decompose"}
    with pytest.raises(ScenarioError, match=r"no group offers 'sim\.code'"):
        parse_scenario(data, source="x")


def test_overrides_are_checked_like_the_file() -> None:
    scenario = parse_scenario(tomllib.loads(MINIMAL), source="x")
    assert scenario.with_overrides(ramp=30.0).ramp == 30.0
    assert scenario.with_overrides(ramp=None) == scenario
    with pytest.raises(ScenarioError, match="ramp must be zero or a positive"):
        scenario.with_overrides(ramp=-1.0)
    with pytest.raises(ScenarioError, match="duration must be a positive"):
        scenario.with_overrides(duration=0.0)


def test_a_toml_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("name = \n")
    with pytest.raises(ScenarioError, match=r"broken\.toml"):
        load_scenario(path)


def test_the_seed_fixes_the_arrivals() -> None:
    scale = load_scenario(next(p for p in SHIPPED if p.stem == "scale"))
    tasks = arrivals(scale)
    assert tasks == arrivals(scale) != arrivals(scale.with_overrides(seed=scale.seed + 1))
    times = [a.at for a in tasks]
    assert times == sorted(times) and times[0] > 0 and times[-1] < scale.duration
    assert {a.capability for a in tasks} == set(scale.workload.mix)
    # Poisson at 2 a second for 10 s: 20 expected, and this seed's draw is 27.
    assert len(tasks) == 27


def test_the_seed_fixes_identities_and_churn() -> None:
    assert node_seed(1, 0) == node_seed(1, 0) != node_seed(2, 0)
    churn = load_scenario(next(p for p in SHIPPED if p.stem == "churn"))
    schedule = churn_schedule(churn)
    assert schedule == churn_schedule(churn)
    assert schedule != churn_schedule(churn.with_overrides(seed=churn.seed + 1))
    assert {s.kind for s in schedule} <= {"join", "leave", "crash"}
    assert all(0 < s.at < churn.duration for s in schedule)
    # The requester and the bootstrap node never churn; joins bring back leavers.
    assert all(s.index > churn.requesters for s in schedule)
    down: set[int] = set()
    for step in schedule:
        if step.kind == "join":
            assert step.index in down
            down.discard(step.index)
        else:
            assert step.index not in down
            down.add(step.index)
