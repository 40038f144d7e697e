"""Who is still there: the peers we watch are pinged on the liveness table's
schedule, a peer that stops answering is declared departed (and dropped from the
registry, the routing table and the LAN's instances), and the last time each
peer answered us is kept for listings."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Final

import trio
from libp2p.abc import IHost
from libp2p.host.ping import ID as PING_PROTOCOL
from libp2p.host.ping import perform_ping_roundtrip
from libp2p.peer.id import ID

from llamanet.adapters.dht import LlamanetDHT
from llamanet.adapters.libp2p_host import NETWORK_ERRORS
from llamanet.discovery.liveness import LivenessTable
from llamanet.discovery.registry import Registry

log = logging.getLogger(__name__)

LAST_SEEN_KEPT: Final = 4096


class Presence:
    """Pings, departures and last sightings for one node.  ``forget`` is called
    with each departed peer for what else holds it (the LAN's instances)."""

    def __init__(
        self,
        *,
        host: IHost,
        table: LivenessTable,
        registry: Registry,
        dht: LlamanetDHT,
        clock: Callable[[], float],
        forget: Callable[[bytes], None],
    ) -> None:
        self._host = host
        self.table = table
        self._registry = registry
        self._dht = dht
        self._clock = clock
        self._forget = forget
        self.departed: dict[bytes, float] = {}
        """Peers seen leaving, and when; their DHT records are not trusted as alive."""
        self.last_seen: dict[bytes, float] = {}
        """When each peer last answered us (ping, record fetch, task), oldest first."""

    async def run(self) -> None:
        """Ping every watched peer when the table says it is due."""
        async with trio.open_nursery() as nursery:
            while True:
                now = trio.current_time()
                for peer in self.table.due(now):
                    nursery.start_soon(self._ping, peer)
                next_at = self.table.next_due_at()
                wait = 1.0 if next_at is None else min(1.0, max(0.05, next_at - now))
                await trio.sleep(wait)

    async def answers_ping(self, peer: bytes) -> bool:
        """Whether ``peer`` answers one ping (over its authenticated connection)
        within the table's timeout."""
        with trio.move_on_after(self.table.config.timeout):
            try:
                stream = await self._host.new_stream(ID(peer), [PING_PROTOCOL])
                try:
                    await perform_ping_roundtrip(stream)
                    return True
                finally:
                    with contextlib.suppress(*NETWORK_ERRORS):
                        await stream.close()
            except (*NETWORK_ERRORS, ValueError) as exc:
                log.debug("ping of %s failed: %r", ID(peer), exc)
        return False

    async def _ping(self, peer: bytes) -> None:
        ok = await self.answers_ping(peer)
        now = trio.current_time()
        if ok:
            self.table.ping_succeeded(peer, now)
            self.seen(peer)
        elif self.table.ping_failed(peer, now):
            self.depart(peer, f"no answer to {self.table.config.max_failures} pings")

    def depart(self, peer: bytes, why: str) -> None:
        """Forget a peer that left: it stops being a candidate at once."""
        self.departed[peer] = self._clock()
        self.table.unwatch(peer)
        removed = self._registry.remove(peer)
        with contextlib.suppress(KeyError, ValueError):
            self._dht.remove_peer(peer)
        self._forget(peer)
        log.info("peer %s left (%s)%s", ID(peer), why, "" if removed else "; it had no record")

    def returned(self, peer: bytes) -> None:
        """``peer`` answered us itself again: it is no longer departed."""
        self.departed.pop(peer, None)

    def seen(self, peer: bytes) -> None:
        """``peer`` answered us just now."""
        self.last_seen.pop(peer, None)
        self.last_seen[peer] = self._clock()
        if len(self.last_seen) > LAST_SEEN_KEPT:
            del self.last_seen[next(iter(self.last_seen))]

    def state_of(self, peer: bytes) -> str:
        """``alive`` or ``suspect`` (answering our pings or not lately), ``gone``
        (declared departed) or ``unwatched`` (not pinged: known from the DHT only)."""
        if peer in self.table:
            return "suspect" if self.table.is_suspect(peer) else "alive"
        return "gone" if peer in self.departed else "unwatched"
