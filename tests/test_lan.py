"""Three `llamanet node` processes on a virtual LAN of network namespaces, with mDNS
and no bootstrap: they find each other, run tasks, and drop peers that leave.

Root only (CI runs as root); skipped with the reason where namespaces cannot be
made.  All multicast stays inside the namespaces this test creates.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamanet.testing.lan import ROOT, LanNodes, node_env
from llamanet.testing.netns import VirtualLan, netns_available

from .js_peers import JS_CACHE, js_peer_ready

PY = sys.executable
UNAVAILABLE = netns_available()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=f"needs network namespaces: {UNAVAILABLE}"),
]


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[LanNodes]:
    with VirtualLan(3) as virtual:
        yield LanNodes(virtual, tmp_path)
    leftover = [n for n in [*virtual.names, virtual.hub] if Path(f"/run/netns/{n}").exists()]
    assert not leftover, f"namespaces left behind: {leftover}"


def test_three_nodes_find_each_other_and_drop_leavers(lan: LanNodes) -> None:
    ids = {}
    for i in range(3):
        lan.start(i)
    for i in range(3):
        lan.wait_for(i, "starting node", 0, 30)
        ids[i] = lan.peer_id(i)
    started = {i: lan.first(i, "starting node") or 0.0 for i in range(3)}

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
        # No bootstrap file, yet a DHT: each node has the other two in its table.
        assert {p["peer_id"] for p in peers if p["in_routing_table"]} == verified

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


def test_interop_with_js_libp2p_mdns_both_ways(tmp_path: Path) -> None:
    reason = js_peer_ready()
    if reason is not None:
        pytest.skip(f"js-libp2p peer unavailable: {reason}")
    with VirtualLan(2) as virtual:
        lan = LanNodes(virtual, tmp_path)
        js_out = open(tmp_path / "js.jsonl", "w")  # noqa: SIM115 - handed to the process
        js = virtual.popen(1, ["node", str(JS_CACHE / "mdns_peer.mjs"), "_p2p._udp.local", "25"],
                           stdout=js_out, cwd=JS_CACHE)  # fmt: skip
        js_out.close()
        log = open(tmp_path / "n0.log", "w")  # noqa: SIM115 - handed to the process
        virtual.popen(
            0,
            [PY, "-m", "llamanet", "node", "--home", str(tmp_path / "n0"),
             "--listen", "/ip4/0.0.0.0/tcp/4101", "--log-level", "info",
             "--mdns-service", "_p2p._udp.local",
             "--bootstrap-file", str(tmp_path / "none.toml")],
            stdout=log, cwd=ROOT, env=node_env(),
        )  # fmt: skip
        log.close()
        ours = lan.wait_for(0, "starting node", 0, 30)
        our_id = lan.peer_id(0)
        deadline = time.time() + 20
        js_id, discovered = None, False
        while time.time() < deadline and not discovered:
            time.sleep(0.3)
            for line in (tmp_path / "js.jsonl").read_text().splitlines():
                event = json.loads(line)
                if event["event"] == "started":
                    js_id = event["id"]
                elif event["event"] == "discovered" and event["id"] == our_id:
                    discovered = True
                    assert any(a.startswith("/ip4/10.213.") for a in event["addrs"])
        assert discovered, "js-libp2p never discovered the llamanet node"
        assert js_id is not None
        # ...and we resolved it from its PTR + TXT answer alone (js-libp2p sends no
        # SRV or A records), with its LAN address and without its loopback one.
        lan.wait_for(0, f"mDNS: found {js_id} at /ip4/10.213.1.11/tcp/", ours, 20)
        found = [t for _, t in lan.events(0) if f"mDNS: found {js_id}" in t]
        assert "/ip4/127.0.0.1" not in found[0]
        time.sleep(3)  # the js peer answers its own queries every second...
        found = [t for _, t in lan.events(0) if f"mDNS: found {js_id}" in t]
        assert len(found) == 1  # ...and we do not chase it again
        js.wait(timeout=40)
