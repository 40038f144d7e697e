"""Real nodes on loopback: discovery through the DHT, tasks, and hostile input."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.peer.id import ID
from libp2p.records.record import make_signed_put_record

from llamanet.adapters.caps import CapsServer
from llamanet.adapters.libp2p_host import (
    CAPS_PROTOCOL,
    TASK_PROTOCOL,
    Libp2pByteStream,
    open_stream,
)
from llamanet.backends.builtin import BuiltinBackend
from llamanet.errors import (
    ExpiredRecordError,
    InvalidSignatureError,
    PeerMismatchError,
    RequestTimeoutError,
    StaleRecordError,
    TaskRejectedError,
)
from llamanet.node.node import Node
from llamanet.protocol.codec import FrameDecoder, decode_message, encode_frame, frame
from llamanet.protocol.messages import ErrorMessage, Message, TaskOffer, TaskRejected
from llamanet.protocol.pow import solve_pow
from llamanet.protocol.records import CapabilityRecord, dht_key_for, seal_record
from llamanet.protocol.varint import encode_uvarint
from llamanet.trust.keys import Identity

from ..doubles import SlowSkillDouble
from ..nodes import eventually, start_node, start_swarm


def envelope_for(
    identity: Identity, *, seq: int, iat: float | None = None, lifetime: float = 3600
) -> bytes:
    now = time.time() if iat is None else iat
    record = CapabilityRecord(
        peer=identity.peer_id,
        seq=seq,
        iat=int(now),
        exp=int(now + lifetime),
        caps=("text.stats",),
        pow=solve_pow(identity.peer_id, 8) or b"",
    )
    return seal_record(record, identity)


def tamper(envelope: bytes) -> bytes:
    # Flip a bit inside the payload (the envelope's third field).
    data = bytearray(envelope)
    data[len(data) // 2] ^= 0x01
    return bytes(data)


async def test_capability_found_through_the_dht_and_streamed(tmp_path: Path) -> None:
    per_node: dict[int, dict[str, Any]] = {i: {"skills": ("text.stats",)} for i in range(6)}
    per_node[3] = {"skills": ("text.echo", "math.eval")}
    async with start_swarm(tmp_path, 6, chain=True, per_node=per_node) as nodes:
        asker, provider = nodes[5], nodes[3]
        assert provider.peer_id not in asker.registry
        found = await asker.find("text.echo")
        assert [r.peer for r in found] == [provider.peer_id]
        assert set(found[0].record.caps) == {"text.echo", "math.eval"}
        # The prefix "text" finds the echo skill and the stats skills.
        assert provider.peer_id in {r.peer for r in await asker.find("text")}

        chunks: list[str] = []

        async def on_chunk(data: object) -> None:
            assert isinstance(data, str)
            chunks.append(data)

        text = "a capability published by one node, found by another through the DHT"
        answer = await asker.ask("text.echo", text, stream=True, on_chunk=on_chunk)
        assert answer.output == text
        assert answer.peer == provider.peer_id_text
        assert len(chunks) > 1
        assert "".join(chunks) == text
        assert (await asker.ask("math.eval", "2*(3+4)")).output == 14


async def test_forged_expired_and_replayed_records_refused_on_the_dht_path(tmp_path: Path) -> None:
    async with start_swarm(tmp_path, 4) as (bootstrap, victim, mallory, alice):
        store = mallory.dht.kad.value_store
        key = dht_key_for(alice.peer_id).encode()

        async def push(value: bytes, key: bytes = key) -> bool:
            record = make_signed_put_record(key, value, mallory.host.get_private_key())
            return bool(await store._store_at_peer(ID(victim.peer_id), key, value, record=record))

        genuine = victim.dht.kad.value_store.get(key)
        assert genuine is not None  # alice's record was replicated to the victim

        assert not await push(tamper(alice.record.envelope))
        assert victim.rejected_records["bad_signature"] >= 1

        expired = envelope_for(mallory.identity, seq=1, iat=time.time() - 7200)
        assert not await push(expired, dht_key_for(mallory.peer_id).encode())
        assert victim.rejected_records["expired"] >= 1

        # mallory's record under alice's key
        assert not await push(mallory.record.envelope)
        assert victim.rejected_records["peer_mismatch"] >= 1

        # a replay of an older, correctly signed record of alice
        older = alice.record
        await alice.publish()
        assert alice.record.seq > older.seq
        assert not await push(older.envelope)
        held = victim.dht.kad.value_store.get(key)
        assert held is not None and held.value == alice.record.envelope

        # A lying replica: bootstrap's store now holds a forged copy; the victim's
        # lookup ignores it and still returns alice's genuine newest record.
        bootstrap.dht.kad.value_store.put(key, tamper(alice.record.envelope))
        rejected_before = victim.rejected_records["bad_signature"]
        looked_up = await victim.lookup_record(alice.peer_id)
        assert looked_up is not None and looked_up.envelope == alice.record.envelope
        assert victim.rejected_records["bad_signature"] > rejected_before

        # and the victim still serves tasks
        assert (await alice.ask("math.eval", "1+2", peer=victim.peer_id_text)).output == 3


async def test_forged_expired_and_replayed_records_refused_on_the_direct_path(
    tmp_path: Path,
) -> None:
    async with start_swarm(tmp_path, 3) as (victim, mallory, alice):
        served: list[bytes] = []
        mallory.host.set_stream_handler(
            CAPS_PROTOCOL,
            lambda s: CapsServer(lambda: served[-1]).serve(Libp2pByteStream(s)),
        )
        served.append(tamper(mallory.record.envelope))
        with pytest.raises(InvalidSignatureError):
            await victim.fetch_record(mallory.peer_id)

        served.append(envelope_for(mallory.identity, seq=5, iat=time.time() - 7200))
        with pytest.raises(ExpiredRecordError):
            await victim.fetch_record(mallory.peer_id)

        served.append(alice.record.envelope)  # someone else's valid record
        with pytest.raises(PeerMismatchError):
            await victim.fetch_record(mallory.peer_id)

        served.append(envelope_for(mallory.identity, seq=10))
        assert (await victim.fetch_record(mallory.peer_id)).seq == 10
        served.append(envelope_for(mallory.identity, seq=9))
        with pytest.raises(StaleRecordError):
            await victim.fetch_record(mallory.peer_id)

        held = victim.registry.get(mallory.peer_id, now=time.time())
        assert held is not None and held.seq == 10
        assert victim.rejected_records == {
            "bad_signature": 1,
            "expired": 1,
            "peer_mismatch": 1,
            "stale_seq": 1,
        }
        assert (await alice.ask("math.eval", "2*21", peer=victim.peer_id_text)).output == 42


async def _raw_exchange(sender: Node, target: Node, data: bytes) -> list[Message]:
    stream = await open_stream(sender.host, target.peer_id, TASK_PROTOCOL)
    await stream.write(data)
    decoder, messages = FrameDecoder(), list[Message]()
    with trio.fail_after(10):
        while True:
            chunk = await stream.read()
            decoder.receive_data(chunk)
            messages.extend(decode_message(body) for body in decoder.frames())
            if not chunk or messages:
                break
    await stream.reset()
    return messages


async def test_garbage_oversized_and_unknown_capability_over_libp2p(tmp_path: Path) -> None:
    async with start_swarm(tmp_path, 3, per_node={0: {"skills": ("math.eval",)}}) as nodes:
        worker, attacker, honest = nodes
        (reply,) = await _raw_exchange(attacker, worker, frame(b"\xc1\xc1 garbage"))
        assert isinstance(reply, ErrorMessage) and reply.code == "bad_request"

        (reply,) = await _raw_exchange(attacker, worker, encode_uvarint(2**60))
        assert isinstance(reply, ErrorMessage) and reply.code == "too_large"

        offer = TaskOffer(
            id=b"\x01" * 16, cap="llm.chat", input={}, deadline=int((time.time() + 10) * 1000)
        )
        (reply,) = await _raw_exchange(attacker, worker, encode_frame(offer))
        assert isinstance(reply, TaskRejected) and reply.code == "unsupported"

        with pytest.raises(TaskRejectedError) as info:
            await honest.ask("text.echo", "x", peer=worker.peer_id_text)
        assert info.value.code == "unsupported"
        assert (await honest.ask("math.eval", "7*6", peer=worker.peer_id_text)).output == 42
        assert worker.worker.rejections["unsupported"] == 2


async def test_cancel_and_deadline_over_libp2p(tmp_path: Path) -> None:
    slow = SlowSkillDouble()
    async with (
        start_node(tmp_path / "w", backends=[BuiltinBackend(), slow]) as worker,
        start_node(tmp_path / "r", bootstrap=(worker.addrs()[0],)) as requester,
    ):
        started = trio.current_time()
        with pytest.raises(RequestTimeoutError):
            await requester.ask(
                "test.slow", None, peer=worker.peer_id_text, timeout=1.0, params={"seconds": 30}
            )
        assert trio.current_time() - started < 3.0
        await eventually(lambda: slow.cancelled == 1 and not worker.worker.in_flight)

        # cancelled by the requester before the deadline (a user pressing ^C)
        with trio.move_on_after(0.5):
            await requester.ask("test.slow", None, peer=worker.peer_id_text, timeout=30)
        await eventually(lambda: slow.cancelled == 2 and not worker.worker.in_flight)
        assert slow.finished == 0
        assert (await requester.ask("math.eval", "1+1", peer=worker.peer_id_text)).output == 2
