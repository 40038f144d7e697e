"""Transport security is Noise and nothing else: a dialler that offers plaintext,
SECIO or TLS instead fails the handshake and leaves no trace, so nobody can
connect as a peer ID whose private key it does not hold.

py-libp2p 0.8.1's ``new_host`` offers all four by default; the first test pins
that (and shows why it matters), the others show that llamanet's hosts do not.
Real hosts on loopback sockets."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.abc import IHost, ISecureTransport
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.secio import transport as secio
from libp2p.security.tls.transport import PROTOCOL_ID as TLS_PROTOCOL_ID
from libp2p.security.tls.transport import TLSTransport

from llamanet.adapters.libp2p_host import build_host, connection_config, noise_only
from llamanet.node.node import Node
from llamanet.protocol.membership import issue_certificate
from llamanet.trust.keys import Identity, load_or_create_identity

from ..nodes import start_node

LOOPBACK = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")

SECURITY: dict[str, Callable[[KeyPair], ISecureTransport]] = {
    "plaintext": InsecureTransport,
    "secio": secio.Transport,
    "tls": TLSTransport,
}
SECURITY_IDS = {
    "plaintext": TProtocol(PLAINTEXT_PROTOCOL_ID),
    "secio": TProtocol(secio.ID),
    "tls": TLS_PROTOCOL_ID,
}


def claiming(victim: Identity) -> KeyPair:
    """What a dialler that wants to pass for ``victim`` has: its own private key,
    which it presents as belonging to ``victim``'s public key (plaintext's exchange
    sends ``private_key.get_public_key()`` and never signs anything)."""
    own = create_new_key_pair(Identity.generate().seed).private_key
    victims = create_new_key_pair(victim.seed).public_key
    own.get_public_key = lambda: victims  # type: ignore[method-assign]
    return KeyPair(own, victims)


@asynccontextmanager
async def dialler(security: str, key_pair: KeyPair) -> AsyncIterator[IHost]:
    """A py-libp2p host that offers only ``security``, handshaking with
    ``key_pair`` (the host's own peerstore keeps a consistent key of its own)."""
    transport = SECURITY[security](key_pair)
    host = new_host(
        key_pair=create_new_key_pair(),
        sec_opt={SECURITY_IDS[security]: transport},
        connection_config=connection_config(),
    )
    async with host.run([LOOPBACK]):
        try:
            yield host
        finally:
            await host.close()


async def try_to_connect(client: IHost, server: IHost | Node) -> bool:
    host = server.host if isinstance(server, Node) else server
    connected = False
    with trio.move_on_after(10):
        try:
            await client.connect(PeerInfo(host.get_id(), host.get_addrs()))
            connected = True
        except Exception:  # any failure to connect is the answer
            connected = False
    return connected


async def test_upstream_defaults_let_a_plaintext_dialler_pass_for_anyone() -> None:
    victim = Identity.generate()
    stock = new_host(key_pair=create_new_key_pair(), connection_config=connection_config())
    async with stock.run([LOOPBACK]), dialler("plaintext", claiming(victim)) as impostor:
        assert await try_to_connect(impostor, stock)
        # The stock host believes it is talking to the victim.
        swarm: Any = stock.get_network()
        assert ID(victim.peer_id) in swarm.connections
        await stock.close()


def test_llamanet_hosts_offer_noise_alone() -> None:
    host = build_host(Identity.generate(), [LOOPBACK])
    upgrader: Any = host.get_network().upgrader  # type: ignore[attr-defined]
    assert list(upgrader.security_multistream.transports) == [NOISE_PROTOCOL_ID]
    assert list(noise_only(create_new_key_pair())) == [NOISE_PROTOCOL_ID]


def reputation_peers(node: Node) -> set[bytes]:
    path = node.reputation.path
    assert path is not None and path.exists()
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT peer FROM reputation")}


@pytest.mark.parametrize("security", sorted(SECURITY))
async def test_a_dialler_without_noise_is_refused_and_leaves_no_trace(
    tmp_path: Path, security: str
) -> None:
    victim = Identity.generate()
    async with start_node(tmp_path / "node") as node:
        for key_pair in (create_new_key_pair(), claiming(victim)):
            async with dialler(security, key_pair) as stranger:
                assert not await try_to_connect(stranger, node)
                peer = ID.from_pubkey(key_pair.public_key)
                swarm: Any = node.host.get_network()
                assert peer not in swarm.connections
                assert peer.to_bytes() not in node.registry
                assert peer.to_bytes() not in node.dht.routing_table_peers()
                assert peer.to_bytes() not in reputation_peers(node)
                assert not node.dht.server.answered and not node.dht.server.refused
        # The node itself is untouched: a peer over Noise is served.
        async with start_node(tmp_path / "peer", bootstrap=(node.addrs()[0],)) as peer_node:
            answer = await peer_node.ask("math.eval", "6*7", peer=node.peer_id_text)
            assert answer.output == 42


def test_a_dial_to_an_address_under_the_wrong_peer_id_fails() -> None:
    # Noise compares the key the listener proves with the peer ID that was dialled
    # (an address from mDNS, a DHT referral or a bootstrap file names the peer it
    # expects).
    async def run() -> None:
        a = build_host(Identity.generate(), [LOOPBACK])
        b = build_host(Identity.generate(), [LOOPBACK])
        async with a.run([LOOPBACK]), b.run([LOOPBACK]):
            wrong = ID(Identity.generate().peer_id)
            with trio.move_on_after(10):
                with pytest.raises(Exception, match=r"(?i)fail|mismatch|dial|connect"):
                    await b.connect(PeerInfo(wrong, a.get_addrs()))
            swarm: Any = b.get_network()
            assert wrong not in swarm.connections and a.get_id() not in swarm.connections
            await a.close()
            await b.close()

    trio.run(run)


def certify(admin: Identity, member: Identity, home: Path) -> None:
    cert = issue_certificate(
        admin,
        admin_peer=admin.peer_id,
        swarm="lab",
        member=member.peer_id,
        now=time.time(),
        lifetime=86400,
    )
    (home / "membership.cert").write_bytes(cert.encode())


@pytest.mark.parametrize("mode", ["allow_peers", "certificate"])
async def test_a_plaintext_dialler_claiming_a_members_id_cannot_enter_a_private_swarm(
    tmp_path: Path, mode: str
) -> None:
    member = load_or_create_identity(tmp_path / "member")
    admin = Identity.generate()
    certify(admin, member, tmp_path / "member")
    private: dict[str, Any] = (
        {"swarm": "lab", "allow_peers": (member.peer_id_text,)}
        if mode == "allow_peers"
        else {"swarm": "lab", "swarm_admin": admin.peer_id_text}
    )
    if mode == "certificate":
        certify(admin, load_or_create_identity(tmp_path / "guarded"), tmp_path / "guarded")
    async with start_node(tmp_path / "guarded", **private) as guarded:
        async with dialler("plaintext", claiming(member)) as impostor:
            assert not await try_to_connect(impostor, guarded)
        swarm: Any = guarded.host.get_network()
        assert ID(member.peer_id) not in swarm.connections
        assert member.peer_id not in guarded.registry
        assert guarded.admission.refused_peers[member.peer_id] == 0
        if mode == "certificate":
            assert not guarded.allowed(member.peer_id)
        # The real member, over Noise, still gets in.
        own = dict(private)
        if mode == "allow_peers":
            own["allow_peers"] = (guarded.peer_id_text,)
        async with start_node(tmp_path / "member", bootstrap=(guarded.addrs()[0],), **own) as real:
            assert (await real.ask("math.eval", "2+2", peer=guarded.peer_id_text)).output == 4
