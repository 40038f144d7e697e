"""The peers a node knows and their verified records: bootstrap, connections as
they come (admitted, then offered to the routing table), and record intake from
every path (a direct fetch, the DHT, the LAN), ending in :meth:`Contacts.find`.

Only records that pass :func:`~llamanet.protocol.records.open_record` reach the
registry; a peer's addresses are remembered from its own signed record or from
where we found it, and only ever dialled under its peer ID.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Final

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from llamanet.adapters.caps import fetch_record_bytes
from llamanet.adapters.dht import LlamanetDHT
from llamanet.adapters.libp2p_host import CAPS_PROTOCOL, NETWORK_ERRORS, open_stream
from llamanet.discovery.bootstrap import BootstrapPeer, parse_bootstrap_file, parse_peer_addr
from llamanet.discovery.registry import Registry
from llamanet.errors import (
    PeerUnreachableError,
    RecordError,
    RemoteProtocolError,
    TransportError,
)
from llamanet.protocol.capabilities import validate_capability
from llamanet.protocol.config import RecordPolicy
from llamanet.protocol.records import SignedRecord, open_record

from .admission import Admission
from .config import NodeConfig
from .presence import Presence

log = logging.getLogger(__name__)

ADDRESS_TTL: Final = 3600
FIND_FETCH_TIMEOUT: Final = 5.0
FIND_LIMIT: Final = 20
"""Providers :meth:`Contacts.find` fetches records of, by default."""
FIND_TIMEOUT: Final = 10.0
"""Longest :meth:`Contacts.find` looks by default; ``ask`` gives it at most half the
time it has left."""
BOOTSTRAP_TIMEOUT: Final = 5.0
CONNECTED_SETTLE: Final = 0.2
"""How long a new connection waits for identify before it is offered to the
routing table (which checks the peer speaks our DHT)."""


class Contacts:
    """Bootstrap, connections and verified records for one node."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        peer_id: bytes,
        host: IHost,
        dht: LlamanetDHT,
        registry: Registry,
        policy: RecordPolicy,
        rejected: Counter[str],
        admission: Admission,
        presence: Presence,
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._peer_id = peer_id
        self._host = host
        self._dht = dht
        self._registry = registry
        self._policy = policy
        self._rejected = rejected
        self._admission = admission
        self._presence = presence
        self._clock = clock
        self.bootstrap_peers: list[BootstrapPeer] = []

    # -- bootstrap and connections ---------------------------------------------------

    def _bootstrap_list(self) -> list[BootstrapPeer]:
        peers: list[BootstrapPeer] = []
        path = self._config.resolved_bootstrap_file()
        if path is not None:
            peers.extend(parse_bootstrap_file(path))
        for i, text in enumerate(self._config.bootstrap, 1):
            peers.append(parse_peer_addr(text, where=f"--bootstrap #{i}"))
        return [p for p in peers if p.peer_id != self._peer_id]

    async def bootstrap(self) -> int:
        """Connect to the bootstrap peers and look ourselves up; returns how many
        bootstrap peers answered."""
        self.bootstrap_peers = self._bootstrap_list()
        reached = 0

        async def reach(peer: BootstrapPeer) -> None:
            nonlocal reached
            if await self.connect(peer.addr, quiet=True):
                reached += 1

        async with trio.open_nursery() as nursery:
            for peer in self.bootstrap_peers:
                nursery.start_soon(reach, peer)
        if self.bootstrap_peers:
            await self._dht.refresh(full=False)
            log.info(
                "bootstrap: reached %d of %d peers; routing table has %d",
                reached,
                len(self.bootstrap_peers),
                self._dht.routing_table_size(),
            )
        return reached

    async def connect(self, addr: str, *, quiet: bool = False) -> bytes | None:
        """Dial a multiaddr with ``/p2p/<id>`` and add the peer to the DHT."""
        peer = parse_peer_addr(addr, where="address")
        info = PeerInfo(ID(peer.peer_id), [multiaddr.Multiaddr(peer.transport_addr)])
        with trio.move_on_after(BOOTSTRAP_TIMEOUT) as scope:
            try:
                await self._host.connect(info)
            except NETWORK_ERRORS as exc:
                if not quiet:
                    raise PeerUnreachableError(f"cannot connect to {addr}: {exc}") from exc
                log.warning("cannot reach %s: %s", addr, exc)
                return None
        if scope.cancelled_caught:
            if not quiet:
                raise PeerUnreachableError(f"connecting to {addr} timed out")
            log.warning("connecting to %s timed out", addr)
            return None
        await self._dht.add_peer(peer.peer_id)
        return peer.peer_id

    async def add_connected(self, connections: trio.MemoryReceiveChannel[bytes]) -> None:
        """Admit each new connection and offer its peer to the routing table:
        py-libp2p only adds peers that sent *us* a DHT request (the routing table
        itself checks they speak our DHT protocol)."""
        async with connections, trio.open_nursery() as nursery:
            async for peer in connections:
                nursery.start_soon(self._on_connected, peer)

    async def _on_connected(self, peer: bytes) -> None:
        if not await self._admission.admit_connection(peer):
            return
        await trio.sleep(CONNECTED_SETTLE)
        await self._dht.add_peer(peer)

    # -- records ---------------------------------------------------------------------

    def remember_addrs(self, peer: bytes, addrs: Sequence[multiaddr.Multiaddr]) -> None:
        """Keep ``addrs`` to dial ``peer`` by (under its peer ID) for a while."""
        if addrs:
            self._host.get_peerstore().add_addrs(ID(peer), list(addrs), ADDRESS_TTL)

    def accept_record(
        self, envelope: bytes, *, source: str, expected_peer: bytes | None = None
    ) -> SignedRecord:
        """Verify a record from any path and hold it; raises :class:`RecordError`."""
        try:
            signed = open_record(
                envelope, now=self._clock(), policy=self._policy, expected_peer=expected_peer
            )
        except RecordError as exc:
            self._rejected[exc.reason] += 1
            raise
        return self._hold(signed, source)

    def _hold(self, signed: SignedRecord, source: str) -> SignedRecord:
        """Put a verified record in the registry (refusing replays) and remember
        the peer's addresses."""
        try:
            self._registry.offer(signed, now=self._clock(), source=source)
        except RecordError as exc:
            self._rejected[exc.reason] += 1
            raise
        self.remember_addrs(signed.peer, [multiaddr.Multiaddr(a) for a in signed.record.addrs])
        return signed

    async def fetch_record(self, peer: bytes, *, source: str = "direct") -> SignedRecord:
        """Ask ``peer`` directly for its record (the direct path) and verify it;
        ``source`` says how we came to ask (``direct``, ``mdns``)."""
        stream = await open_stream(self._host, peer, CAPS_PROTOCOL)
        envelope = await fetch_record_bytes(stream)
        signed = self.accept_record(envelope, source=source, expected_peer=peer)
        self._presence.seen(peer)
        # We just talked to it: watch it, so that it leaves the candidates quickly
        # if it goes away.
        if peer not in self._presence.table:
            self._presence.table.watch(peer, trio.current_time())
        return signed

    async def lookup_record(self, peer: bytes) -> SignedRecord | None:
        """The peer's newest record from the DHT (the DHT path), verified and held."""
        signed = await self._dht.get_record(peer)
        return None if signed is None else self._hold(signed, "dht")

    async def _learn(self, info: PeerInfo) -> None:
        peer = bytes(info.peer_id.to_bytes())
        if self._registry.get(peer, now=self._clock() + 60) is not None:
            return
        self.remember_addrs(peer, info.addrs)
        with trio.move_on_after(FIND_FETCH_TIMEOUT):
            try:
                await self.fetch_record(peer)
                self._presence.returned(peer)
                return
            except (TransportError, RemoteProtocolError, RecordError) as exc:
                log.debug("direct record fetch from %s failed: %s", info.peer_id, exc)
        if peer in self._presence.departed:
            return  # its DHT record outlives it; only the peer itself brings it back
        with trio.move_on_after(FIND_FETCH_TIMEOUT):
            try:
                await self.lookup_record(peer)
            except RecordError as exc:
                log.debug("DHT record of %s refused: %s", info.peer_id, exc)

    async def find(
        self, capability: str, *, limit: int = FIND_LIMIT, timeout: float = FIND_TIMEOUT
    ) -> list[SignedRecord]:
        """Verified records of peers offering ``capability`` (never ourselves).

        Looks the capability up in the DHT, fetches and verifies the record of each
        provider not already known, and answers from the registry, so only peers
        whose signed record checks out are ever returned.
        """
        validate_capability(capability)
        with trio.move_on_after(timeout):
            providers = await self._dht.find_providers(capability, count=limit)
            async with trio.open_nursery() as nursery:
                for info in providers:
                    nursery.start_soon(self._learn, info)
        return self.known_providers(capability)[:limit]

    def known_providers(self, capability: str) -> list[SignedRecord]:
        """Held, unexpired records offering ``capability``, never our own nor a peer
        the gate does not admit."""
        found = self._registry.find(capability, now=self._clock())
        return [r for r in found if r.peer != self._peer_id and self._admission.allowed(r.peer)]
