"""Answers inbound ``/llamanet/kad/1.0.0`` requests as the kad-dht spec, go-libp2p
and js-libp2p do, over py-libp2p's routing table and stores.

It replaces py-libp2p 0.8.1's handler (``KadDHT._do_handle_stream``, one
600-line method), which resets every ``FIND_NODE`` whose key is longer than 50
bytes and is not a multihash ("FIND_NODE key is not a valid PeerId").  Every
record key is such a key (``/llamanet/caps/<id>`` is 67 bytes), and go and js
send a ``FIND_NODE`` for the raw key before every ``PUT_VALUE`` and ``GET_VALUE``,
so no other implementation could store a record on a llamanet node or walk
through one.  The spec places every key, peer IDs included, at sha256(key bytes)
in the XOR space, which is what ``RoutingTable.find_local_closest_peers``
computes; the handler just has to answer.  A single message type cannot be
patched inside upstream's loop, hence this module: one small function per
message type, each returning the reply or raising :class:`KadRequestRefused`.

Kept from upstream, because they are the spec or a defence: the sender's signed
peer record must be the connection's peer; only the sender can announce itself
as a provider, with at least one address, at most 20 a message and under the
ADD_PROVIDER rate limit; a value is stored only if the validator accepts it and
ranks it at least as high as the one held; keys are bounded; any error resets
the stream.  Changed: a stored value is served only while the validator still
accepts it (llamanet records expire long before upstream's 48 h age limit), and
a ``PUT_VALUE`` of a value as good as the one held is accepted (go-libp2p's
order), so republishing the same record is acknowledged.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Final

import multiaddr
import trio
from google.protobuf.message import DecodeError as ProtobufDecodeError
from libp2p.abc import INetStream
from libp2p.kad_dht.common import (
    MAX_DHT_MESSAGE_SIZE,
    MAX_PROVIDERS_PER_MSG,
    MAX_RECORD_SIZE,
    format_time_rfc3339,
)
from libp2p.kad_dht.kad_dht import KadDHT, get_connection_type
from libp2p.kad_dht.pb.kademlia_pb2 import Message, Record
from libp2p.kad_dht.utils import maybe_consume_signed_record
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.peer.peerstore import PeerStoreError, env_to_send_in_RPC
from libp2p.records.utils import InvalidRecordType, verify_record
from libp2p.records.validator import NamespacedValidator

from llamanet.errors import (
    DecodeError,
    FrameTooLargeError,
    KadRequestRefused,
    RecordError,
    StreamBrokenError,
)
from llamanet.protocol.codec import FrameDecoder
from llamanet.protocol.varint import encode_uvarint

from .libp2p_host import NETWORK_ERRORS, Libp2pByteStream, parse_multiaddrs
from .stream import next_body

log = logging.getLogger(__name__)

MAX_KEY_BYTES: Final = 128
"""Longest key accepted in any request (go-libp2p's bound for GET_VALUE and
GET_PROVIDERS; records and provider keys here are at most 67 bytes)."""
CLOSER_PEERS: Final = 20
"""Peers named in ``closerPeers`` (Kademlia's k)."""

# What a validator raises for a value it refuses: ours (RecordError, DecodeError),
# upstream's NamespacedValidator for a key outside every namespace
# (InvalidRecordType), and a key that is not UTF-8 text.
VALUE_REFUSED: Final = (RecordError, DecodeError, InvalidRecordType, UnicodeDecodeError)

Handler = Callable[[ID, Message], Message]


class KadServer:
    """The server side of ``/llamanet/kad/1.0.0`` for one host.

    :meth:`answer` is the whole protocol for one request (bytes in, reply out, no
    I/O beyond the routing table's own); :meth:`serve` runs it over an inbound
    stream.  ``refused`` counts refusals by reason, ``answered`` replies by type.
    """

    def __init__(self, kad: KadDHT, *, max_inbound_streams: int) -> None:
        self.kad = kad
        self.host = kad.host
        self.inbound = trio.CapacityLimiter(max_inbound_streams)
        """Inbound streams served at once, from everyone; the rest are reset."""
        self.refused: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self._handlers: dict[int, Handler] = {
            Message.MessageType.FIND_NODE: self.find_node,
            Message.MessageType.GET_VALUE: self.get_value,
            Message.MessageType.PUT_VALUE: self.put_value,
            Message.MessageType.GET_PROVIDERS: self.get_providers,
            Message.MessageType.ADD_PROVIDER: self.add_provider,
            Message.MessageType.PING: self.ping,
        }

    # -- one stream ------------------------------------------------------------

    async def serve(self, stream: INetStream) -> None:
        """Answer requests on ``stream`` until the peer closes it; reset it on any
        refusal.  The peer is the connection's, which Noise authenticated."""
        peer = stream.muxed_conn.peer_id
        wire = Libp2pByteStream(stream)
        if self.inbound.borrowed_tokens >= self.inbound.total_tokens:
            self.refused["busy"] += 1
            await wire.reset()
            return
        async with self.inbound:
            # A peer that opens a KAD stream to us serves the DHT itself (the spec
            # and upstream both add it to the routing table on its first request).
            await self.kad.add_peer(peer, skip_server_mode_check=True)
            decoder = FrameDecoder(MAX_DHT_MESSAGE_SIZE)
            try:
                while (body := await next_body(wire, decoder)) is not None:
                    reply = self.answer(peer, body).SerializeToString()
                    await wire.write(encode_uvarint(len(reply)) + reply)
            except (FrameTooLargeError, DecodeError) as exc:
                self._count_refusal(peer, "bad_frame", str(exc))
                await wire.reset()
            except KadRequestRefused as exc:
                self._count_refusal(peer, exc.reason, str(exc))
                await wire.reset()
            except (StreamBrokenError, *NETWORK_ERRORS) as exc:  # the peer went away
                # A reset or dead stream is the peer's business: it must not reach
                # py-libp2p's handler, which would take the whole connection down.
                log.debug("KAD stream from %s broke: %r", peer, exc)
                await wire.reset()
            else:
                await wire.close()

    def _count_refusal(self, peer: ID, reason: str, detail: str) -> None:
        self.refused[reason] += 1
        log.debug("refused a KAD request from %s (%s): %s", peer, reason, detail)

    # -- one request -----------------------------------------------------------

    def answer(self, peer: ID, body: bytes) -> Message:
        """The reply to one request ``body`` from ``peer``; raises
        :class:`KadRequestRefused` when the stream must be reset instead."""
        request = Message()
        try:
            request.ParseFromString(body)
        except ProtobufDecodeError as exc:
            raise _refused(peer, "bad_message", f"not a Kademlia message: {exc}") from exc
        handler = self._handlers.get(request.type)
        if handler is None:
            raise _refused(peer, "unknown_type", f"unknown message type {request.type}")
        # An empty senderRecord is allowed (go sends none); a present one must be
        # the connection's own peer's, validly signed.
        if not maybe_consume_signed_record(request, self.host, peer):
            raise _refused(peer, "sender_record", "a sender record not signed by the sender")
        reply = handler(peer, request)
        self.answered[Message.MessageType.Name(request.type)] += 1
        return reply

    def find_node(self, peer: ID, request: Message) -> Message:
        key = _bounded_key(peer, request.key)
        # FIND_NODE for a peer we know names that peer first, whatever its
        # distance (the spec's exception, as go and upstream do).
        target = ID(key)
        known = target == self.host.get_id() or bool(self._addrs(target))
        return self._reply(
            Message.MessageType.FIND_NODE, key, peer, first=target if known else None
        )

    def get_value(self, peer: ID, request: Message) -> Message:
        key = _bounded_key(peer, request.key)
        reply = self._reply(Message.MessageType.GET_VALUE, key, peer)
        held = self.kad.value_store.get(key)
        if held is not None and self._still_valid(key, held):
            reply.record.CopyFrom(held)
        return reply

    def put_value(self, peer: ID, request: Message) -> Message:
        if not request.HasField("record"):
            raise _refused(peer, "no_record", "PUT_VALUE without a record")
        record = request.record
        key = _bounded_key(peer, record.key)
        if request.key != key:
            raise _refused(peer, "key_mismatch", "PUT_VALUE key differs from its record's")
        if not record.value or record.ByteSize() > MAX_RECORD_SIZE:
            raise _refused(peer, "bad_value", "PUT_VALUE with an empty or oversized value")
        try:
            key_text = key.decode()
            self._validator.validate(key_text, record.value)
        except VALUE_REFUSED as exc:
            raise _refused(peer, "invalid_value", f"the validator refused it: {exc}") from exc
        # py-libp2p's own writers sign the DHT record too; a signature that is
        # there must verify.
        signed = bool(record.signature and record.author)
        if signed and not verify_record(record.signature, record.author, key, record.value):
            raise _refused(peer, "bad_signature", "the DHT record's signature is wrong")
        held = self.kad.value_store.get(key)
        if (
            held is not None
            and held.value != record.value
            and self._validator.select(key_text, [record.value, held.value]) != 0
        ):
            raise _refused(peer, "older_value", "a better value is held for this key")
        stored = Record()
        stored.CopyFrom(record)
        stored.timeReceived = format_time_rfc3339()
        self.kad.value_store.put_record(key, stored)
        reply = Message(type=Message.MessageType.PUT_VALUE, key=key)
        reply.record.CopyFrom(record)
        reply.senderRecord = env_to_send_in_RPC(self.host)[0]
        return reply

    def get_providers(self, peer: ID, request: Message) -> Message:
        key = _bounded_key(peer, request.key)
        reply = self._reply(Message.MessageType.GET_PROVIDERS, key, peer)
        for provider in self.kad.provider_store.get_providers(key):
            self._describe(reply.providerPeers.add(), provider.peer_id, provider.addrs)
        return reply

    def add_provider(self, peer: ID, request: Message) -> Message:
        key = _bounded_key(peer, request.key)
        if not self.kad._check_provider_rate_limit(peer):
            raise _refused(peer, "provider_rate", "over the ADD_PROVIDER rate limit")
        for entry in request.providerPeers[:MAX_PROVIDERS_PER_MSG]:
            # Only the sender can say it provides something: an announcement of
            # anyone else is ignored, as the spec requires.
            if entry.id != peer.to_bytes():
                self.refused["provider_not_sender"] += 1
                continue
            addrs = parse_multiaddrs(entry.addrs)
            if addrs:
                self.kad.provider_store.add_provider(key, PeerInfo(peer, addrs))
                maybe_consume_signed_record(entry, self.host)
        reply = Message(type=Message.MessageType.ADD_PROVIDER, key=key)
        return reply

    def ping(self, peer: ID, request: Message) -> Message:
        return Message(type=Message.MessageType.PING)

    # -- helpers -----------------------------------------------------------------

    @property
    def _validator(self) -> NamespacedValidator:
        # Read at each use: the DHT's validator may be replaced while it runs.
        validator = self.kad.validator
        if validator is None:
            raise RuntimeError("a llamanet DHT always has a validator")
        return validator

    def _reply(
        self, kind: Message.MessageType, key: bytes, requester: ID, *, first: ID | None = None
    ) -> Message:
        """A reply naming, in ``closerPeers``, the routing table's peers closest to
        sha256(``key``) (``first`` ahead of them), never the requester itself."""
        closer = self.kad.routing_table.find_local_closest_peers(key, CLOSER_PEERS)
        if first is not None:
            closer = [first, *(p for p in closer if p != first)]
        reply = Message(type=kind, key=key)
        reply.senderRecord = env_to_send_in_RPC(self.host)[0]
        for peer in closer:
            if peer != requester:
                self._describe(reply.closerPeers.add(), peer, self._addrs(peer))
        return reply

    def _describe(self, entry: Message.Peer, peer: ID, addrs: list[multiaddr.Multiaddr]) -> None:
        entry.id = peer.to_bytes()
        entry.connection = get_connection_type(self.host, peer)
        entry.addrs.extend(addr.to_bytes() for addr in addrs)
        envelope = self.host.get_peerstore().get_peer_record(peer)
        if envelope is not None:
            entry.signedRecord = envelope.marshal_envelope()

    def _addrs(self, peer: ID) -> list[multiaddr.Multiaddr]:
        if peer == self.host.get_id():
            return list(self.host.get_addrs())
        try:
            return list(self.host.get_peerstore().addrs(peer))
        except PeerStoreError:
            return []

    def _still_valid(self, key: bytes, held: Record) -> bool:
        try:
            self._validator.validate(key.decode(), held.value)
        except VALUE_REFUSED as exc:
            log.debug("dropped the value held for %r: %s", key[:80], exc)
            self.kad.value_store.remove(key)
            return False
        return True


def _bounded_key(peer: ID, key: bytes) -> bytes:
    if not key or len(key) > MAX_KEY_BYTES:
        raise _refused(peer, "bad_key", f"a key of {len(key)} bytes (1 to {MAX_KEY_BYTES})")
    return key


def _refused(peer: ID, reason: str, msg: str) -> KadRequestRefused:
    return KadRequestRefused(reason, msg, peer_id=str(peer))
