"""Stopping ``python -m simnet run`` with SIGTERM (kill, timeout, CI) cleans up
like Ctrl-C: the worker processes stop and the working directories go, and a
fast-mode swarm is cancelled as a whole rather than interrupted mid-step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simnet.fast import run_fast
from simnet.scenario import load_scenario

SCENARIOS = Path(__file__).parents[2] / "simnet" / "scenarios"


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# SIGINT ignored: as a shell starts a background job (`simnet run ... &` in a script).
@pytest.mark.parametrize(
    ("mode", "sigint_ignored"), [("fast", False), ("real", False), ("fast", True)]
)
def test_sigterm_stops_the_workers_and_removes_the_workdirs(
    tmp_path: Path, mode: str, sigint_ignored: bool
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    scenario, report = str(SCENARIOS / "small.toml"), str(tmp_path / "report")
    # ``with``: the stderr pipe is closed whatever happens, not left to a later
    # test's garbage collection (where it fails that test with a ResourceWarning).
    with subprocess.Popen(
        [sys.executable, "-m", "simnet", "run", scenario, "--mode", mode, "--out", report],
        env={**os.environ, "TMPDIR": str(scratch)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ignore_sigint if sigint_ignored else None,
    ) as proc:
        try:
            deadline = time.monotonic() + 60
            # Wait until the run has its working directory (and, in real mode, its worker).
            while time.monotonic() < deadline:
                started = any(scratch.iterdir()) and (mode == "fast" or children(proc.pid))
                if started:
                    break
                time.sleep(0.2)
            assert any(scratch.iterdir()), "the run never started"
            workers = children(proc.pid)
            time.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert not [p for p in workers if alive(p)]
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_workload_cancels_the_fast_swarm_as_a_whole(signum: int) -> None:
    scenario = load_scenario(SCENARIOS / "small.toml").with_overrides(mode="fast")
    tasks: list[dict[str, object]] = []

    def on_event(event: dict[str, object]) -> None:
        if event["type"] == "task":
            tasks.append(event)
            if len(tasks) == 1:
                # Sent from inside a node's task, where trio's own SIGINT handling
                # would raise KeyboardInterrupt in that task alone.
                signal.raise_signal(signum)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM as `python -m simnet` has it: should the run not take the signal
    # itself, the test fails instead of pytest being terminated.
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        # One KeyboardInterrupt, not an exception group out of some node's nursery.
        with pytest.raises(KeyboardInterrupt):
            run_fast(scenario, progress=on_event)
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert tasks, "the workload never started"
    assert len(tasks) < 10, "the run went on after the signal"
