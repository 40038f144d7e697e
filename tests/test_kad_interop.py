"""llamanet's DHT against js-libp2p's ``@libp2p/kad-dht`` on ``/llamanet/kad/1.0.0``,
on loopback: records stored by js and served by llamanet, junk refused,
providers found both ways, and a walk that must go through a js node.

The js peer (tests/js/kad_peer.mjs) keeps the kad-dht spec's wire and keyspace:
it looks every key up raw, at sha256(key), before a put or a get, so these pass
only if llamanet answers and places keys the same way."""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.peer.id import ID

from llamanet.node.node import Node
from llamanet.protocol.capabilities import provider_key_string
from llamanet.protocol.records import dht_key_for
from llamanet.trust.keys import Identity

from .js_peers import JsKadPeer, js_kad_peer
from .nodes import eventually, start_node
from .records import envelope_for

pytestmark = pytest.mark.slow


def js_addr(js: JsKadPeer) -> str:
    return next(a for a in js.addrs if a.startswith("/ip4/127.0.0.1/"))


async def js_knows(js: JsKadPeer, *nodes: Node) -> None:
    """Connect ``js`` to ``nodes`` and wait until its routing table holds them (js
    adds a peer once identify says it speaks the DHT protocol)."""
    for node in nodes:
        await js.ok("dial", addr=node.addrs()[0])
    await js.ok("table", size=len(nodes))


def held(node: Node, key: str) -> bytes | None:
    record = node.dht.kad.value_store.get(key.encode())
    return None if record is None else bytes(record.value)


async def test_js_stores_a_record_on_llamanet_which_serves_it_to_a_third_peer(
    tmp_path: Path,
) -> None:
    owner = Identity.generate()
    key = dht_key_for(owner.peer_id)
    envelope = envelope_for(owner, seq=7)
    async with js_kad_peer() as js, start_node(tmp_path / "a") as a:
        await js_knows(js, a)
        put = await js.ok("put", key=key, value_hex=envelope.hex())
        assert put["acked"] == [a.peer_id_text], put
        assert held(a, key) == envelope
        async with start_node(tmp_path / "c", bootstrap=(a.addrs()[0],)) as c:
            served_before = a.dht.server.answered["GET_VALUE"]
            found = await c.dht.get_record(owner.peer_id)
            assert found is not None and found.envelope == envelope and found.seq == 7
            assert a.dht.server.answered["GET_VALUE"] > served_before


@pytest.mark.parametrize("what", ["junk", "signed by another key", "outside the namespace"])
async def test_a_bad_record_put_by_js_is_refused(tmp_path: Path, what: str) -> None:
    owner = Identity.generate()
    key = dht_key_for(owner.peer_id)
    value = {
        "junk": b"\x92\x01\x02 not a record",
        "signed by another key": envelope_for(Identity.generate(), seq=1),
        "outside the namespace": envelope_for(owner, seq=1),
    }[what]
    if what == "outside the namespace":
        key = f"/elsewhere/{owner.peer_id_text}"
    async with js_kad_peer() as js, start_node(tmp_path / "a") as a:
        await js_knows(js, a)
        put = await js.ok("put", key=key, value_hex=value.hex())
        assert put["acked"] == [] and put["refused"] == [a.peer_id_text], put
        assert held(a, key) is None
        assert a.dht.server.refused["invalid_value"] == 1
        # The node still stores and serves a good record from the same peer.
        good = envelope_for(owner, seq=2)
        good_key = dht_key_for(owner.peer_id)
        assert (await js.ok("put", key=good_key, value_hex=good.hex()))["acked"]
        assert held(a, good_key) == good


async def test_providers_are_found_both_ways(tmp_path: Path) -> None:
    async with js_kad_peer() as js, start_node(tmp_path / "a") as a:
        await js_knows(js, a)
        # js finds the llamanet node's capability...
        cid = provider_key_string(a.config.swarm, "math.eval")
        found: list[str] = []
        for _ in range(50):
            found = (await js.ok("providers", cid=cid, seconds=2))["providers"]
            if found:
                break
            await trio.sleep(0.1)
        assert found == [a.peer_id_text]
        # ...and the llamanet node finds a key js provides.
        await js.ok("provide", cid=provider_key_string(a.config.swarm, "js.echo"))
        providers = await a.dht.find_providers("js.echo")
        assert [p.peer_id for p in providers] == [ID.from_base58(js.id)]


async def test_a_walk_through_a_js_node_finds_a_llamanet_record(tmp_path: Path) -> None:
    # holder -- js -- asker: the js node stores nothing of llamanet's (it has no
    # validator for the namespace), so the asker can only find the holder's record
    # by following the js node's referral to the holder.
    async with js_kad_peer() as js:
        via_js: dict[str, Any] = {"bootstrap": (js_addr(js),)}
        async with (
            start_node(tmp_path / "holder", **via_js) as holder,
            start_node(tmp_path / "asker", **via_js) as asker,
        ):
            await js.ok("table", size=2)
            key = dht_key_for(holder.peer_id)
            assert held(holder, key) == holder.record.envelope
            assert held(asker, key) is None
            # The asker forgets whatever its bootstrap walk taught it of the holder.
            holder_id = ID(holder.peer_id)
            with suppress(Exception):
                await asker.host.disconnect(holder_id)
            asker.dht.remove_peer(holder.peer_id)
            asker.host.get_peerstore().clear_addrs(holder_id)
            await eventually(lambda: holder_id not in asker.host.get_connected_peers())
            assert asker.dht.routing_table_peers() == [ID.from_base58(js.id).to_bytes()]

            found = await asker.dht.get_record(holder.peer_id)
            assert found is not None and found.envelope == holder.record.envelope
            assert holder.dht.server.answered["GET_VALUE"] >= 1


async def test_llamanet_puts_and_gets_records_with_a_js_replica(tmp_path: Path) -> None:
    async with js_kad_peer("--store-llamanet") as js, start_node(tmp_path / "a") as a:
        await js_knows(js, a)
        assert await a.dht.put_record(a.record) == 1
        got = await js.ok("get", key=dht_key_for(a.peer_id))
        assert bytes.fromhex(got["value_hex"]) == a.record.envelope
        # A llamanet node that knows only the js replica gets it from there.
        async with start_node(tmp_path / "b", bootstrap=(js_addr(js),)) as b:
            found = await b.dht.get_record(a.peer_id)
            assert found is not None and found.envelope == a.record.envelope
