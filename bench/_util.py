"""Shared helpers for benchmark scripts."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llamanet.api.client import ApiClient
from llamanet.errors import DaemonError
from llamanet.node.config import NodeConfig
from llamanet.testing import loopback_config


def loopback_node_config(home: Path, **overrides: Any) -> NodeConfig:
    """:func:`llamanet.testing.loopback_config`, logging only warnings."""
    return loopback_config(home, **{"log_level": "warning", **overrides})


def percentile(samples: Sequence[float], pct: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def wait_for_api(home: Path, timeout: float = 30.0) -> dict[str, Any]:
    """Wait for a daemon's API and return its status."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with ApiClient(home, timeout=5) as api:
                status: dict[str, Any] = api.get("/v1/status")
                return status
        except DaemonError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
