"""LAN discovery: the peers mDNS announces are dialled under the peer ID they
announce, checked and met; a goodbye drops a peer only once a ping confirms it.

mDNS is unauthenticated multicast, so nothing it says is believed on its own:
the dial proves the peer ID (Noise), the record is fetched and verified like any
other, and a goodbye only prompts pings over the authenticated connection.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Final

import multiaddr
import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from llamanet.adapters.libp2p_host import KAD_PROTOCOL, NETWORK_ERRORS, TASK_PROTOCOL
from llamanet.adapters.mdns import MdnsDiscovery, MdnsEvent, PeerGone
from llamanet.discovery.mdns_records import MdnsPeer, new_peer_name
from llamanet.errors import RecordError, RemoteProtocolError, TransportError

from .contacts import BOOTSTRAP_TIMEOUT

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger(__name__)

MEET_ATTEMPTS: Final = 4
MEET_TIMEOUT: Final = BOOTSTRAP_TIMEOUT
"""Longest one attempt to meet a LAN peer (dial, identify, record) may take: as
long as a bootstrap dial."""
GOODBYE_CHECKS: Final = 4
GOODBYE_CHECK_INTERVAL: Final = 0.5
"""An mDNS goodbye is believed once a ping fails; a peer that answers this many
pings this far apart (while its own shutdown runs) is kept."""


class LanDiscovery:
    """One node's view of its LAN: who announced which mDNS instance, who is not a
    llamanet node, and how many goodbyes were not believed."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self.mdns: MdnsDiscovery | None = None
        self.instances: dict[str, bytes] = {}
        """mDNS instance name -> the peer ID its TXT record named."""
        self.not_llamanet: set[bytes] = set()
        """LAN peers without the task protocol: never met again."""
        self.ignored_goodbyes = 0
        """mDNS goodbyes for peers that still answered pings (spoofed, or early)."""

    def forget(self, peer: bytes) -> None:
        """Drop ``peer``'s instances (it left)."""
        for instance in [i for i, p in self.instances.items() if p == peer]:
            del self.instances[instance]

    async def start(self, nursery: trio.Nursery) -> None:
        """Announce the node and listen for others, in ``nursery``."""
        node = self._node
        self.mdns = MdnsDiscovery(
            node.config.mdns_service, new_peer_name(), node.peer_id, node.addrs
        )
        send, receive = trio.open_memory_channel[MdnsEvent](256)
        await nursery.start(self.mdns.run, send)
        nursery.start_soon(self.on_events, receive, nursery)

    async def on_events(
        self, events: trio.MemoryReceiveChannel[MdnsEvent], nursery: trio.Nursery
    ) -> None:
        async with events:
            async for event in events:
                if isinstance(event, PeerGone):
                    peer = self.instances.get(event.instance)
                    if peer is not None:
                        nursery.start_soon(self.confirm_goodbye, peer)
                    continue
                found = event.peer
                self.instances[found.instance] = found.peer_id
                if found.peer_id in self.not_llamanet:
                    continue
                liveness = self._node.liveness
                if found.peer_id in liveness and not liveness.is_suspect(found.peer_id):
                    continue
                nursery.start_soon(self.meet, found)

    async def meet(self, found: MdnsPeer) -> None:
        """Connect to a peer announced on the LAN, check it speaks llamanet, fetch and
        verify its record, and add it to the DHT routing table.  Transient failures
        (two peers dialling each other at once lose one connection) are retried."""
        peer = found.peer_id
        # Another host's loopback address means nothing here.
        usable = [a for a in found.addrs if not a.startswith(("/ip4/127.", "/ip6/::1/"))]
        addrs = [multiaddr.Multiaddr(a) for a in usable or found.addrs]
        log.info("mDNS: found %s at %s", ID(peer), " ".join(str(a) for a in addrs))
        self._node.contacts.remember_addrs(peer, addrs)
        for attempt in range(MEET_ATTEMPTS):
            if attempt:
                await trio.sleep(0.5 * 2**attempt)
            outcome = await self._try_meet(peer, addrs)
            if outcome is not None:
                if not outcome:
                    log.info("could not meet LAN peer %s", ID(peer))
                return

    async def _try_meet(self, peer: bytes, addrs: list[multiaddr.Multiaddr]) -> bool | None:
        """``True`` met, ``False`` gave up for good, ``None`` worth another try."""
        outcome: bool | None = None
        with trio.move_on_after(MEET_TIMEOUT):
            outcome = await self._meet(peer, addrs)
        return outcome

    async def _meet(self, peer: bytes, addrs: list[multiaddr.Multiaddr]) -> bool | None:
        try:
            await self._node.host.connect(PeerInfo(ID(peer), addrs))
        except NETWORK_ERRORS as exc:
            log.info("mDNS peer %s unreachable: %s", ID(peer), exc)
            return None
        protocols = await self._protocols_of(peer)
        if protocols is not None and TASK_PROTOCOL not in protocols:
            self.not_llamanet.add(peer)
            if KAD_PROTOCOL in protocols:
                # Another libp2p implementation on our DHT: it can route and store
                # records, so it stays in the routing table, but it runs no tasks.
                await self._node.dht.add_peer(peer)
                log.info(
                    "mDNS peer %s does not speak %s but speaks %s: kept as a DHT server "
                    "only, never asked for tasks",
                    ID(peer), TASK_PROTOCOL, KAD_PROTOCOL,
                )  # fmt: skip
                return False
            log.info(
                "mDNS peer %s speaks neither %s nor %s: disconnected, and left out of "
                "the routing table",
                ID(peer), TASK_PROTOCOL, KAD_PROTOCOL,
            )  # fmt: skip
            self._node.dht.remove_peer(peer)
            with contextlib.suppress(*NETWORK_ERRORS):
                await self._node.host.disconnect(ID(peer))
            return False
        try:
            signed = await self._node.fetch_record(peer, source="mdns")
        except RecordError as exc:
            log.info("record of mDNS peer %s refused: %s", ID(peer), exc)
            return False
        except (TransportError, RemoteProtocolError) as exc:
            log.info("record of mDNS peer %s not fetched: %s", ID(peer), exc)
            return None
        await self._node.dht.add_peer(peer)
        self._node.liveness.watch(peer, trio.current_time())
        self._node.presence.returned(peer)
        log.info("met %s on the LAN (%s)", ID(peer), ", ".join(signed.record.caps))
        return True

    async def _protocols_of(self, peer: bytes) -> list[str] | None:
        """The protocols ``peer`` offers, once identify has told us (up to 2 s), or
        ``None`` if it has not: such a peer gets the benefit of the doubt."""
        store = self._node.host.get_peerstore()
        for _ in range(40):
            try:
                protocols = store.get_protocols(ID(peer))
            except NETWORK_ERRORS:
                protocols = []
            if protocols:
                return [str(p) for p in protocols]
            await trio.sleep(0.05)
        return None

    async def confirm_goodbye(self, peer: bytes) -> None:
        """An mDNS goodbye is unauthenticated multicast: anyone on the LAN can send
        one for any instance.  It only prompts a check; the peer is dropped once it
        also stops answering pings over its Noise-authenticated connection."""
        for check in range(GOODBYE_CHECKS):
            if check:
                await trio.sleep(GOODBYE_CHECK_INTERVAL)
            if peer in self._node.presence.departed:
                return  # found out some other way meanwhile
            if not await self._node.presence.answers_ping(peer):
                self._node.presence.depart(peer, "said goodbye on mDNS")
                return
        self.ignored_goodbyes += 1
        log.info("ignored an mDNS goodbye for %s: it still answers pings", ID(peer))
