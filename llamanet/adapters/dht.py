"""Capability records and provider records on py-libp2p's ``KadDHT``.

KadDHT supplies the routing table, the iterative ``FIND_NODE`` lookup, the RPC
handlers and the stores.  Lookups of records and providers are ours, built from
its per-peer RPCs, because in py-libp2p 0.8.1 (each pinned by a test in
``tests/adapters/test_libp2p_upstream.py``):

* ``get_value`` answers from the local store first and returns that copy forever,
  even after the owner published a higher ``seq``;
* ``find_providers`` answers from the local provider store first (which also
  caches every provider it ever found), so new providers are never found, and
  returns duplicates when it does go to the network;
* ``put_value`` reports success when every replica rejected the value;
* ``provide`` reports success while receivers drop more than 10 ``ADD_PROVIDER``
  per 10 s from one sender; we pace our own announcements below that, and stamp
  upstream's republish bookkeeping so its 600 s maintenance loop does not
  re-announce everything in one unpaced burst;
* the ``FIND_NODE`` handler refuses a key longer than 50 bytes that is not a
  multihash, which includes every record key (``/llamanet/caps/<id>`` is 67
  bytes), so neither upstream's ``put_value`` nor a go or js peer's walk gets
  past it.  Inbound requests are answered by :class:`~.kad_server.KadServer`
  instead, and every lookup sends the raw key, placed at sha256(key) as the
  spec, go and js place it;
* inbound KAD streams have no idle limit, and a client that cancels a query also
  cancels its ``stream.close()``, so a server slot (12 in all) can be held
  forever: every inbound KAD stream here is bounded in time;
* the ``GET_PROVIDERS`` client drops the addresses of the closer peers an answer
  names, so a provider walk cannot follow a referral to a peer it did not know:
  our walk sends the RPC itself and keeps them.

Every record that comes back from the network is checked by
:class:`CapsValidator`; nothing unverified leaves this module.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import trio
import varint
from google.protobuf.message import DecodeError as ProtobufDecodeError
from libp2p.abc import IHost, INetStream
from libp2p.kad_dht.common import MAX_DHT_MESSAGE_SIZE
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.kad_dht.pb.kademlia_pb2 import Message, Record
from libp2p.kad_dht.utils import maybe_consume_signed_record, sort_peer_ids_by_distance
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.peer.peerstore import env_to_send_in_RPC
from libp2p.records.validator import NamespacedValidator, Validator
from libp2p.tools.anyio_service import background_trio_service
from libp2p.utils.varint import read_varint_prefixed_bytes_limited

from llamanet.errors import DecodeError, RecordError
from llamanet.protocol.capabilities import (
    capability_prefixes,
    provider_key,
    provider_key_string,
)
from llamanet.protocol.config import RecordPolicy
from llamanet.protocol.peer_ids import peer_id_from_text
from llamanet.protocol.records import DHT_KEY_PREFIX, SignedRecord, open_record
from llamanet.trust.limits import PeerBuckets, TokenBucket

from .dht_stats import DhtStats, current_trace, tracing
from .kad_server import KadServer
from .libp2p_host import KAD_PROTOCOL, NETWORK_ERRORS, parse_multiaddrs

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

# Receivers drop ADD_PROVIDER beyond 10 per 10 s per sender (kad_dht.py
# _provider_rate_max/_provider_rate_window).  A token bucket lets through at most
# burst + 10 s * rate messages in any 10 s, which must stay below 10; each
# announcement sends one ADD_PROVIDER to each receiver.
PROVIDE_BURST: Final = 5
PROVIDE_RATE: Final = 0.45
# Queries in flight per round of a walk (the Kademlia spec's alpha), and how many
# peers holding a provider list end a provider walk.
ALPHA: Final = 3
PROVIDER_QUORUM: Final = 3
BUCKET_SIZE: Final = 20


REFERRAL_ADDR_TTL: Final = 3600
"""Seconds the peerstore keeps the addresses a DHT answer gave for a closer peer
(what upstream's FIND_NODE client uses)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DHTConfig:
    rpc_timeout: float = 5.0
    """Per-peer RPC timeout in our lookups, in seconds."""
    lookup_timeout: float = 15.0
    """Bound on one whole lookup (closest peers + queries), in seconds."""
    inbound_stream_timeout: float = 30.0
    """Longest an inbound KAD stream may live; py-libp2p opens one per RPC."""
    replication: int = 20
    """How many of the closest peers receive a record (Kademlia's k)."""
    streams_per_peer_per_s: float = 20.0
    """Inbound KAD streams one peer may open per second (burst: five times that)."""
    max_streams_per_peer: int = 12
    """Inbound KAD streams one peer may hold open at once."""
    max_inbound_streams: int = 64
    """Inbound KAD streams served at once, from everyone."""
    max_peers_per_subnet: int = 3
    """Routing-table entries sharing one public /24 or /48 (0: no cap)."""


@dataclass(slots=True)
class _Outcome:
    value: str = "empty"


class CapsValidator(Validator):
    """KadDHT validator for ``/llamanet/caps/<peer>``: the key's peer must have signed a
    valid record; ``select`` keeps the highest ``seq``.  Counts rejections by reason."""

    def __init__(self, policy: RecordPolicy, clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.clock = clock
        self.rejections: Counter[str] = Counter()

    def open(self, key: str, value: bytes) -> SignedRecord:
        if not key.startswith(DHT_KEY_PREFIX):
            self.rejections["bad_key"] += 1
            raise DecodeError(f"not a llamanet record key: {key!r}")
        try:
            peer = peer_id_from_text(key[len(DHT_KEY_PREFIX) :])
            return open_record(value, now=self.clock(), policy=self.policy, expected_peer=peer)
        except RecordError as exc:
            self.rejections[exc.reason] += 1
            raise
        except DecodeError:
            self.rejections["bad_key"] += 1
            raise

    def validate(self, key: str, value: bytes) -> None:
        self.open(key, value)

    def select(self, key: str, values: list[bytes]) -> int:
        best, best_seq = 0, -1
        for i, value in enumerate(values):
            try:
                seq = self.open(key, value).seq
            except (RecordError, DecodeError):
                continue
            if seq > best_seq:
                best, best_seq = i, seq
        return best


class LlamanetDHT:
    """A server-mode KadDHT speaking ``/llamanet/kad/1.0.0`` with llamanet's lookups."""

    def __init__(
        self,
        host: IHost,
        validator: CapsValidator,
        *,
        swarm: str,
        config: DHTConfig | None = None,
        admit: Callable[[bytes], Awaitable[bool]] | None = None,
    ) -> None:
        self.host = host
        self._admit = admit
        """Whether a peer may use our DHT at all (a private swarm's gate); ``None``:
        everyone may."""
        self.validator = validator
        self.swarm = swarm
        self.config = config or DHTConfig()
        namespaced = NamespacedValidator({"llamanet": validator}, strict_validation=True)
        self.kad = KadDHT(
            host,
            DHTMode.SERVER,
            validator=namespaced,
            validator_changed=True,
            strict_validation=True,
        )
        # Upstream caps peers per subnet in each bucket (2) but not across the
        # table unless asked; go-libp2p's table-wide default is 3.  Private and
        # loopback addresses are exempt upstream, so LANs and tests are unaffected.
        self.kad.routing_table.max_peers_per_subnet_table = self.config.max_peers_per_subnet
        host.set_stream_handler(KAD_PROTOCOL, self._handle_kad_stream)
        # py-libp2p's KadDHT bounds concurrent inbound streams only in total (12,
        # resetting the rest), so one peer could hold every slot: the total is raised
        # and each peer gets its own rate and share of it.  A busy requester does
        # hold about ten at once (lookups in parallel), so the share is not smaller.
        self.server = KadServer(self.kad, max_inbound_streams=self.config.max_inbound_streams)
        self._stream_buckets = PeerBuckets(
            self.config.streams_per_peer_per_s, 5 * self.config.streams_per_peer_per_s
        )
        self._open_streams: Counter[bytes] = Counter()
        self.refused_streams = 0
        """Inbound KAD streams reset because their peer was over its limits."""
        self._provide_bucket = TokenBucket(PROVIDE_BURST, PROVIDE_RATE)
        self._provide_lock = trio.Lock()
        self.stats = DhtStats()
        self._trace_upstream_walks()

    def _trace_upstream_walks(self) -> None:
        # Upstream's iterative FIND_NODE walk (used by our record lookups and by its
        # provide) reports neither its queries nor its depth; every query it sends
        # goes through this one method, so the adapter counts them there.
        routing = self.kad.peer_routing
        upstream = routing._query_peer_for_closest

        async def traced(peer: ID, target_key: bytes) -> list[ID]:
            named: list[ID] = []
            try:
                named = await upstream(peer, target_key)
                return named
            finally:
                trace = current_trace()
                if trace is not None:
                    trace.queried(peer.to_bytes(), (p.to_bytes() for p in named))

        setattr(routing, "_query_peer_for_closest", traced)  # noqa: B010

    @contextlib.contextmanager
    def _measured(self, op: str) -> Iterator[_Outcome]:
        """Count ``op`` in :attr:`stats`; the block sets the outcome to ``"ok"`` when it
        found or stored something (a timed-out walk that did not is a timeout)."""
        started = trio.current_time()
        outcome = _Outcome()
        with tracing() as trace:
            try:
                yield outcome
            except trio.Cancelled:
                # The caller gave up; the operation neither succeeded nor failed.
                raise
            except Exception:
                outcome.value = "error"
                self.stats.record(op, outcome.value, trio.current_time() - started, trace)
                raise
            if outcome.value == "empty" and trace.timed_out:
                outcome.value = "timeout"
            self.stats.record(op, outcome.value, trio.current_time() - started, trace)

    # -- lifecycle -----------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run KadDHT's service (maintenance loop) until cancelled.  Must be running
        before we connect to bootstrap peers."""
        async with background_trio_service(self.kad):
            task_status.started()
            await trio.sleep_forever()

    async def _handle_kad_stream(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id.to_bytes()
        if self._admit is not None and not await self._admit(peer):
            # Not a member of this private swarm: it neither stores nor learns
            # anything here, and never enters the routing table.
            self.refused_streams += 1
            log.debug("reset a KAD stream from %s: not admitted", stream.muxed_conn.peer_id)
            with contextlib.suppress(*NETWORK_ERRORS):
                await stream.reset()
            return
        if self._open_streams[
            peer
        ] >= self.config.max_streams_per_peer or self._stream_buckets.try_take(
            peer, trio.current_time()
        ):
            self.refused_streams += 1
            log.debug("reset a KAD stream from %s: over its limits", stream.muxed_conn.peer_id)
            with contextlib.suppress(*NETWORK_ERRORS):
                await stream.reset()
            return
        self._open_streams[peer] += 1
        try:
            with trio.move_on_after(self.config.inbound_stream_timeout) as scope:
                await self.server.serve(stream)
        finally:
            self._open_streams[peer] -= 1
            if self._open_streams[peer] <= 0:
                del self._open_streams[peer]
        if scope.cancelled_caught:
            log.debug("reset a KAD stream from %s held past the limit", stream.muxed_conn.peer_id)
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(1),
                contextlib.suppress(*NETWORK_ERRORS),
            ):
                await stream.reset()

    # -- routing table -------------------------------------------------------

    async def add_peer(self, peer_id: bytes) -> bool:
        """Put a connected peer in the routing table (py-libp2p does not do this for
        peers that never sent us a DHT request)."""
        try:
            return bool(await self.kad.add_peer(ID(peer_id)))
        except NETWORK_ERRORS as exc:
            log.debug("could not add %s to the routing table: %r", ID(peer_id), exc)
            return False

    def remove_peer(self, peer_id: bytes) -> None:
        """Take ``peer_id`` out of the routing table (if it is there)."""
        self.kad.routing_table.remove_peer(ID(peer_id))

    def routing_table_size(self) -> int:
        return int(self.kad.get_routing_table_size())

    def routing_table_peers(self) -> list[bytes]:
        return [bytes(p.to_bytes()) for p in self.kad.routing_table.get_peer_ids()]

    async def refresh(self, *, full: bool = True) -> None:
        """Look ourselves up, which fills the routing table with our neighbourhood;
        ``full`` also looks up a random key in every non-empty bucket (upstream's
        refresh), which costs a walk per bucket and is left to maintenance."""
        with self._measured("refresh") as outcome, trio.move_on_after(self.config.lookup_timeout):
            try:
                if full:
                    await self.kad.peer_routing.refresh_routing_table()
                    outcome.value = "ok"
                    return
                me = self.host.get_id()
                for peer in await self.kad.peer_routing.find_closest_peers_network(me.to_bytes()):
                    if peer != me:
                        await self.kad.add_peer(peer)
                        outcome.value = "ok"
            except NETWORK_ERRORS as exc:
                log.debug("routing table refresh failed: %r", exc)
                outcome.value = "error"

    async def _closest(self, key: bytes) -> list[ID]:
        peers: list[ID] = []
        with trio.move_on_after(self.config.lookup_timeout) as scope:
            peers = await self.kad.peer_routing.find_closest_peers_network(key)
        if scope.cancelled_caught:
            log.debug("closest-peer lookup for %s timed out", key[:12].hex())
            if (trace := current_trace()) is not None:
                trace.timed_out = True
        me = self.host.get_id()
        return [p for p in peers if p != me][: self.config.replication]

    # -- records ---------------------------------------------------------------

    async def put_record(self, record: SignedRecord) -> int:
        """Store ``record`` locally and at the closest peers; returns how many remote
        peers acknowledged it (0 when alone)."""
        key = self._record_key(record.peer)
        key_bytes = key.encode()
        self.validator.validate(key, record.envelope)
        self.kad.value_store.put(key_bytes, record.envelope)
        with self._measured("put_record") as outcome:
            peers = await self._closest(key_bytes)
            stored = 0

            async def store(peer: ID) -> None:
                nonlocal stored
                with trio.move_on_after(self.config.rpc_timeout):
                    try:
                        if await self.kad.value_store._store_at_peer(
                            peer, key_bytes, record.envelope
                        ):
                            stored += 1
                    finally:
                        if (trace := current_trace()) is not None:
                            trace.queried(peer.to_bytes(), ())

            async with trio.open_nursery() as nursery:
                for peer in peers:
                    nursery.start_soon(store, peer)
            if stored:
                outcome.value = "ok"
        log.debug("record seq %d stored at %d of %d peers", record.seq, stored, len(peers))
        return stored

    async def get_record(self, peer_id: bytes) -> SignedRecord | None:
        """The newest valid record of ``peer_id`` among the closest peers (and our own
        copy), fetched fresh from the network.  Peers that returned an older copy are
        sent the newest one (Kademlia entry correction)."""
        key = self._record_key(peer_id)
        key_bytes = key.encode()
        found: list[tuple[ID | None, SignedRecord]] = []
        local = self.kad.value_store.get(key_bytes)
        if local is not None:
            self._collect(found, None, key, local.value)
        with self._measured("get_record") as outcome:
            peers = await self._closest(key_bytes)

            async def query(peer: ID) -> None:
                with trio.move_on_after(self.config.rpc_timeout):
                    try:
                        answer: Any = await self.kad.value_store._get_from_peer(
                            peer, key_bytes, return_record=True
                        )
                    finally:
                        if (trace := current_trace()) is not None:
                            trace.queried(peer.to_bytes(), ())
                    if isinstance(answer, Record) and answer.value:
                        self._collect(found, peer, key, answer.value)

            async with trio.open_nursery() as nursery:
                for peer in peers:
                    nursery.start_soon(query, peer)
            if found:
                outcome.value = "ok"
        if not found:
            return None
        best = max(found, key=lambda item: item[1].seq)[1]
        stale = [p for p, rec in found if p is not None and rec.seq < best.seq]
        if local is None or self.validator.select(key, [local.value, best.envelope]) == 1:
            self.kad.value_store.put(key_bytes, best.envelope)
        if stale:
            async with trio.open_nursery() as nursery:
                for peer in stale:
                    nursery.start_soon(self._correct, peer, key_bytes, best.envelope)
        return best

    def _collect(
        self, found: list[tuple[ID | None, SignedRecord]], peer: ID | None, key: str, value: bytes
    ) -> None:
        try:
            found.append((peer, self.validator.open(key, value)))
        except (RecordError, DecodeError) as exc:
            log.debug("invalid record for %s from %s: %s", key, peer or "local store", exc)

    async def _correct(self, peer: ID, key: bytes, value: bytes) -> None:
        with trio.move_on_after(self.config.rpc_timeout):
            await self.kad.value_store._store_at_peer(peer, key, value)

    def _record_key(self, peer_id: bytes) -> str:
        return DHT_KEY_PREFIX + ID(peer_id).to_base58()

    # -- providers -------------------------------------------------------------

    async def provide(self, capabilities: Iterable[str]) -> list[str]:
        """Announce this node under each capability and its dotted prefixes, paced
        below receivers' rate limit.  Returns the keys (capability names) announced."""
        caps = list(capabilities)
        # Exact names first: when pacing delays some announcements, searches for a
        # full capability name (the common case) work soonest.
        names = list(dict.fromkeys([*caps, *(p for cap in caps for p in capability_prefixes(cap))]))
        async with self._provide_lock, trio.open_nursery() as nursery:
            for name in names:
                # Alone (the first node of a swarm), announcing only stores locally:
                # nobody receives it, so there is no rate to stay under.
                if self.routing_table_size() or self.host.get_connected_peers():
                    await trio.sleep(self._provide_bucket.wait_time(trio.current_time()))
                self._provide_bucket.try_take(trio.current_time())
                nursery.start_soon(self._provide_one, name)
        return names

    async def _provide_one(self, name: str) -> None:
        with self._measured("provide") as outcome:
            with trio.move_on_after(self.config.lookup_timeout) as scope:
                if await self.kad.provide(provider_key_string(self.swarm, name)):
                    outcome.value = "ok"
            if scope.cancelled_caught and (trace := current_trace()) is not None:
                trace.timed_out = True
        # Keep upstream's 600 s maintenance loop from re-announcing every key at
        # once (provider_store._republish_provider_records).
        self.kad.provider_store._last_republish[self._provider_multihash(name)] = time.time()

    async def find_providers(self, capability: str, count: int = 20) -> list[PeerInfo]:
        """Peers announced under ``capability`` (deduplicated; local and remote),
        never including ourselves.

        One iterative walk with ``GET_PROVIDERS`` (whose answers also name closer
        peers), ``ALPHA`` queries at a time from the closest known peers, until
        ``count`` providers are known or ``PROVIDER_QUORUM`` peers answered with
        providers (they hold the key's whole provider list) or no closer peer is
        left.  Stock py-libp2p runs a full ``FIND_NODE`` walk first and then asks
        every peer it found.
        """
        mh = self._provider_multihash(capability)
        me = self.host.get_id()
        store = self.kad.provider_store
        found: dict[ID, PeerInfo] = {
            info.peer_id: info for info in store.get_providers(mh) if info.peer_id != me
        }
        candidates = set(self.kad.routing_table.find_local_closest_peers(mh, BUCKET_SIZE))
        if len(candidates) < BUCKET_SIZE:
            candidates.update(self.host.get_connected_peers())
        candidates.discard(me)
        queried: set[ID] = set()
        answered = 0

        async def query(peer: ID) -> None:
            nonlocal answered
            with trio.move_on_after(self.config.rpc_timeout):
                closer: list[ID] = []
                providers: list[PeerInfo] = []
                try:
                    providers, closer = await self._ask_for_providers(peer, mh)
                except (*NETWORK_ERRORS, ProtobufDecodeError, ValueError) as exc:
                    log.debug("GET_PROVIDERS to %s failed: %r", peer, exc)
                finally:
                    if (trace := current_trace()) is not None:
                        trace.queried(peer.to_bytes(), (p.to_bytes() for p in closer))
                if providers:
                    answered += 1
                for info in providers:
                    if info.peer_id != me and (info.addrs or info.peer_id not in found):
                        found[info.peer_id] = info
                candidates.update(p for p in closer if p != me)

        with self._measured("find_providers") as outcome:
            with trio.move_on_after(self.config.lookup_timeout) as scope:
                while len(found) < count and answered < PROVIDER_QUORUM:
                    ordered = sort_peer_ids_by_distance(mh, list(candidates - queried))
                    batch = ordered[:ALPHA]
                    if not batch:
                        break
                    queried.update(batch)
                    async with trio.open_nursery() as nursery:
                        for peer in batch:
                            nursery.start_soon(query, peer)
            if found:
                outcome.value = "ok"
            elif scope.cancelled_caught and (trace := current_trace()) is not None:
                trace.timed_out = True
        return list(found.values())[:count]

    async def _ask_for_providers(self, peer: ID, mh: bytes) -> tuple[list[PeerInfo], list[ID]]:
        """One ``GET_PROVIDERS``: the providers ``peer`` names, and the closer peers it
        refers us to, whose addresses go in the peerstore so that the walk can
        reach them.

        Upstream's client (``ProviderStore._get_providers_from_peer_with_closers``)
        keeps only the closer peers' IDs and drops the addresses and signed records
        sent with them, so a walk could follow a referral only to a peer it already
        knew (the rest fail with "No known addresses to peer"; in a 1,000-node
        swarm, most of them).  This is the same RPC, keeping them.
        """
        stream = await self.host.new_stream(peer, [KAD_PROTOCOL])
        try:
            request = Message(type=Message.MessageType.GET_PROVIDERS, key=mh)
            request.senderRecord = env_to_send_in_RPC(self.host)[0]
            payload = request.SerializeToString()
            await stream.write(varint.encode(len(payload)) + payload)
            reply = Message()
            reply.ParseFromString(
                await read_varint_prefixed_bytes_limited(stream, MAX_DHT_MESSAGE_SIZE)
            )
        finally:
            with contextlib.suppress(*NETWORK_ERRORS):
                await stream.close()
        if reply.type != Message.MessageType.GET_PROVIDERS:
            return [], []
        if not maybe_consume_signed_record(reply, self.host, peer):
            log.debug("%s answered GET_PROVIDERS with a bad signed record", peer)
            return [], []
        providers = [
            PeerInfo(ID(entry.id), parse_multiaddrs(entry.addrs))
            for entry in reply.providerPeers
            if entry.id and maybe_consume_signed_record(entry, self.host)
        ]
        closer: list[ID] = []
        peerstore = self.host.get_peerstore()
        for entry in reply.closerPeers:
            if not entry.id or not maybe_consume_signed_record(entry, self.host):
                continue
            referral = ID(entry.id)
            if addrs := parse_multiaddrs(entry.addrs):
                peerstore.add_addrs(referral, addrs, REFERRAL_ADDR_TTL)
            closer.append(referral)
        return providers, closer

    def _provider_multihash(self, capability: str) -> bytes:
        # The DHT key of a CID is its multihash: strip the CIDv1 and codec bytes.
        return provider_key(self.swarm, capability)[2:]
