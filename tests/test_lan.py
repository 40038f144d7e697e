"""Three `llamanet node` processes on a virtual LAN of network namespaces, with mDNS
and no bootstrap: they find each other, run tasks, and drop peers that leave.

Root only (CI runs as root); skipped with the reason where namespaces cannot be
made.  All multicast stays inside the namespaces this test creates.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamanet.testing.netns import VirtualLan, netns_available

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
UNAVAILABLE = netns_available()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=f"needs network namespaces: {UNAVAILABLE}"),
]
LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+\s+\S+: (.*)$")


def node_env() -> dict[str, str]:
    # The guard refuses mDNS in the root namespace; these nodes run in their own.
    return {k: v for k, v in os.environ.items() if k != "LLAMANET_MDNS_GUARD"}


class Lan:
    def __init__(self, lan: VirtualLan, base: Path) -> None:
        self.lan = lan
        self.base = base
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, i: int) -> None:
        log = open(self.base / f"n{i}.log", "a")  # noqa: SIM115 - handed to the process
        self.procs[i] = self.lan.popen(
            i,
            [PY, "-m", "llamanet", "node", "--home", str(self.base / f"n{i}"),
             "--listen", "/ip4/0.0.0.0/tcp/4101", "--log-level", "info",
             "--bootstrap-file", str(self.base / "none.toml")],
            stdout=log, cwd=ROOT, env=node_env(),
        )  # fmt: skip
        log.close()

    def cli(self, i: int, *args: str) -> subprocess.CompletedProcess[str]:
        return self.lan.run(i, [PY, "-m", "llamanet", "--home", str(self.base / f"n{i}"), *args],
                            cwd=ROOT, env=node_env(), timeout=60)  # fmt: skip

    def peer_id(self, i: int) -> str:
        return self.cli(i, "id").stdout.strip()

    def events(self, i: int) -> list[tuple[float, str]]:
        out = []
        for line in (self.base / f"n{i}.log").read_text().splitlines():
            match = LINE.match(line)
            if match:
                stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
                out.append((stamp.timestamp(), match.group(2)))
        return out

    def first(self, i: int, needle: str, after: float = 0.0) -> float | None:
        for stamp, text in self.events(i):
            if stamp >= after and needle in text:
                return stamp
        return None

    def wait_for(self, i: int, needle: str, after: float, timeout: float) -> float:
        deadline = time.time() + timeout
        while time.time() < deadline:
            stamp = self.first(i, needle, after)
            if stamp is not None:
                return stamp
            time.sleep(0.2)
        raise AssertionError(f"node {i} never logged {needle!r} within {timeout} s")


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[Lan]:
    with VirtualLan(3) as virtual:
        yield Lan(virtual, tmp_path)
    leftover = [n for n in [*virtual.names, virtual.hub] if Path(f"/run/netns/{n}").exists()]
    assert not leftover, f"namespaces left behind: {leftover}"


def test_three_nodes_find_each_other_and_drop_leavers(lan: Lan) -> None:
    ids = {}
    for i in range(3):
        lan.start(i)
    for i in range(3):
        lan.wait_for(i, "proof of work", 0, 30)
        ids[i] = lan.peer_id(i)
    started = {i: lan.first(i, "proof of work") or 0.0 for i in range(3)}

    # Each node holds each other's verified record within 5 s of that node's start.
    for i in range(3):
        for j in range(3):
            if i != j:
                met = lan.wait_for(i, f"met {ids[j]} on the LAN", 0, 20)
                assert met - started[j] < 5.0, (
                    f"node {i} met node {j} {met - started[j]:.1f} s late"
                )
    for i in range(3):
        peers = json.loads(lan.cli(i, "peers", "--json").stdout)
        verified = {p["peer_id"] for p in peers if p["record_seq"] is not None}
        assert verified == {ids[j] for j in range(3) if j != i}

    # A task crosses the LAN.
    asked = lan.cli(0, "ask", "math.eval", "2*(3+4)")
    assert asked.stdout.strip() == "14", asked.stderr
    assert re.search(r"by (\S+) in", asked.stderr).group(1) in (ids[1], ids[2])  # type: ignore[union-attr]

    # Clean stop: node 2 says goodbye; the others drop it within 10 s.
    stopped_at = time.time()
    lan.procs[2].send_signal(signal.SIGTERM)
    for i in (0, 1):
        gone = lan.wait_for(i, f"peer {ids[2]} left", stopped_at - 1, 10)
        assert gone - stopped_at < 10.0

    # Crash: node 1 is killed; node 0 drops it within 30 s.
    killed_at = time.time()
    lan.procs[1].send_signal(signal.SIGKILL)
    gone = lan.wait_for(0, f"peer {ids[1]} left", killed_at - 1, 30)
    assert gone - killed_at < 30.0
    peers = json.loads(lan.cli(0, "peers", "--json").stdout)
    assert {p["peer_id"] for p in peers} & {ids[1], ids[2]} == set()
    missing = lan.cli(0, "ask", "math.eval", "1+1", "--timeout", "5")
    assert missing.returncode == 1

    # And a returning peer comes back.
    back_at = time.time()
    lan.start(2)
    lan.wait_for(0, f"met {ids[2]} on the LAN", back_at, 20)
    assert lan.cli(0, "ask", "math.eval", "1+1").stdout.strip() == "2"
