"""Helpers shared by the test suite, the benchmarks and simnet.

Nodes made here listen on loopback only and never use mDNS: they are meant for
the machine's root network namespace, where multicast is off limits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llamanet.node.config import NodeConfig
from llamanet.protocol.config import TEST_POW_DIFFICULTY

__all__ = ["loopback_config"]


def loopback_config(home: Path, **overrides: Any) -> NodeConfig:
    """A node on 127.0.0.1 (any free port), mDNS off, ignoring the shipped bootstrap
    list (it points at a file that does not exist)."""
    fields: dict[str, Any] = {
        "home": home,
        "listen": ("/ip4/127.0.0.1/tcp/0",),
        "mdns": False,
        # Deterministic: never pick up a model server that happens to run here.
        "backends": ("builtin",),
        # Tests and benchmarks expect the best-ranked peer, never a random one.
        "explore": 0.0,
        # Spot checks cost generations: a test that wants them asks for them.
        "spot_check_interval": 0.0,
        # A swarm of test nodes: identities cost nothing (bench.identity_cost
        # measures the real default).
        "pow_difficulty": TEST_POW_DIFFICULTY,
        "bootstrap_file": home.parent / f"{home.name}-no-bootstrap.toml",
    }
    fields.update(overrides)
    return NodeConfig(**fields)
