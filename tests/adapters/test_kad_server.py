"""The DHT server, one request at a time (``KadServer.answer``), and over a stream
that breaks (``KadServer.serve``): a key of any kind is placed at sha256(key), a
value is stored only if the validator accepts it, a sender can announce only
itself, any bad request is a typed refusal, and a reset stream ends quietly.

No sockets: the hosts are built but never run; requests are protobuf messages as
a go, js or py-libp2p client would send them."""

from __future__ import annotations

import hashlib
import time

import multiaddr
import pytest
from hypothesis import given
from hypothesis import strategies as st
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.network.stream.exceptions import StreamReset
from libp2p.peer.envelope import seal_record
from libp2p.peer.id import ID
from libp2p.peer.peer_record import PeerRecord
from libp2p.peer.peerinfo import PeerInfo
from libp2p.peer.peerstore import env_to_send_in_RPC

from llamanet.adapters.dht import CapsValidator, LlamanetDHT
from llamanet.adapters.kad_server import MAX_KEY_BYTES, KadServer
from llamanet.adapters.libp2p_host import build_host
from llamanet.errors import KadRequestRefused
from llamanet.protocol.capabilities import provider_key
from llamanet.protocol.config import TEST_POW_DIFFICULTY, RecordPolicy
from llamanet.protocol.records import dht_key_for
from llamanet.trust.keys import Identity

from ..records import envelope_for, tamper

LOOPBACK = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
MessageType = Message.MessageType


class Clock:
    """The validator's wall clock, moved by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def server_with(peers: int = 0, clock: Clock | None = None) -> tuple[KadServer, list[ID]]:
    """A DHT server whose routing table holds ``peers`` peers on loopback."""
    policy = RecordPolicy(pow_difficulty=TEST_POW_DIFFICULTY)
    validator = CapsValidator(policy, clock=clock or time.time)
    dht = LlamanetDHT(build_host(Identity.generate(), [LOOPBACK]), validator, swarm="main")
    known = []
    for i in range(peers):
        peer = ID(Identity.generate().peer_id)
        info = PeerInfo(peer, [multiaddr.Multiaddr(f"/ip4/127.0.0.{i + 2}/tcp/4001")])
        dht.kad.host.get_peerstore().add_addrs(peer, info.addrs, 3600)
        known.append(peer)
    table = dht.kad.routing_table
    for peer in known:
        bucket = table.find_bucket(peer)
        bucket.peers[peer] = (PeerInfo(peer, table.host.get_peerstore().addrs(peer)), time.time())
    return dht.server, known


def request(kind: Message.MessageType, key: bytes, **fields: object) -> bytes:
    return Message(type=kind, key=key, **fields).SerializeToString()  # type: ignore[arg-type]


def put_request(key: bytes, value: bytes) -> bytes:
    msg = Message(type=MessageType.PUT_VALUE, key=key)
    msg.record.key = key
    msg.record.value = value
    return msg.SerializeToString()


def distance(key: bytes, peer: ID) -> int:
    target = int.from_bytes(hashlib.sha256(key).digest(), "big")
    return target ^ int.from_bytes(hashlib.sha256(peer.to_bytes()).digest(), "big")


CLIENT = ID(Identity.generate().peer_id)


def test_find_node_answers_any_key_with_the_peers_closest_to_its_sha256() -> None:
    server, known = server_with(12)
    for key in (
        dht_key_for(Identity.generate().peer_id).encode(),  # a record key, 67 bytes
        provider_key("main", "math.eval")[2:],  # a provider multihash
        b"k",
    ):
        reply = server.answer(CLIENT, request(MessageType.FIND_NODE, key))
        named = [ID(p.id) for p in reply.closerPeers]
        assert reply.type == MessageType.FIND_NODE and reply.key == key
        assert named == sorted(known, key=lambda p: distance(key, p))
        assert all(p.addrs for p in reply.closerPeers)
        assert reply.senderRecord  # our signed peer record, as upstream sends
    assert server.answered["FIND_NODE"] == 3


def test_find_node_for_a_known_peer_names_it_first() -> None:
    server, known = server_with(8)
    target = max(known, key=lambda p: distance(known[0].to_bytes(), p))
    reply = server.answer(CLIENT, request(MessageType.FIND_NODE, target.to_bytes()))
    assert ID(reply.closerPeers[0].id) == target
    # ...and never names the requester back to itself.
    reply = server.answer(known[0], request(MessageType.FIND_NODE, b"anything"))
    assert known[0] not in {ID(p.id) for p in reply.closerPeers}


def test_a_valid_record_is_stored_echoed_and_served() -> None:
    server, known = server_with(3)
    owner = Identity.generate()
    key = dht_key_for(owner.peer_id).encode()
    envelope = envelope_for(owner, seq=5)
    echo = server.answer(CLIENT, put_request(key, envelope))
    assert echo.type == MessageType.PUT_VALUE and echo.key == key
    assert echo.record.value == envelope
    reply = server.answer(CLIENT, request(MessageType.GET_VALUE, key))
    assert reply.record.value == envelope
    assert {ID(p.id) for p in reply.closerPeers} == set(known)
    # Republishing the same record is acknowledged; a newer one replaces it.
    server.answer(CLIENT, put_request(key, envelope))
    newer = envelope_for(owner, seq=6)
    server.answer(CLIENT, put_request(key, newer))
    assert server.answer(CLIENT, request(MessageType.GET_VALUE, key)).record.value == newer


@pytest.mark.parametrize(
    ("what", "key_of", "value_of", "reason"),
    [
        ("junk bytes", "owner", lambda o, _: b"not a record", "invalid_value"),
        ("a tampered record", "owner",
         lambda o, _: tamper(envelope_for(o, seq=1)), "invalid_value"),
        ("a record signed by another key", "owner",
         lambda o, other: envelope_for(other, seq=1), "invalid_value"),
        ("a key outside the llamanet namespace", "other-namespace",
         lambda o, _: envelope_for(o, seq=1), "invalid_value"),
        ("an empty value", "owner", lambda o, _: b"", "bad_value"),
    ],
)  # fmt: skip
def test_a_value_the_validator_refuses_is_not_stored(
    what: str, key_of: str, value_of: object, reason: str
) -> None:
    server, _ = server_with()
    owner, other = Identity.generate(), Identity.generate()
    key = (
        dht_key_for(owner.peer_id).encode()
        if key_of == "owner"
        else f"/other/{owner.peer_id_text}".encode()
    )
    value = value_of(owner, other)  # type: ignore[operator]
    with pytest.raises(KadRequestRefused) as refused:
        server.answer(CLIENT, put_request(key, value))
    assert refused.value.reason == reason, what
    assert server.kad.value_store.get(key) is None
    assert not server.answer(CLIENT, request(MessageType.GET_VALUE, key)).HasField("record")


def test_an_older_record_does_not_replace_a_newer_one() -> None:
    server, _ = server_with()
    owner = Identity.generate()
    key = dht_key_for(owner.peer_id).encode()
    server.answer(CLIENT, put_request(key, envelope_for(owner, seq=9)))
    with pytest.raises(KadRequestRefused) as refused:
        server.answer(CLIENT, put_request(key, envelope_for(owner, seq=8)))
    assert refused.value.reason == "older_value"
    held = server.kad.value_store.get(key)
    assert held is not None and server.kad.validator is not None
    assert server.answer(CLIENT, request(MessageType.GET_VALUE, key)).record.value == held.value


def test_a_record_that_expired_while_held_is_not_served() -> None:
    clock = Clock()
    server, _ = server_with(clock=clock)
    owner = Identity.generate()
    key = dht_key_for(owner.peer_id).encode()
    server.answer(CLIENT, put_request(key, envelope_for(owner, seq=1, lifetime=60)))
    clock.now += 3600
    assert not server.answer(CLIENT, request(MessageType.GET_VALUE, key)).HasField("record")
    assert server.kad.value_store.get(key) is None


def test_a_put_whose_record_key_differs_from_the_message_key_is_refused() -> None:
    server, _ = server_with()
    owner = Identity.generate()
    msg = Message(type=MessageType.PUT_VALUE, key=dht_key_for(owner.peer_id).encode())
    msg.record.key = dht_key_for(Identity.generate().peer_id).encode()
    msg.record.value = envelope_for(owner, seq=1)
    with pytest.raises(KadRequestRefused) as refused:
        server.answer(CLIENT, msg.SerializeToString())
    assert refused.value.reason == "key_mismatch"


def test_only_the_sender_can_announce_itself_as_a_provider() -> None:
    server, _ = server_with()
    key = provider_key("main", "math.eval")[2:]
    impostor = ID(Identity.generate().peer_id)
    msg = Message(type=MessageType.ADD_PROVIDER, key=key)
    for peer in (impostor, CLIENT):
        entry = msg.providerPeers.add()
        entry.id = peer.to_bytes()
        entry.addrs.append(multiaddr.Multiaddr("/ip4/127.0.0.9/tcp/4001").to_bytes())
    server.answer(CLIENT, msg.SerializeToString())
    assert [p.peer_id for p in server.kad.provider_store.get_providers(key)] == [CLIENT]
    assert server.refused["provider_not_sender"] == 1
    reply = server.answer(impostor, request(MessageType.GET_PROVIDERS, key))
    assert [ID(p.id) for p in reply.providerPeers] == [CLIENT]


def test_a_sender_record_of_another_peer_is_refused() -> None:
    server, _ = server_with()
    # A signed peer record of a third host, sent over CLIENT's connection.
    other = build_host(Identity.generate(), [LOOPBACK])
    envelope = env_to_send_in_RPC(other)[0]
    with pytest.raises(KadRequestRefused) as refused:
        server.answer(CLIENT, request(MessageType.FIND_NODE, b"key", senderRecord=envelope))
    assert refused.value.reason == "sender_record"
    # The connection's own peer's record is fine.
    server.answer(other.get_id(), request(MessageType.FIND_NODE, b"key", senderRecord=envelope))
    assert server.answered["FIND_NODE"] == 1


def test_a_forged_sender_record_is_refused() -> None:
    server, _ = server_with()
    identity = Identity.generate()
    other = build_host(identity, [LOOPBACK])
    # A record naming `other`, signed with another key.
    forger = build_host(Identity.generate(), [LOOPBACK])
    record = PeerRecord(other.get_id(), list(other.get_addrs()) or [LOOPBACK], 1)
    forged = seal_record(record, forger.get_private_key()).marshal_envelope()
    with pytest.raises(KadRequestRefused) as refused:
        server.answer(other.get_id(), request(MessageType.PING, b"", senderRecord=forged))
    assert refused.value.reason == "sender_record"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xff\xff", "bad_message"),
        (request(MessageType.FIND_NODE, b""), "bad_key"),
        (request(MessageType.GET_VALUE, b"x" * (MAX_KEY_BYTES + 1)), "bad_key"),
        (Message(type=MessageType.PUT_VALUE, key=b"k").SerializeToString(), "no_record"),
        (b"\x08\x09", "unknown_type"),  # type = 9
    ],
)
def test_bad_requests_are_typed_refusals(body: bytes, reason: str) -> None:
    server, _ = server_with()
    with pytest.raises(KadRequestRefused) as refused:
        server.answer(CLIENT, body)
    assert refused.value.reason == reason


@given(st.binary(max_size=512))
def test_arbitrary_bytes_are_answered_or_refused_never_a_crash(body: bytes) -> None:
    server = FUZZ_SERVER
    try:
        reply = server.answer(CLIENT, body)
    except KadRequestRefused:
        return
    assert isinstance(reply, Message)


FUZZ_SERVER, _ = server_with(3)


class ResetStreamDouble:
    """Test double of a libp2p stream whose peer reset it: reading raises what
    py-libp2p raises then (``StreamReset``)."""

    def __init__(self, peer: ID) -> None:
        self.muxed_conn = type("Conn", (), {"peer_id": peer})()
        self.was_reset = False

    async def read(self, n: int = -1) -> bytes:
        raise StreamReset("Cannot read from stream; stream is reset")

    async def write(self, data: bytes) -> None:
        raise StreamReset("Cannot write to stream; stream is reset")

    async def close(self) -> None:
        return None

    async def reset(self) -> None:
        self.was_reset = True


async def test_a_stream_the_peer_reset_ends_quietly() -> None:
    # An error escaping a stream handler takes py-libp2p's whole connection down
    # (seen under churn in simnet's real mode): a reset stream must end here.
    server, _ = server_with()
    stream = ResetStreamDouble(CLIENT)
    await server.serve(stream)  # type: ignore[arg-type]
    assert stream.was_reset and not server.refused and not server.answered
