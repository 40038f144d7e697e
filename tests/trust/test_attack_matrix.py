"""The attack matrix (docs/SECURITY.md): each row attacks a running node over real
libp2p connections on loopback, asserts the attack was refused the way it should
be, and then checks that the node still serves an honest peer and still holds and
serves correct records.

Every case has the same three nodes: the victim, an honest peer and the attacker
(both bootstrapped from the victim); a row may configure the victim or the
attacker, and may bring in more nodes of its own.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.peer.id import ID
from libp2p.records.record import make_signed_put_record

from llamanet.adapters.caps import CapsServer, fetch_record_bytes
from llamanet.adapters.libp2p_host import (
    CAPS_PROTOCOL,
    KAD_PROTOCOL,
    TASK_PROTOCOL,
    Libp2pByteStream,
    open_stream,
)
from llamanet.backends.base import Backend
from llamanet.errors import (
    DecodeError,
    ExpiredRecordError,
    FutureRecordError,
    InsufficientWorkError,
    InvalidSignatureError,
    LlamanetError,
    NoCandidatesError,
    PeerMismatchError,
    RecordTooLargeError,
    RemoteProtocolError,
    StaleRecordError,
    StreamBrokenError,
    TaskRejectedError,
)
from llamanet.node.node import Node
from llamanet.protocol.codec import FrameDecoder, decode_message, encode_frame, frame, pack_value
from llamanet.protocol.config import TEST_POW_DIFFICULTY
from llamanet.protocol.messages import ErrorMessage, Message, TaskOffer, TaskRejected
from llamanet.protocol.pow import check_pow, solve_pow
from llamanet.protocol.records import (
    RECORD_DOMAIN,
    RECORD_PAYLOAD_TYPE,
    CapabilityRecord,
    dht_key_for,
    seal_envelope,
)
from llamanet.protocol.varint import encode_uvarint
from llamanet.trust.keys import load_or_create_identity
from llamanet.trust.reputation import NEUTRAL

from ..doubles import LyingMathDouble
from ..nodes import eventually, providers_of, start_node
from ..records import envelope_for, tamper

FLOOD = 10_000
FLOOD_IN_FLIGHT = 64


@dataclass
class Scene:
    victim: Node
    honest: Node
    attacker: Node
    base: Path
    extra: AsyncExitStack

    async def push_to_victim(self, key_peer: bytes, value: bytes) -> bool:
        """The attacker stores ``value`` at the victim under ``key_peer``'s DHT key
        (a PUT_VALUE, as any DHT peer may send); whether the victim kept it."""
        key = dht_key_for(key_peer).encode()
        signed = make_signed_put_record(key, value, self.attacker.host.get_private_key())
        store = self.attacker.dht.kad.value_store
        return bool(await store._store_at_peer(ID(self.victim.peer_id), key, value, record=signed))

    def serve_own_record(self, envelope: bytes) -> None:
        """The attacker answers record requests with ``envelope``."""
        self.attacker.host.set_stream_handler(
            CAPS_PROTOCOL, lambda s: CapsServer(lambda: envelope).serve(Libp2pByteStream(s))
        )

    async def raw_task_exchange(self, data: bytes) -> list[Message]:
        """Send raw bytes on a task stream; the victim's answer, until it closes."""
        stream = await open_stream(self.attacker.host, self.victim.peer_id, TASK_PROTOCOL)
        await stream.write(data)
        decoder, messages = FrameDecoder(), list[Message]()
        with trio.fail_after(10):
            while True:
                try:
                    chunk = await stream.read()
                except StreamBrokenError:
                    break
                decoder.receive_data(chunk)
                messages.extend(decode_message(body) for body in decoder.frames())
                if not chunk or messages:
                    break
        await stream.reset()
        return messages


# -- the attacks -----------------------------------------------------------------------


async def forged_signature(scene: Scene) -> None:
    victim, honest = scene.victim, scene.honest
    assert not await scene.push_to_victim(honest.peer_id, tamper(honest.record.envelope))
    assert victim.rejected_records["bad_signature"] >= 1
    scene.serve_own_record(tamper(scene.attacker.record.envelope))
    with pytest.raises(InvalidSignatureError):
        await victim.fetch_record(scene.attacker.peer_id)


async def key_peer_mismatch(scene: Scene) -> None:
    victim, honest, attacker = scene.victim, scene.honest, scene.attacker
    # The attacker's own, valid record under the honest peer's key ...
    assert not await scene.push_to_victim(honest.peer_id, attacker.record.envelope)
    assert victim.rejected_records["peer_mismatch"] >= 1
    # ... and the honest peer's record passed off as the attacker's.
    scene.serve_own_record(honest.record.envelope)
    with pytest.raises(PeerMismatchError):
        await victim.fetch_record(attacker.peer_id)


async def expired(scene: Scene) -> None:
    old = envelope_for(scene.attacker.identity, seq=99, iat=time.time() - 7200)
    assert not await scene.push_to_victim(scene.attacker.peer_id, old)
    assert scene.victim.rejected_records["expired"] >= 1
    scene.serve_own_record(old)
    with pytest.raises(ExpiredRecordError):
        await scene.victim.fetch_record(scene.attacker.peer_id)


async def issued_in_the_future(scene: Scene) -> None:
    later = envelope_for(scene.attacker.identity, seq=99, iat=time.time() + 3600)
    assert not await scene.push_to_victim(scene.attacker.peer_id, later)
    assert scene.victim.rejected_records["future"] >= 1
    scene.serve_own_record(later)
    with pytest.raises(FutureRecordError):
        await scene.victim.fetch_record(scene.attacker.peer_id)


async def replayed_lower_seq(scene: Scene) -> None:
    victim, honest, attacker = scene.victim, scene.honest, scene.attacker
    older = honest.record
    await honest.publish()
    assert honest.record.seq > older.seq
    await victim.fetch_record(honest.peer_id)
    assert not await scene.push_to_victim(honest.peer_id, older.envelope)
    held = victim.dht.kad.value_store.get(dht_key_for(honest.peer_id).encode())
    assert held is not None and held.value == honest.record.envelope
    scene.serve_own_record(envelope_for(attacker.identity, seq=10**6))
    assert (await victim.fetch_record(attacker.peer_id)).seq == 10**6
    scene.serve_own_record(envelope_for(attacker.identity, seq=10**6 - 1))
    with pytest.raises(StaleRecordError):
        await victim.fetch_record(attacker.peer_id)
    current = victim.registry.get(attacker.peer_id, now=time.time())
    assert current is not None and current.seq == 10**6


async def oversized_record(scene: Scene) -> None:
    attacker = scene.attacker
    wire = CapabilityRecord(
        peer=attacker.peer_id,
        seq=50,
        iat=int(time.time()),
        exp=int(time.time() + 3600),
        caps=("text.stats",),
        pow=solve_pow(attacker.peer_id, TEST_POW_DIFFICULTY) or b"",
    ).to_wire()
    wire["padding"] = b"x" * 20_000  # signed and all, just far too big
    big = seal_envelope(attacker.identity, RECORD_DOMAIN, RECORD_PAYLOAD_TYPE, pack_value(wire))
    assert not await scene.push_to_victim(attacker.peer_id, big)
    assert scene.victim.rejected_records["too_large"] >= 1
    scene.serve_own_record(big)
    # The direct path stops reading at the record size limit.
    with pytest.raises((RecordTooLargeError, RemoteProtocolError)):
        await scene.victim.fetch_record(attacker.peer_id)


async def missing_or_short_proof_of_work(scene: Scene) -> None:
    attacker = scene.attacker
    short = next(
        n
        for n in (i.to_bytes(8, "big") for i in range(10_000))
        if not check_pow(attacker.peer_id, n, TEST_POW_DIFFICULTY)
    )
    for seq, nonce in ((70, b""), (71, short)):
        record = envelope_for(attacker.identity, seq=seq, pow=nonce)
        assert not await scene.push_to_victim(attacker.peer_id, record)
        scene.serve_own_record(record)
        with pytest.raises(InsufficientWorkError):
            await scene.victim.fetch_record(attacker.peer_id)
    assert scene.victim.rejected_records["insufficient_pow"] >= 4


async def malformed_msgpack(scene: Scene) -> None:
    (reply,) = await scene.raw_task_exchange(frame(b"\xc1\xc1 not msgpack"))
    assert isinstance(reply, ErrorMessage) and reply.code == "bad_request"
    stream = await open_stream(scene.attacker.host, scene.victim.peer_id, CAPS_PROTOCOL)
    await stream.write(frame(b"\xc1"))
    with pytest.raises(DecodeError, match="bad_request"):
        await fetch_record_bytes(stream)


async def length_prefix_of_2_to_the_60(scene: Scene) -> None:
    (reply,) = await scene.raw_task_exchange(encode_uvarint(2**60))
    assert isinstance(reply, ErrorMessage) and reply.code == "too_large"


async def unknown_capability(scene: Scene) -> None:
    offer = TaskOffer(
        id=b"\x01" * 16, cap="llm.chat", input={}, deadline=int((time.time() + 10) * 1000)
    )
    (reply,) = await scene.raw_task_exchange(encode_frame(offer))
    assert isinstance(reply, TaskRejected) and reply.code == "unsupported"
    assert scene.victim.worker.rejections["unsupported"] == 1


async def silent_stream(scene: Scene) -> None:
    # The victim runs with a 1 s idle timeout (see the table).
    stream = await open_stream(scene.attacker.host, scene.victim.peer_id, TASK_PROTOCOL)
    started = trio.current_time()
    with trio.fail_after(10):
        try:
            while await stream.read():
                pass
        except StreamBrokenError:
            pass
    assert 0.5 < trio.current_time() - started < 8
    await stream.reset()


async def task_flood(scene: Scene) -> None:
    victim, honest, flooder = scene.victim, scene.honest, scene.attacker
    outcomes = {"ok": 0, "overloaded": 0, "other": 0}
    honest_done: list[float] = []

    async def flood_one() -> None:
        offer = TaskOffer(
            id=os.urandom(16),
            cap="text.echo",
            input="x" * 64,
            deadline=int((time.time() + 30) * 1000),
        )
        try:
            await flooder.client.run(victim.peer_id, offer)
            outcomes["ok"] += 1
        except TaskRejectedError as exc:
            outcomes["overloaded" if exc.code == "overloaded" else "other"] += 1
        except LlamanetError:
            outcomes["other"] += 1

    async def flood() -> None:
        limiter = trio.Semaphore(FLOOD_IN_FLIGHT)

        async def one() -> None:
            try:
                await flood_one()
            finally:
                limiter.release()

        async with trio.open_nursery() as nursery:
            for _ in range(FLOOD):
                await limiter.acquire()
                nursery.start_soon(one)

    async def honest_tasks() -> None:
        for i in range(30):
            started = trio.current_time()
            answer = await honest.ask("text.echo", f"hi {i}", peer=victim.peer_id_text)
            assert answer.output == f"hi {i}"
            honest_done.append(trio.current_time() - started)

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            await trio.sleep(0.2)  # the flood is under way
            await honest_tasks()
    assert sum(outcomes.values()) == FLOOD
    assert outcomes["overloaded"] > FLOOD / 2  # the flooder was held to its rate
    assert len(honest_done) == 30 and max(honest_done) < 5.0
    assert victim.worker.rejections["overloaded"] == outcomes["overloaded"]


async def record_fetch_flood(scene: Scene) -> None:
    answers: Counter[str] = Counter()
    for _ in range(60):
        stream = await open_stream(scene.attacker.host, scene.victim.peer_id, CAPS_PROTOCOL)
        try:
            await fetch_record_bytes(stream)
            answers["record"] += 1
        except DecodeError as exc:
            answers["overloaded" if "overloaded" in str(exc) else "other"] += 1
    assert answers["other"] == 0
    assert answers["overloaded"] >= 30  # a burst of 10, then 1 a second (the table)
    assert scene.victim.caps_server.refused == answers["overloaded"]


async def dht_stream_flood(scene: Scene) -> None:
    # Many KAD streams at once that say nothing: beyond the per-peer share the
    # victim resets them at once, so they cannot take every DHT slot.
    streams = []
    for _ in range(40):
        with suppress(LlamanetError):
            streams.append(
                await open_stream(scene.attacker.host, scene.victim.peer_id, KAD_PROTOCOL)
            )
    await eventually(lambda: scene.victim.dht.refused_streams >= 30)
    for stream in streams:
        await stream.reset()
    # The honest peer's DHT requests are still answered.
    assert await scene.honest.lookup_record(scene.victim.peer_id) is not None


async def non_allow_listed_peer(scene: Scene) -> None:
    victim, attacker = scene.victim, scene.attacker
    await attacker.connect(victim.addrs()[0], quiet=True)
    await eventually(lambda: victim.admission.refused_peers[attacker.peer_id] >= 1)
    with pytest.raises(LlamanetError):
        await attacker.ask("math.eval", "1+1", peer=victim.peer_id_text, timeout=5)
    await eventually(
        lambda: (
            attacker.peer_id not in {bytes(p.to_bytes()) for p in victim.host.get_connected_peers()}
        )
    )
    assert victim.peer_id_text not in {p.peer_id for p in attacker.peers() if p.capabilities}


async def lying_verifier(scene: Scene) -> None:
    # The victim asks for verify=3 across the honest peer, one more honest worker
    # and the attacker, who serves math.eval with a wrong answer (see the table).
    victim, honest, liar = scene.victim, scene.honest, scene.attacker
    second = await scene.extra.enter_async_context(
        start_node(scene.base / "second", bootstrap=(victim.addrs()[0],))
    )
    await providers_of(victim, "math.eval", 3)
    answer = await victim.ask("math.eval", "6*7", verify=3)
    assert answer.output == 42
    assert sorted(p for p, _ in answer.verified_by) == sorted(
        [honest.peer_id_text, second.peer_id_text]
    )
    assert all(len(receipt.signature) == 64 for _, receipt in answer.verified_by)
    now = victim.clock()
    assert victim.reputation.score(liar.peer_id, "math.eval", now) < NEUTRAL
    assert victim.reputation.score(honest.peer_id, "math.eval", now) > NEUTRAL
    # Asking for more verifiers than there are peers is a clear error.
    with pytest.raises(NoCandidatesError, match="needs 4 distinct peers"):
        await victim.ask("math.eval", "1+1", verify=4)


@dataclass(frozen=True)
class Case:
    attack: Callable[[Scene], Awaitable[None]]
    victim: Callable[[Path], dict[str, Any]] = lambda _: {}
    attacker_backends: Callable[[], list[Backend]] | None = None


MATRIX: dict[str, Case] = {
    "forged signature": Case(forged_signature),
    "key/peer mismatch": Case(key_peer_mismatch),
    "expired record": Case(expired),
    "record issued in the future": Case(issued_in_the_future),
    "replayed lower seq": Case(replayed_lower_seq),
    "oversized record": Case(oversized_record),
    "missing or short proof-of-work": Case(missing_or_short_proof_of_work),
    "malformed msgpack": Case(malformed_msgpack),
    "length prefix of 2^60": Case(length_prefix_of_2_to_the_60),
    "unknown capability": Case(unknown_capability),
    "stream that sends nothing": Case(silent_stream, victim=lambda _: {"stream_idle_timeout": 1.0}),
    "10,000 tasks from one peer": Case(
        task_flood, victim=lambda _: {"tasks_per_peer_per_s": 100.0}
    ),
    "record fetch flood": Case(
        record_fetch_flood, victim=lambda _: {"record_fetches_per_peer_per_s": 1.0}
    ),
    "DHT stream flood": Case(dht_stream_flood, victim=lambda _: {"dht_streams_per_peer": 4}),
    "peer not on the allow-list": Case(
        non_allow_listed_peer,
        victim=lambda base: {
            "allow_peers": (load_or_create_identity(base / "honest").peer_id_text,)
        },
    ),
    "one of three verifiers lies": Case(
        lying_verifier, attacker_backends=lambda: [LyingMathDouble(41)]
    ),
}


@pytest.mark.parametrize("name", list(MATRIX))
async def test_the_attack_is_refused_and_honest_peers_are_still_served(
    name: str, tmp_path: Path
) -> None:
    case = MATRIX[name]
    async with AsyncExitStack() as extra:
        victim = await extra.enter_async_context(
            start_node(tmp_path / "victim", **case.victim(tmp_path))
        )
        seed = (victim.addrs()[0],)
        honest = await extra.enter_async_context(start_node(tmp_path / "honest", bootstrap=seed))
        attacker_options: dict[str, Any] = {}
        if name != "peer not on the allow-list":
            attacker_options["bootstrap"] = seed
        attacker = await extra.enter_async_context(
            start_node(
                tmp_path / "attacker",
                backends=case.attacker_backends() if case.attacker_backends else None,
                **attacker_options,
            )
        )
        await case.attack(Scene(victim, honest, attacker, tmp_path, extra))

        # The victim still serves the honest peer, and still holds and hands out
        # correct records: its own and the honest peer's.
        answer = await honest.ask("math.eval", "6*7", peer=victim.peer_id_text)
        assert answer.output == 42
        assert (await victim.fetch_record(honest.peer_id)).envelope == honest.record.envelope
        assert (await honest.fetch_record(victim.peer_id)).envelope == victim.record.envelope
