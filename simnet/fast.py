"""Fast mode: every node of a scenario in this process, under
``trio.testing.MockClock(autojump_threshold=0)``, over the in-memory transport.
Times in the report are simulated seconds; the seed fixes the run (trio's
scheduler is seeded too, so two runs of a seed in one process agree)."""

from __future__ import annotations

import gc
import random
import resource
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import multiaddr
import trio
import trio.testing
from libp2p.abc import IHost
from libp2p.kad_dht import routing_table

from llamanet.trust.keys import Identity

from . import memory_transport
from .events import RunLog
from .memory_transport import PLAINTEXT_NOTE, LinkModel, MemoryNetwork, build_memory_host
from .runner import Progress, collect_event, expected_discoveries, new_log
from .scenario import Scenario, bootstrap_indices
from .stopping import StopOnSignal
from .swarm import Share, capabilities_wanted, peer_text, run_share

START_PER_NODE = 0.05
"""Simulated seconds allowed per node to start before ``settle`` begins."""
EPOCH = 1_767_225_600.0
"""The simulated wall clock starts at 2026-01-01T00:00:00Z in every run, so record
timestamps (and the bytes that carry them) are the same from run to run."""


def simulated_wall_clock() -> float:
    return EPOCH + trio.current_time()


def _link(scenario: Scenario) -> LinkModel:
    net = scenario.network
    bandwidth = net.bandwidth_mbps * 125_000 if net.bandwidth_mbps else None
    return LinkModel(
        latency=net.latency_ms / 1000,
        jitter=net.jitter_ms / 1000,
        loss=net.loss,
        bandwidth=bandwidth,
    )


def run_fast(scenario: Scenario, *, progress: Progress | None = None) -> RunLog:
    log = new_log(scenario, "fast")
    log.expected_discoveries = expected_discoveries(scenario, capabilities_wanted(scenario))
    network = MemoryNetwork(seed=scenario.seed, default_link=_link(scenario))
    listen = {i: str(MemoryNetwork.address(i)) for i in range(scenario.nodes)}
    bootstrap = {
        i: f"{listen[i]}/p2p/{peer_text(scenario.seed, i)}" for i in bootstrap_indices(scenario)
    }

    def host_builder(identity: Identity, addrs: Sequence[multiaddr.Multiaddr]) -> IHost:
        return build_memory_host(
            identity.seed,
            network,
            addrs[0],
            connection_budget=scenario.network.connection_budget,
        )

    def emit(event: dict[str, Any]) -> None:
        collect_event(log, event)
        if progress is not None:
            progress(event)

    stop: StopOnSignal | None = None

    async def main() -> None:
        nonlocal stop
        with tempfile.TemporaryDirectory(prefix="simnet-fast-") as base:
            share = Share(
                indices=tuple(range(scenario.nodes)),
                listen=listen,
                bootstrap=bootstrap,
                base=Path(base),
            )
            t0 = (
                trio.current_time()
                + START_PER_NODE * scenario.nodes
                + scenario.ramp
                + scenario.settle
            )
            async with trio.open_nursery() as nursery:
                stop = StopOnSignal(nursery.cancel_scope)
                await nursery.start(stop.run)
                await run_share(
                    scenario,
                    share,
                    emit,
                    t0=t0,
                    host_builder=host_builder,
                    clock=simulated_wall_clock,
                )
                nursery.cancel_scope.cancel()

    started = time.monotonic()
    # Everything random that is not drawn from the scenario's own streams: peer
    # selection's exploration, and trio's scheduler, which reverses each batch of
    # runnable tasks at random (trio._core._run._r; trio's own Hypothesis plugin
    # seeds that same generator to make test runs repeatable).
    random.seed(scenario.seed)
    scheduler: random.Random = trio._core._run._r  # type: ignore[attr-defined]
    scheduler.seed(scenario.seed)
    # py-libp2p 0.8.1 draws the keys of its routing-table refresh walks from
    # ``secrets`` (kad_dht/routing_table.py); a seeded stand-in for this run.
    walks = random.Random(f"walks:{scenario.seed}")
    real_secrets = routing_table.secrets  # type: ignore[attr-defined]
    setattr(routing_table, "secrets", SimpleNamespace(randbelow=walks.randrange))  # noqa: B010
    clock = trio.testing.MockClock(autojump_threshold=0)
    # py-libp2p's own clock readings (routed to the simulated clock by the memory
    # transport) start from the same fixed instant in every run too: some of its
    # limits count in windows of wall-clock time.
    memory_transport._EPOCHS[clock] = (EPOCH, EPOCH, EPOCH)
    # The cycle collector runs when allocations say so, which differs from run to
    # run, and what it finalizes (async generators) schedules work: it waits for
    # the end of the run.
    gc.collect()
    gc.disable()
    try:
        trio.run(main, clock=clock)
    finally:
        setattr(routing_table, "secrets", real_secrets)  # noqa: B010
        gc.enable()
        gc.collect()
    if stop is not None and stop.signal is not None:
        raise KeyboardInterrupt
    log.wall_time = time.monotonic() - started
    log.peak_rss_mb = max(
        log.peak_rss_mb, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    tasks = max(1, len(log.tasks))
    log.notes.append(PLAINTEXT_NOTE)
    log.notes.append(
        f"Simulated network ({scenario.network.latency_ms:g} ms ± "
        f"{scenario.network.jitter_ms:g} ms per link): {network.total.messages} messages, "
        f"{network.total.bytes} bytes in all, {network.total.bytes / tasks:.0f} bytes "
        "per task (discovery and upkeep included)."
    )
    return log
