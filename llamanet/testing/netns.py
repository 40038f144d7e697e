"""A virtual LAN in network namespaces, for tests, benchmarks and simnet (root only).

::

    with VirtualLan(3) as lan:              # hub namespace with a bridge + 3 hosts
        lan.popen(0, ["llamanet", "node", ...])

Layout: a *hub* namespace holds a bridge; each host namespace has one veth whose
peer end is enslaved to that bridge, an address in ``10.213.<n>.0/24`` and a
route for multicast (224.0.0.0/4).  Nothing is created in the machine's root
namespace, so mDNS and any other multicast stay inside the namespaces.  Every
name carries this run's id, and :meth:`close` deletes exactly those namespaces
(with their veths and bridge) and kills the processes it started.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import IO, Any, Final

SUBNET_BASE: Final = "10.213"


def netns_available() -> str | None:
    """``None`` when namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 ('ip') is not installed"
    probe = f"llnprobe{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"'ip netns add' failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str, netns: str | None = None) -> None:
    cmd = ["ip", *args] if netns is None else ["ip", "-n", netns, *args]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {result.stderr.strip()}")


class VirtualLan:
    def __init__(self, hosts: int, *, subnet: int = 1) -> None:
        if not 1 <= hosts <= 200:
            raise ValueError("1..200 hosts")
        self.run_id = uuid.uuid4().hex[:6]
        self.hub = f"lln{self.run_id}hub"
        self.names = [f"lln{self.run_id}h{i}" for i in range(hosts)]
        self.addresses = [f"{SUBNET_BASE}.{subnet}.{i + 10}" for i in range(hosts)]
        self.processes: list[subprocess.Popen[Any]] = []
        self._created: list[str] = []

    def __enter__(self) -> VirtualLan:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _build(self) -> None:
        _ip("netns", "add", self.hub)
        self._created.append(self.hub)
        _ip("link", "add", "br0", "type", "bridge", netns=self.hub)
        _ip("link", "set", "br0", "up", netns=self.hub)
        _ip("link", "set", "lo", "up", netns=self.hub)
        for i, (name, address) in enumerate(zip(self.names, self.addresses, strict=True)):
            _ip("netns", "add", name)
            self._created.append(name)
            host_end, hub_end = "eth0", f"v{i}"
            # Create the pair inside the host namespace, then move one end to the hub.
            _ip("link", "add", host_end, "type", "veth", "peer", "name", hub_end, netns=name)
            _ip("link", "set", hub_end, "netns", self.hub, netns=name)
            _ip("link", "set", hub_end, "master", "br0", netns=self.hub)
            _ip("link", "set", hub_end, "up", netns=self.hub)
            _ip("addr", "add", f"{address}/24", "dev", host_end, netns=name)
            _ip("link", "set", host_end, "up", netns=name)
            _ip("link", "set", "lo", "up", netns=name)
            _ip("route", "add", "224.0.0.0/4", "dev", host_end, netns=name)

    def command(self, host: int, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside host ``host``'s namespace."""
        return ["ip", "netns", "exec", self.names[host], *argv]

    def popen(
        self, host: int, argv: Sequence[str], *, stdout: IO[Any] | int | None = None, **kw: Any
    ) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(
            self.command(host, argv), stdout=stdout, stderr=subprocess.STDOUT, **kw
        )
        self.processes.append(proc)
        return proc

    def run(self, host: int, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(host, argv), capture_output=True, text=True, **kw)

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        self.processes.clear()
        for name in reversed(self._created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self._created.clear()
