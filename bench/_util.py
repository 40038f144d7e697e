"""Shared helpers for benchmark scripts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from llamanet.api.client import ApiClient
from llamanet.errors import DaemonError
from llamanet.node.config import NodeConfig
from llamanet.node.perf import percentile
from llamanet.testing import loopback_config

__all__ = ["loopback_node_config", "percentile", "wait_for_api"]


def loopback_node_config(home: Path, **overrides: Any) -> NodeConfig:
    """:func:`llamanet.testing.loopback_config`, logging only warnings."""
    return loopback_config(home, **{"log_level": "warning", **overrides})


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
