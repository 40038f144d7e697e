"""Run a scenario in one of the three modes and collect what happened into a
:class:`~simnet.events.RunLog`.

* ``real``: nodes on 127.0.0.1, spread over worker processes (``simnet.worker``,
  at most :data:`NODES_PER_PROCESS` busy hosts each), in real time.
* ``lan``: one worker process per network namespace on a virtual bridge (root
  only), mDNS on inside the namespaces and nowhere else, no bootstrap list.
* ``fast``: every node in this process under ``trio.testing.MockClock`` over the
  in-memory transport (:mod:`simnet.memory_transport`), in simulated time.
"""

from __future__ import annotations

import json
import math
import os
import platform
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any, Final

from .events import (
    AttackEvent,
    ChurnEvent,
    DiscoveryEvent,
    LookupEvent,
    ReputationSample,
    RunLog,
    TaskEvent,
)
from .scenario import Scenario, bootstrap_indices, placements
from .swarm import peer_text

NODES_PER_PROCESS: Final = 50
START_GRACE: Final = 5.0
START_PER_NODE: Final = 0.2
"""Wall seconds allowed for the nodes to start (a process starts its nodes at
once, in 0.1 s or so each on this machine) before ``settle`` begins."""
SIMULATION_NOTE: Final = (
    "This is a simulation: the agents are simulated (their speed and accuracy come "
    "from the scenario's profiles), the nodes and the protocol are real llamanet."
)

Progress = Callable[[dict[str, Any]], None]


def scenario_data(scenario: Scenario) -> dict[str, Any]:
    """The scenario as TOML-shaped data (what a worker parses back)."""
    data: dict[str, Any] = json.loads(json.dumps(asdict(scenario)))
    return data


def _free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def _machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def collect_event(log: RunLog, event: dict[str, Any]) -> None:
    """Add one event (as :mod:`simnet.swarm` emits it) to ``log``."""
    kind = event["type"]
    event = {k: v for k, v in event.items() if k != "type"}
    if kind == "task":
        log.tasks.append(TaskEvent(**event))
    elif kind == "discovery":
        log.discovery.append(DiscoveryEvent(**event))
    elif kind == "lookup":
        log.lookups.append(LookupEvent(**event))
    elif kind == "reputation":
        log.reputation.append(ReputationSample(**event))
    elif kind == "churn":
        log.churn.append(ChurnEvent(**event))
    elif kind == "attack":
        log.attacks.append(AttackEvent(**event))
    elif kind == "rejected_records":
        for reason, count in event["counts"].items():
            log.rejected_records[reason] = log.rejected_records.get(reason, 0) + int(count)
    elif kind == "rss":
        log.peak_rss_mb = max(log.peak_rss_mb, float(event["mb"]))


def new_log(scenario: Scenario, mode: str) -> RunLog:
    return RunLog(
        scenario=scenario.name,
        mode=mode,  # type: ignore[arg-type]
        seed=scenario.seed,
        nodes=scenario.nodes,
        duration=scenario.duration,
        machine=_machine(),
        notes=[SIMULATION_NOTE, *scenario.notes],
    )


def expected_discoveries(scenario: Scenario, capabilities: list[str]) -> int:
    return scenario.nodes * len(capabilities)


@contextmanager
def _workdir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="simnet-"))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _shares(scenario: Scenario, per_process: int) -> list[list[int]]:
    """Node indices per worker process.  Process 0 holds the requesters and the
    bootstrap nodes (the first after them), which the others dial.  When the swarm
    needs more than one process, process 0 holds only those: a requester that
    shares an event loop with dozens of joining hosts times its tasks by that
    loop's lateness, which a real swarm's requester, on a machine of its own, does
    not.  The others are dealt round-robin, so a ramp loads every process alike."""
    indices = [p.index for p in placements(scenario)]
    if len(indices) <= per_process:
        return [indices]
    first = scenario.requesters + scenario.node.bootstrap_nodes
    head, rest = indices[:first], indices[first:]
    processes = math.ceil(len(rest) / per_process)
    return [head] + [rest[k::processes] for k in range(processes)]


def run_processes(
    scenario: Scenario,
    mode: str,
    *,
    progress: Progress | None = None,
    per_process: int = NODES_PER_PROCESS,
    up: Callable[[dict[int, Path]], None] | None = None,
    logs: Path | None = None,
) -> RunLog:
    """``logs``: a directory for each worker's log (warnings and errors)."""
    """Real and lan modes: start the worker processes, gather their events."""
    from .swarm import capabilities_wanted

    log = new_log(scenario, mode)
    log.expected_discoveries = expected_discoveries(scenario, capabilities_wanted(scenario))
    started = time.monotonic()
    with _workdir() as base, ExitStack() as stack:
        if mode == "lan":
            from llamanet.testing.netns import VirtualLan, netns_available

            why = netns_available()
            if why:
                raise RuntimeError(f"lan mode needs network namespaces: {why}")
            shares = [[i] for i in range(scenario.nodes)]
            shares[0] = list(range(scenario.requesters + 1))
            shares = [shares[0], *[[i] for i in range(scenario.requesters + 1, scenario.nodes)]]
            lan = stack.enter_context(VirtualLan(len(shares)))
            listen = {}
            for host, share in enumerate(shares):
                for k, index in enumerate(share):
                    listen[index] = f"/ip4/{lan.addresses[host]}/tcp/{4001 + k}"
            bootstrap: dict[str, str] = {}
        else:
            shares = _shares(scenario, per_process)
            ports = _free_ports(scenario.nodes)
            listen = {i: f"/ip4/127.0.0.1/tcp/{ports[i]}" for i in range(scenario.nodes)}
            bootstrap = {
                str(i): f"{listen[i]}/p2p/{peer_text(scenario.seed, i)}"
                for i in bootstrap_indices(scenario)
            }
        biggest = max(len(share) for share in shares)
        t0_wall = (
            time.time() + START_GRACE + START_PER_NODE * biggest + scenario.ramp + scenario.settle
        )
        data = scenario_data(scenario)
        procs: list[subprocess.Popen[str]] = []
        try:
            for host, share in enumerate(shares):
                spec = {
                    "scenario": data,
                    "indices": share,
                    "listen": {str(i): listen[i] for i in share},
                    "bootstrap": bootstrap,
                    "base": str(base / f"p{host}"),
                    "mdns": mode == "lan",
                    "t0_wall": t0_wall,
                    "api": up is not None,
                    "workload": up is None,
                }
                argv = [sys.executable, "-m", "simnet.worker"]
                if mode == "lan":
                    argv = lan.command(host, argv)
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=stack.enter_context(open(logs / f"worker-{host}.log", "w"))
                    if logs is not None
                    else subprocess.DEVNULL,
                    text=True,
                    env={**os.environ, "LLAMANET_MDNS_GUARD": ""} if mode == "lan" else None,
                )
                procs.append(proc)
                assert proc.stdin is not None
                proc.stdin.write(json.dumps(spec) + "\n")
                proc.stdin.flush()
                if host == 0:
                    _wait_ready(proc, log, time.time() + START_GRACE * 4 + len(share))
            if up is not None:
                homes = {i: base / f"p{h}" / f"n{i}" for h, sh in enumerate(shares) for i in sh}
                up(homes)  # returns when the user is done with the swarm
            else:
                deadline = t0_wall + scenario.duration + scenario.workload.timeout + 60
                _gather(procs, log, progress, deadline)
        finally:
            # Cleanup runs to the end even if Ctrl-C comes again meanwhile.
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                for pipe in (proc.stdin, proc.stdout):
                    if pipe is not None:
                        pipe.close()
            signal.signal(signal.SIGINT, previous)
    log.wall_time = time.monotonic() - started
    return log


def _wait_ready(proc: subprocess.Popen[str], log: RunLog, deadline: float) -> None:
    """Read the first process's events until its bootstrap nodes are up, so that the
    other processes' nodes find them on their first try."""
    assert proc.stdout is not None
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the first simnet worker exited before its nodes were up")
        event = _collect_line(log, line)
        if event is not None and event["type"] in ("bootstrap_ready", "ready"):
            return
    raise RuntimeError("the first simnet worker's nodes did not come up in time")


def _collect_line(log: RunLog, line: str) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict) or "type" not in event:
        return None
    collect_event(log, event)
    return event


def _gather(
    procs: list[subprocess.Popen[str]], log: RunLog, progress: Progress | None, deadline: float
) -> None:
    """Read every process's events as they come (one reader thread per pipe) until
    process 0 says the workload is done and every other process that its lookups
    are (or its pipe closes), or ``deadline`` (wall clock) passes."""
    lines: queue.Queue[tuple[int, str | None]] = queue.Queue()

    def reader(number: int, stream: IO[str]) -> None:
        for line in stream:
            lines.put((number, line))
        lines.put((number, None))

    threads = []
    for number, proc in enumerate(procs):
        assert proc.stdout is not None
        thread = threading.Thread(target=reader, args=(number, proc.stdout), daemon=True)
        thread.start()
        threads.append(thread)
    measuring = set(range(len(procs)))
    while measuring and time.time() < deadline:
        try:
            number, line = lines.get(timeout=1.0)
        except queue.Empty:
            continue
        if line is None:
            measuring.discard(number)
            if number == 0:
                break
            continue
        event = _collect_line(log, line)
        if event is not None and progress is not None:
            progress(event)
        if event is not None and event["type"] in ("done", "lookups_done"):
            measuring.discard(number)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for thread in threads:
        thread.join(timeout=30)
    while not lines.empty():
        _, line = lines.get_nowait()
        if line is not None:
            _collect_line(log, line)
