from __future__ import annotations

import os

import pytest
import trio.testing
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("fuzz", max_examples=20_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """Virtual time: timeouts in the core and in-memory tests cost no wall time."""
    return trio.testing.MockClock(autojump_threshold=0)
