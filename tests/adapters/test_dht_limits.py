"""The DHT adapter's limits on what py-libp2p's KadDHT leaves open: routing-table
diversity (few entries per public subnet, none of the cap for private and
loopback addresses) and the inbound stream bound.  The table only records peers
here (it has room), so nothing is dialled: no traffic leaves the process."""

from __future__ import annotations

from pathlib import Path

import multiaddr
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from llamanet.adapters.dht import CapsValidator, DHTConfig, LlamanetDHT
from llamanet.adapters.libp2p_host import build_host
from llamanet.protocol.config import RecordPolicy
from llamanet.trust.keys import Identity


def peer_at(ip: str) -> PeerInfo:
    peer = ID(Identity.generate().peer_id)
    return PeerInfo(peer, [multiaddr.Multiaddr(f"/ip4/{ip}/tcp/4001")])


async def test_one_public_subnet_gets_few_entries_and_lans_are_exempt(tmp_path: Path) -> None:
    host = build_host(Identity.generate(), [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")])
    dht = LlamanetDHT(
        host,
        CapsValidator(RecordPolicy()),
        swarm="main",
        config=DHTConfig(max_peers_per_subnet=3),
    )
    table = dht.kad.routing_table
    crowd = [
        await table.add_peer(peer_at(f"8.8.8.{i}"), skip_server_mode_check=True) for i in range(6)
    ]
    lan = [
        await table.add_peer(peer_at(f"192.168.1.{i}"), skip_server_mode_check=True)
        for i in range(6)
    ]
    spread = [
        await table.add_peer(peer_at(f"9.{i}.0.1"), skip_server_mode_check=True) for i in range(4)
    ]
    assert 1 <= sum(crowd) <= 3
    assert all(lan) and all(spread)
    assert table.max_peers_per_subnet_table == 3


def test_the_inbound_stream_bound_is_raised_from_upstreams_twelve() -> None:
    # py-libp2p 0.8.1 serves at most 12 inbound KAD streams at once in all and
    # resets the rest (KadDHT._inbound_limiter); one busy peer holds ~10.  If this
    # fails, upstream changed how it bounds them: revisit LlamanetDHT.__init__.
    # Our KadServer answers inbound streams in upstream's place, with its own bound.
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    upstream = KadDHT(build_host(Identity.generate(), listen), DHTMode.SERVER)
    assert upstream._inbound_limiter.total_tokens == 12
    ours = LlamanetDHT(
        build_host(Identity.generate(), listen), CapsValidator(RecordPolicy()), swarm="main"
    )
    assert ours.server.inbound.total_tokens == 64
    assert ours.config.max_streams_per_peer == 12
