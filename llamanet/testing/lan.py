"""``llamanet node`` daemons on a :class:`~llamanet.testing.netns.VirtualLan`, with
mDNS on (inside the namespaces only), observed through their logs and CLI.

Used by the LAN tests, the LAN benchmark and simnet's lan mode.
"""

from __future__ import annotations

import datetime
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

from llamanet.adapters.mdns import GUARD_ENV
from llamanet.protocol.config import TEST_POW_DIFFICULTY

from .netns import VirtualLan

ROOT: Final = Path(__file__).resolve().parents[2]
_LINE: Final = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+\s+\S+: (.*)$")


def node_env() -> dict[str, str]:
    """The environment for nodes inside the namespaces: without the guard that
    refuses mDNS in the root namespace (they are not in it)."""
    return {k: v for k, v in os.environ.items() if k != GUARD_ENV}


class LanNodes:
    """Daemon ``i`` runs in host ``i`` of ``lan`` with home ``base/n<i>``."""

    def __init__(self, lan: VirtualLan, base: Path, *extra_flags: str) -> None:
        self.lan = lan
        self.base = base
        self.extra_flags = extra_flags
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, i: int) -> None:
        log = open(self.base / f"n{i}.log", "a")  # noqa: SIM115 - handed to the process
        self.procs[i] = self.lan.popen(
            i,
            [sys.executable, "-m", "llamanet", "node", "--home", str(self.base / f"n{i}"),
             "--listen", "/ip4/0.0.0.0/tcp/4101", "--log-level", "info",
             "--bootstrap-file", str(self.base / "none.toml"),
             "--pow-difficulty", str(TEST_POW_DIFFICULTY), *self.extra_flags],
            stdout=log, cwd=ROOT, env=node_env(),
        )  # fmt: skip
        log.close()

    def cli(self, i: int, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "llamanet", "--home", str(self.base / f"n{i}"), *args]
        return self.lan.run(i, argv, cwd=ROOT, env=node_env(), timeout=60)

    def peer_id(self, i: int) -> str:
        return self.cli(i, "id").stdout.strip()

    def events(self, i: int) -> list[tuple[float, str]]:
        """``(unix time, message)`` of every log line of node ``i``."""
        out = []
        path = self.base / f"n{i}.log"
        text = path.read_text() if path.exists() else ""
        for line in text.splitlines():
            match = _LINE.match(line)
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
        """When node ``i`` first logged ``needle`` at or after ``after``."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            stamp = self.first(i, needle, after)
            if stamp is not None:
                return stamp
            time.sleep(0.2)
        raise AssertionError(f"node {i} never logged {needle!r} within {timeout} s")
