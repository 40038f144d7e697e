"""simnet's lan mode: three nodes, each in its own network namespace on a virtual
bridge, finding each other by mDNS (root only; skipped with the reason otherwise)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamanet.testing.netns import netns_available
from simnet.__main__ import scaled
from simnet.runner import run_processes
from simnet.scenario import load_scenario

SCENARIOS = Path(__file__).parents[2] / "simnet" / "scenarios"

pytestmark = pytest.mark.timeout(300)


def test_three_nodes_on_a_virtual_lan_find_each_other_by_mdns(tmp_path: Path) -> None:
    why = netns_available()
    if why:
        pytest.skip(why)
    scenario = load_scenario(SCENARIOS / "small.toml").with_overrides(
        mode="lan", duration=5.0, settle=15.0
    )
    scenario = scaled(scenario, 3)
    assert scenario.nodes == 3
    log = run_processes(scenario, "lan", logs=tmp_path)
    # No bootstrap list in lan mode: whatever was found, mDNS found.
    assert {(d.node, d.capability) for d in log.discovery}
    assert len(log.tasks) >= 5
    assert sum(t.ok for t in log.tasks) / len(log.tasks) >= 0.9
