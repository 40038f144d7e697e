from __future__ import annotations

import os
import sys

import pytest
import trio.testing
from hypothesis import HealthCheck, settings

# Any node a test starts in this (root) network namespace must have mDNS off; the
# mDNS adapter refuses to start here while this is set (see llamanet/adapters/mdns.py).
os.environ["LLAMANET_MDNS_GUARD"] = "1"

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("LLAMANET_FUZZ_EXAMPLES", "20000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """Virtual time: timeouts in the core and in-memory tests cost no wall time."""
    return trio.testing.MockClock(autojump_threshold=0)


def pytest_unconfigure(config: pytest.Config) -> None:
    # llama-cpp-python opens /dev/null twice when imported (llama_cpp/_utils.py)
    # and never closes it, which prints ResourceWarnings as the interpreter exits.
    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        file = getattr(utils, name, None)
        if file is not None:
            file.close()
