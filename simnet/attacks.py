"""What the ``forge`` and ``flood`` groups do besides serving their agent: attacks
made with the same calls any DHT or task peer can make, so what simnet measures
is the real nodes' defences (llamanet/trust, the validator, the worker's limits).

* ``forge``: every :data:`FORGE_INTERVAL` the node stores a forged record at an
  honest peer with a ``PUT_VALUE``, in turn: a victim's record with one bit
  flipped (bad signature), its own valid record under a victim's key (key/peer
  mismatch), and its own record at a higher ``seq`` with a bit flipped.
* ``flood``: the node sends task offers for a capability to one peer that serves
  it (the victim: the provider with the lowest peer ID, looked up again every
  thousand offers), :data:`FLOOD_PER_S` a second with up to
  :data:`FLOOD_IN_FLIGHT` open, ignoring ``overloaded`` and ``retry_after``.

Each attempt is reported as an ``attack`` event with its outcome.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, Final

import trio
from libp2p.peer.id import ID
from libp2p.records.record import make_signed_put_record

from llamanet.errors import LlamanetError, TaskRejectedError
from llamanet.node.node import Node
from llamanet.protocol.messages import TaskOffer
from llamanet.protocol.records import dht_key_for, seal_record

from .agents import make_question
from .events import AttackEvent

FORGE_INTERVAL: Final = 0.5
FLOOD_PER_S: Final = 200.0
FLOOD_IN_FLIGHT: Final = 64
FORGERIES: Final = ("bad_signature", "peer_mismatch", "higher_seq_tampered")

Emit = Callable[[dict[str, Any]], None]


def flip_a_bit(envelope: bytes) -> bytes:
    data = bytearray(envelope)
    data[len(data) // 2] ^= 0x01
    return bytes(data)


def forged(kind: str, attacker: Node, victim_envelope: bytes) -> bytes:
    """The forged record of ``kind``: what an attacker can make without the
    victim's key."""
    if kind == "bad_signature":
        return flip_a_bit(victim_envelope)
    if kind == "peer_mismatch":
        return attacker.record.envelope
    if kind == "higher_seq_tampered":
        own = attacker.record.record
        later = dataclasses.replace(own, seq=own.seq + 1000)
        return flip_a_bit(seal_record(later, attacker.identity))
    raise ValueError(f"unknown forgery {kind!r}")


async def forge(
    attacker: Node, victims: Sequence[str], emit: Emit, t0: float, *, seed: int
) -> None:
    """Store forged records at honest peers until cancelled."""
    rng = random.Random(f"forge:{seed}:{attacker.peer_id_text}")
    store = attacker.dht.kad.value_store
    for attempt in range(1_000_000):
        await trio.sleep(FORGE_INTERVAL)
        kind = FORGERIES[attempt % len(FORGERIES)]
        target = rng.choice(victims)
        victim = rng.choice(victims)
        held = attacker.registry.get(victim_bytes(victim), now=attacker.clock())
        if kind == "bad_signature" and held is None:
            continue
        key_peer = attacker.peer_id if kind == "higher_seq_tampered" else victim_bytes(victim)
        value = forged(kind, attacker, held.envelope if held else b"")
        key = dht_key_for(key_peer).encode()
        signed = make_signed_put_record(key, value, attacker.host.get_private_key())
        kept: bool | None = None
        with trio.move_on_after(5):
            try:
                kept = bool(
                    await store._store_at_peer(ID.from_base58(target), key, value, record=signed)
                )
            except Exception:
                kept = None
        outcome = "unreachable" if kept is None else ("kept" if kept else "refused")
        event = AttackEvent(
            at=trio.current_time() - t0,
            kind=f"forge.{kind}",
            attacker=attacker.peer_id_text,
            target=target,
            outcome=outcome,
        )
        emit({"type": "attack", **asdict(event)})


def victim_bytes(text: str) -> bytes:
    return bytes(ID.from_base58(text).to_bytes())


async def flood(
    attacker: Node, capability: str, emit: Emit, t0: float, *, seed: int, limit: int = 100_000
) -> None:
    """Send task offers for ``capability`` to one of its providers until cancelled."""
    in_flight = trio.Semaphore(FLOOD_IN_FLIGHT)
    victim: bytes | None = None

    async def one(target: bytes, number: int) -> None:
        offer = TaskOffer(
            id=os.urandom(16),
            cap=capability,
            # Real questions, so each offer that gets through costs its agent work.
            input=make_question(seed, 1_000_000 + number, capability),
            deadline=int((attacker.clock() + 10) * 1000),
        )
        try:
            await attacker.client.run(target, offer)
            outcome = "served"
        except TaskRejectedError as exc:
            outcome = exc.code
        except LlamanetError as exc:
            outcome = getattr(exc, "code", None) or type(exc).__name__
        finally:
            in_flight.release()
        event = AttackEvent(
            at=trio.current_time() - t0,
            kind="flood",
            attacker=attacker.peer_id_text,
            target=ID(target).to_base58(),
            outcome=outcome,
        )
        emit({"type": "attack", **asdict(event)})

    async with trio.open_nursery() as nursery:
        for sent in range(limit):
            if victim is None or sent % 1000 == 0:
                try:
                    found = await attacker.find(capability)
                except LlamanetError:
                    found = []
                others = sorted(r.peer for r in found if r.peer != attacker.peer_id)
                victim = others[0] if others else victim
                if victim is None:
                    await trio.sleep(1.0)
                    continue
            await in_flight.acquire()
            nursery.start_soon(one, victim, sent)
            await trio.sleep(1 / FLOOD_PER_S)
