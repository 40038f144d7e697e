"""What a node does with peers met on the LAN, on loopback (mDNS itself is off here;
the mDNS events are fed in as the adapter would deliver them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import multiaddr
import trio
import trio.lowlevel

from llamanet.adapters.dht import CapsValidator, LlamanetDHT
from llamanet.adapters.libp2p_host import build_host
from llamanet.adapters.mdns import MdnsEvent, PeerGone, PeerSeen
from llamanet.discovery.mdns_records import MdnsPeer
from llamanet.node.node import Node
from llamanet.protocol.config import TEST_POW_DIFFICULTY, RecordPolicy
from llamanet.trust.keys import Identity

from ..nodes import eventually, start_node

FAST_LIVENESS: dict[str, Any] = {
    "liveness_interval": 0.3,
    "liveness_timeout": 0.3,
    "liveness_max_failures": 2,
}
LOOPBACK = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")


async def feed(node_events: list[MdnsEvent], node: Node) -> None:
    send, receive = trio.open_memory_channel[MdnsEvent](16)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(node.lan.on_events, receive, nursery)
        async with send:
            for event in node_events:
                await send.send(event)
        await trio.lowlevel.checkpoint()


async def test_a_peer_that_does_not_speak_llamanet_is_dropped_for_good(tmp_path: Path) -> None:
    stranger = build_host(Identity.generate(), [LOOPBACK])  # a libp2p host, no llamanet
    async with stranger.run([LOOPBACK]), start_node(tmp_path / "a") as node:
        addr = str(stranger.get_addrs()[0])
        peer_id = bytes(stranger.get_id().to_bytes())
        seen = MdnsPeer(
            peer_id=peer_id, addrs=(addr.rsplit("/p2p/", 1)[0],), instance="x._p2p._udp.local."
        )
        await feed([PeerSeen(seen)], node)
        await eventually(lambda: peer_id in node.lan.not_llamanet)
        assert peer_id not in node.registry
        await trio.sleep(0.3)  # past the moment a new connection is offered to the table
        assert peer_id not in node.dht.routing_table_peers()
        assert stranger.get_id() not in node.host.get_connected_peers()
        # Announced again (new instance name after a restart): not retried.
        again = MdnsPeer(peer_id=peer_id, addrs=seen.addrs, instance="y._p2p._udp.local.")
        connects = len(node.host.get_connected_peers())
        await feed([PeerSeen(again)], node)
        await trio.sleep(0.3)
        assert len(node.host.get_connected_peers()) <= connects
        await stranger.close()


async def test_a_peer_that_speaks_only_our_dht_is_kept_as_a_dht_server(tmp_path: Path) -> None:
    # Another libp2p implementation on /llamanet/kad/1.0.0 (here a bare DHT with no
    # llamanet protocols on top): it routes and stores, so it stays in the table.
    stranger = build_host(Identity.generate(), [LOOPBACK])
    dht = LlamanetDHT(
        stranger, CapsValidator(RecordPolicy(pow_difficulty=TEST_POW_DIFFICULTY)), swarm="main"
    )
    async with (
        stranger.run([LOOPBACK]),
        trio.open_nursery() as nursery,
        start_node(tmp_path / "a") as node,
    ):
        await nursery.start(dht.run)
        addr = str(stranger.get_addrs()[0]).rsplit("/p2p/", 1)[0]
        peer_id = bytes(stranger.get_id().to_bytes())
        seen = MdnsPeer(peer_id=peer_id, addrs=(addr,), instance="kad._p2p._udp.local.")
        await feed([PeerSeen(seen)], node)
        await eventually(lambda: peer_id in node.lan.not_llamanet)
        assert peer_id in node.dht.routing_table_peers()
        assert peer_id not in node.registry
        assert stranger.get_id() in node.host.get_connected_peers()
        nursery.cancel_scope.cancel()
    await stranger.close()


async def test_lan_peer_is_met_watched_and_dropped_on_goodbye(tmp_path: Path) -> None:
    async with start_node(tmp_path / "b", **FAST_LIVENESS) as b:
        async with start_node(tmp_path / "a") as a:
            found = MdnsPeer(
                peer_id=a.peer_id,
                addrs=tuple(x.rsplit("/p2p/", 1)[0] for x in a.addrs()),
                instance="a._llamanet._udp.local.",
            )
            await feed([PeerSeen(found)], b)
            await eventually(lambda: a.peer_id in b.registry)
            assert a.peer_id in b.liveness
            assert a.peer_id in b.dht.routing_table_peers()
            entry = b.registry.get_entry(a.peer_id, now=b.clock())
            assert entry is not None and entry.source == "mdns"
            # Anyone on the LAN can send a goodbye for any instance: one for a peer
            # that still answers pings is not believed.
            await feed([PeerGone("a._llamanet._udp.local.")], b)
            assert b.lan.ignored_goodbyes == 1
            assert a.peer_id in b.registry and a.peer_id in b.liveness
        # a has stopped: its goodbye is confirmed by the first failed ping.
        gone_at = trio.current_time()
        await feed([PeerGone("a._llamanet._udp.local.")], b)
        assert trio.current_time() - gone_at < b.liveness.config.timeout + 1
        assert a.peer_id not in b.registry
        assert a.peer_id not in b.liveness
        assert a.peer_id not in b.dht.routing_table_peers()
        assert b.lan.ignored_goodbyes == 1


async def test_a_silent_peer_is_dropped_and_not_revived_from_the_dht(tmp_path: Path) -> None:
    async with start_node(tmp_path / "b", **FAST_LIVENESS) as b:
        async with start_node(tmp_path / "a", bootstrap=(b.addrs()[0],)) as a:
            await b.fetch_record(a.peer_id)
            assert a.peer_id in b.liveness
            gone = a.peer_id
        # a stopped (its record is still valid in b's DHT store)
        limit = b.liveness.config.worst_detection_time + 2
        await eventually(lambda: gone not in b.registry and gone not in b.liveness, timeout=limit)
        assert all(r.peer != gone for r in await b.find("math.eval", timeout=3))
        assert gone not in b.registry
        assert a.peer_id_text not in {p.peer_id for p in b.peers() if p.record_seq}
