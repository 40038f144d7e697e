"""Real nodes on loopback: discovery through the DHT, tasks, and hostile input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from llamanet.backends.builtin import BuiltinBackend
from llamanet.errors import (
    RequestTimeoutError,
)
from llamanet.protocol.records import dht_key_for

from ..doubles import SlowSkillDouble
from ..nodes import eventually, start_node, start_swarm
from ..records import tamper


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


async def test_a_lying_replica_cannot_poison_a_lookup(tmp_path: Path) -> None:
    async with start_swarm(tmp_path, 3) as (bootstrap, victim, alice):
        # bootstrap lies: its store holds a forged copy of alice's record, and it
        # serves it (an honest server checks what it serves; a liar does not).  The
        # victim's lookup ignores it and still returns alice's genuine newest record.
        key = dht_key_for(alice.peer_id).encode()
        bootstrap.dht.kad.value_store.put(key, tamper(alice.record.envelope))
        bootstrap.dht.server._still_valid = lambda key, held: True  # type: ignore[method-assign]
        rejected_before = victim.rejected_records["bad_signature"]
        looked_up = await victim.lookup_record(alice.peer_id)
        assert looked_up is not None and looked_up.envelope == alice.record.envelope
        assert victim.rejected_records["bad_signature"] > rejected_before
        assert (await alice.ask("math.eval", "1+2", peer=victim.peer_id_text)).output == 3


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


async def test_a_restarted_node_is_found_again_and_finds_the_others(tmp_path: Path) -> None:
    # The same identity comes back on a new port: its new record (higher seq, new
    # address) is what the DHT serves, and it finds the swarm again through it.
    per_node: dict[int, dict[str, Any]] = {i: {"skills": ("text.stats",)} for i in range(3)}
    per_node[2] = {"skills": ("text.echo",)}
    async with start_swarm(tmp_path, 3, chain=True, per_node=per_node) as (first, middle, last):
        async with start_node(
            tmp_path / "again", skills=("math.eval",), bootstrap=(first.addrs()[0],)
        ) as before:
            old_seq = before.record.seq
            assert (await last.dht.get_record(before.peer_id)) is not None
        async with start_node(
            tmp_path / "again", skills=("math.eval",), bootstrap=(middle.addrs()[0],)
        ) as after:
            assert after.peer_id == before.peer_id and after.record.seq > old_seq
            found = await last.dht.get_record(after.peer_id)
            assert found is not None and found.seq == after.record.seq
            assert found.record.addrs == after.record.record.addrs
            assert [r.peer for r in await after.find("text.echo")] == [last.peer_id]
            answer = await first.ask("math.eval", "6*7", peer=after.peer_id_text)
            assert answer.output == 42
