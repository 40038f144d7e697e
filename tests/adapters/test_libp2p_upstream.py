"""py-libp2p 0.8.1 behaviours llamanet works around, pinned.

Each test shows the upstream behaviour itself (so it fails, and tells us the
workaround can go, when upstream changes) and, where it can, that our adapter
handles it.  Real hosts on loopback sockets.
"""

from __future__ import annotations

import inspect
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.host.ping import ID as PING_PROTOCOL
from libp2p.kad_dht import common as kad_common
from libp2p.kad_dht import kad_dht as kad_module
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.records.validator import NamespacedValidator
from libp2p.tools.anyio_service import background_trio_service

from llamanet.adapters.dht import (
    PROVIDE_BURST,
    PROVIDE_RATE,
    CapsValidator,
    LlamanetDHT,
)
from llamanet.adapters.libp2p_host import (
    KAD_PROTOCOL,
    UPSTREAM_KAD_PROTOCOL,
    LiveInboundCap,
    apply_host_workarounds,
    build_host,
    connection_config,
)
from llamanet.errors import PeerUnreachableError
from llamanet.protocol.config import TEST_POW_DIFFICULTY, RecordPolicy
from llamanet.protocol.records import dht_key_for
from llamanet.trust.keys import Identity

from ..nodes import start_node, start_swarm
from ..records import envelope_for

LOOPBACK = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")


def test_upstream_kad_protocol_is_hard_coded_and_ignores_the_prefix(tmp_path: Path) -> None:
    # In a fresh interpreter (our rebinding is process-wide), a stock KadDHT built
    # with protocol_prefix="/llamanet" still registers /ipfs/kad/1.0.0.
    script = (
        "import trio, multiaddr\n"
        "from libp2p import new_host\n"
        "from libp2p.kad_dht.kad_dht import KadDHT, DHTMode\n"
        "h = new_host(listen_addrs=[multiaddr.Multiaddr('/ip4/127.0.0.1/tcp/0')])\n"
        "KadDHT(h, DHTMode.SERVER, protocol_prefix='/llamanet')\n"
        "print(sorted(h.get_mux().get_protocols()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert UPSTREAM_KAD_PROTOCOL in out
    assert "/llamanet/kad/1.0.0" not in out
    assert 'PROTOCOL_ID = TProtocol("/ipfs/kad/1.0.0")' in inspect.getsource(kad_common)


async def test_our_nodes_speak_only_the_llamanet_dht(tmp_path: Path) -> None:
    async with start_swarm(tmp_path, 2) as (a, b):
        assert kad_common.PROTOCOL_ID == KAD_PROTOCOL
        protocols = a.host.get_mux().get_protocols()
        assert KAD_PROTOCOL in protocols
        assert UPSTREAM_KAD_PROTOCOL not in protocols
        await b.host.new_stream(ID(a.peer_id), [KAD_PROTOCOL])
        with pytest.raises(Exception, match=r"(?i)protocol|negotiat|fail"):
            await b.host.new_stream(ID(a.peer_id), [UPSTREAM_KAD_PROTOCOL])  # type: ignore[list-item]


async def _connect_time(config: ConnectionConfig) -> float:
    server = new_host(key_pair=create_new_key_pair(), connection_config=config)
    client = new_host(key_pair=create_new_key_pair(), connection_config=config)
    async with server.run([LOOPBACK]), client.run([LOOPBACK]):
        info = info_from_p2p_addr(server.get_addrs()[0])
        started = time.perf_counter()
        await client.connect(info)
        took = time.perf_counter() - started
        await client.close()
        await server.close()
    return took


async def test_happy_eyeballs_delay_and_our_connection_limit() -> None:
    # Upstream waits 250 ms after the last dial unless max_connections_per_peer
    # connections succeeded (default 3): a single-address connect takes >= 250 ms.
    assert await _connect_time(ConnectionConfig()) >= 0.2
    assert connection_config().max_connections_per_peer == 1


def test_auto_connector_has_no_off_switch_so_we_disable_it() -> None:
    defaults = ConnectionConfig()
    assert defaults.low_watermark > 0 and defaults.min_connections > 0
    host = build_host(Identity.generate(), [LOOPBACK])
    auto = host.get_network().auto_connector  # type: ignore[attr-defined]
    assert auto.maybe_connect.__name__ == "_no_auto_connect"


@asynccontextmanager
async def stock_dhts(count: int) -> AsyncIterator[list[KadDHT]]:
    """Stock KadDHTs (our protocol rebinding applies, nothing else of ours)."""
    validator = CapsValidator(RecordPolicy(pow_difficulty=TEST_POW_DIFFICULTY))
    async with AsyncExitStack() as stack:
        dhts = []
        for _ in range(count):
            host = new_host(key_pair=create_new_key_pair(), connection_config=connection_config())
            await stack.enter_async_context(host.run([LOOPBACK]))
            dht = KadDHT(
                host,
                DHTMode.SERVER,
                validator=NamespacedValidator({"llamanet": validator}, strict_validation=True),
                validator_changed=True,
            )
            await stack.enter_async_context(background_trio_service(dht))
            dhts.append(dht)
        # Let each DHT's first maintenance pass (at start, then every 600 s) run
        # while it knows nobody, as it does when a node starts.
        await trio.sleep(0.3)
        for dht in dhts[1:]:
            await dht.host.connect(PeerInfo(dhts[0].host.get_id(), dhts[0].host.get_addrs()))
        yield dhts
        for dht in dhts:
            await dht.host.close()


async def test_connected_peers_are_not_added_to_the_routing_table() -> None:
    async with stock_dhts(2) as (a, b):
        await trio.sleep(0.3)
        assert a.get_routing_table_size() == 0
        assert b.get_routing_table_size() == 0
        # the node adds them itself (Node._add_connected_peers / connect)


async def test_get_value_returns_the_local_copy_forever(tmp_path: Path) -> None:
    owner = Identity.generate()
    key = dht_key_for(owner.peer_id)
    old = envelope_for(owner, seq=1)
    new = envelope_for(owner, seq=2)
    async with stock_dhts(2) as (reader, holder):
        for dht in (reader, holder):
            await dht.add_peer(reader.host.get_id() if dht is holder else holder.host.get_id())
        reader.value_store.put(key.encode(), old)
        holder.value_store.put(key.encode(), new)
        assert await reader.get_value(key) == old  # never asks the network
    async with start_swarm(tmp_path, 2) as (reader_node, holder_node):
        reader_node.dht.kad.value_store.put(key.encode(), old)
        holder_node.dht.kad.value_store.put(key.encode(), new)
        fresh = await reader_node.dht.get_record(owner.peer_id)
        assert fresh is not None and fresh.seq == 2
        held = reader_node.dht.kad.value_store.get(key.encode())
        assert held is not None and held.value == new


async def test_put_value_reports_success_when_every_replica_refused() -> None:
    owner = Identity.generate()
    key = dht_key_for(owner.peer_id)
    async with stock_dhts(2) as (writer, replica):
        await writer.add_peer(replica.host.get_id())
        # The replica's validator refuses everything (a lying or stricter peer).
        replica.validator = NamespacedValidator(
            {"llamanet": CapsValidator(RecordPolicy(pow_difficulty=40))}, strict_validation=True
        )
        await writer.put_value(key, envelope_for(owner, seq=1))  # no error
        assert replica.value_store.get(key.encode()) is None


async def test_our_put_counts_the_replicas_that_accepted(tmp_path: Path) -> None:
    async with start_swarm(tmp_path, 3) as (a, b, c):
        assert await a.dht.put_record(a.record) == 2
        strict = NamespacedValidator(
            {"llamanet": CapsValidator(RecordPolicy(pow_difficulty=40))}, strict_validation=True
        )
        for node in (b, c):
            node.dht.kad.validator = strict
        await a.publish()  # a fresh seq, which both replicas now refuse
        assert await a.dht.put_record(a.record) == 0


async def test_upstream_find_node_refuses_record_keys_so_our_server_answers_them(
    tmp_path: Path,
) -> None:
    # Upstream's handler resets a FIND_NODE whose key is over 50 bytes and not a
    # multihash: every record key, which go and js look up raw before a put or get.
    key = dht_key_for(Identity.generate().peer_id).encode()
    assert len(key) > 50
    source = inspect.getsource(kad_module.KadDHT._do_handle_stream)
    assert "2 <= len(target_key) <= 50" in source
    async with stock_dhts(3) as (hub, stock, client):
        assert await stock.add_peer(hub.host.get_id())
        client.host.get_peerstore().add_addrs(stock.host.get_id(), stock.host.get_addrs(), 60)
        ask = client.peer_routing._query_peer_for_closest
        assert await ask(stock.host.get_id(), b"a short key") == [hub.host.get_id()]
        assert await ask(stock.host.get_id(), key) == []
    async with start_swarm(tmp_path, 4) as nodes:
        client_node, server = nodes[0], nodes[1]
        named = await client_node.dht.kad.peer_routing._query_peer_for_closest(
            ID(server.peer_id), key
        )
        assert named and ID(server.peer_id) not in named
        assert server.dht.server.answered["FIND_NODE"] >= 1
        # ...and records really reach the other nodes (not just the writer's table)
        holders = [
            n for n in nodes if n.dht.kad.value_store.get(dht_key_for(nodes[3].peer_id).encode())
        ]
        assert len(holders) >= 3


@pytest.mark.slow
async def test_add_provider_rate_limit_and_our_pacing(tmp_path: Path) -> None:
    source = inspect.getsource(kad_module.KadDHT.__init__)
    assert "self._provider_rate_max = 10" in source
    assert "self._provider_rate_window = 10.0" in source
    async with stock_dhts(2) as (sender, receiver):
        await sender.add_peer(receiver.host.get_id())
        for i in range(12):
            assert await sender.provide(f"{i:02x}" * 17)  # reports success every time
        await trio.sleep(0.2)
        assert receiver.provider_store.size() == 10  # two were silently dropped
    # Our pacing never lets more than 10 through in any 10 s window...
    assert PROVIDE_BURST + 10 * PROVIDE_RATE < 10
    # ...so 11 announcements all arrive (this takes ~13 s of real time).
    async with stock_dhts(2) as (receiver, sender):
        await sender.add_peer(receiver.host.get_id())
        ours = LlamanetDHT(
            sender.host,
            CapsValidator(RecordPolicy(pow_difficulty=TEST_POW_DIFFICULTY)),
            swarm="pace",
        )
        ours.kad = sender
        names = [f"c{i}" for i in range(11)]
        await ours.provide(names)
        await trio.sleep(0.2)
        assert receiver.provider_store.size() == 11


async def test_find_providers_local_shortcut_and_duplicates(tmp_path: Path) -> None:
    async with start_swarm(tmp_path, 4, per_node={2: {"skills": ("math.eval",)}}) as nodes:
        asker = nodes[3]
        mh = asker.dht._provider_multihash("math.eval")
        await trio.sleep(0.2)
        # Stock find_providers answers from the local store when it has anything:
        # leave one (stale) provider there and the real ones are never found.
        asker.dht.kad.provider_store.providers.pop(mh, None)
        asker.dht.kad.provider_store.add_provider(mh, PeerInfo(ID(nodes[0].peer_id), []))
        stock = await asker.dht.kad.provider_store.find_providers(mh)
        assert [p.peer_id for p in stock] == [ID(nodes[0].peer_id)]
        # With nothing local, stock find_providers goes to the network and returns
        # the provider once per peer that stores it.
        asker.dht.kad.provider_store.providers.pop(mh, None)
        stock = await asker.dht.kad.provider_store.find_providers(mh)
        assert len(stock) > len({p.peer_id for p in stock})
        ours = await asker.dht.find_providers("math.eval")
        ids = [p.peer_id for p in ours]
        assert len(ids) == len(set(ids))
        assert {ID(nodes[2].peer_id), ID(nodes[1].peer_id)} <= set(ids)


async def test_clean_end_of_stream_is_not_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="libp2p.kad_dht.kad_dht")
    async with start_swarm(tmp_path, 3):
        pass
    assert "Failed to read DHT message from stream" not in caplog.text


async def test_cancelling_a_running_host_leaks_its_connections(tmp_path: Path) -> None:
    # Cancelling host.run() cancels SwarmConn.close() after it marked the
    # connection closed but before it closed the socket; Node.aclose() closes the
    # host first for this reason.
    a = new_host(key_pair=create_new_key_pair(), connection_config=connection_config())
    b = new_host(key_pair=create_new_key_pair(), connection_config=connection_config())
    async with a.run([LOOPBACK]):
        with trio.CancelScope() as scope:
            async with b.run([LOOPBACK]):
                await b.connect(info_from_p2p_addr(a.get_addrs()[0]))
                swarm: Any = b.get_network()
                (conn,) = swarm.connections[a.get_id()]
                scope.cancel()
                await trio.sleep(1)
        assert conn.event_closed.is_set()
        assert not conn.muxed_conn.is_closed
        with trio.CancelScope(shield=True):
            await conn.muxed_conn.close()
        await a.close()
    async with start_node(tmp_path / "x") as node:
        pass
    assert node.host._closed  # type: ignore[attr-defined]


async def test_unreachable_peer_is_a_typed_error(tmp_path: Path) -> None:
    async with start_node(tmp_path / "a") as node:
        ghost = Identity.generate().peer_id_text
        with pytest.raises(PeerUnreachableError):
            await node.connect(f"/ip4/127.0.0.1/tcp/1/p2p/{ghost}")
        assert isinstance(node.dht, LlamanetDHT)


def known_addrs(node: Any, peer: bytes) -> list[multiaddr.Multiaddr]:
    try:
        return list(node.host.get_peerstore().addrs(ID(peer)))
    except Exception:  # upstream raises PeerStoreError for a peer with none
        return []


async def test_get_providers_referrals_keep_their_addresses(tmp_path: Path) -> None:
    # Upstream's GET_PROVIDERS client keeps only the IDs of the closer peers an
    # answer names, so a walk cannot reach one it did not already know; the
    # adapter's own RPC puts their addresses in the peerstore.
    async with start_swarm(tmp_path, 3) as (asker, holder, other):
        mh = asker.dht._provider_multihash("sim.nobody")
        store = asker.host.get_peerstore()

        async def forget_other() -> None:
            await asker.host.disconnect(ID(other.peer_id))
            store.clear_addrs(ID(other.peer_id))
            assert known_addrs(asker, other.peer_id) == []

        await forget_other()
        upstream = asker.dht.kad.provider_store._get_providers_from_peer_with_closers
        _providers, closer = await upstream(ID(holder.peer_id), mh)
        assert ID(other.peer_id) in closer
        assert known_addrs(asker, other.peer_id) == []
        await forget_other()
        _providers, closer = await asker.dht._ask_for_providers(ID(holder.peer_id), mh)
        assert ID(other.peer_id) in closer
        assert known_addrs(asker, other.peer_id) == other.host.get_addrs()


async def connect_and_leave(server: Any) -> bool:
    """A fresh client connects to ``server`` and disconnects; did it get in?"""
    client = new_host(key_pair=create_new_key_pair(), connection_config=connection_config())
    async with client.run([LOOPBACK]):
        try:
            await client.connect(info_from_p2p_addr(server.get_addrs()[0]))
            # The server may refuse only after the handshake began: ask something.
            await client.new_stream(server.get_id(), [PING_PROTOCOL])
            ok = True
        except Exception:
            ok = False
        with trio.move_on_after(2):
            await client.disconnect(server.get_id())
            # The server's side closes a moment later and nothing signals it.
            while any(  # noqa: ASYNC110
                c.is_closed is False
                for c in server.get_network().connections.get(client.get_id(), [])
            ):
                await trio.sleep(0.01)
        await client.close()
    return ok


async def test_the_inbound_cap_counts_open_connections_not_every_one_ever() -> None:
    # Upstream's inbound cap (max_connections - min_connections slots) frees a slot
    # only when the swarm stops, so it caps inbound connections over the host's
    # lifetime: with two slots, the third client is refused although the first two
    # have left.  LiveInboundCap (build_host) counts open connections instead.
    small = ConnectionConfig(
        max_connections=4,
        min_connections=2,
        low_watermark=2,
        high_watermark=4,
        max_connections_per_peer=1,
    )
    stock = new_host(key_pair=create_new_key_pair(), connection_config=small)
    async with stock.run([LOOPBACK]):
        assert [await connect_and_leave(stock) for _ in range(3)] == [True, True, False]
        await stock.close()
    ours = new_host(key_pair=create_new_key_pair(), connection_config=small)
    apply_host_workarounds(ours)
    async with ours.run([LOOPBACK]):
        assert [await connect_and_leave(ours) for _ in range(4)] == [True] * 4
        swarm: Any = ours.get_network()
        cap = swarm._inbound_limiter
        assert isinstance(cap, LiveInboundCap) and cap.total_tokens == 2
        assert cap.open_inbound() == 0
        # ...and still refuses a connection while two are open.
        async with AsyncExitStack() as stack:
            clients = []
            for _ in range(2):
                client = new_host(key_pair=create_new_key_pair(), connection_config=small)
                await stack.enter_async_context(client.run([LOOPBACK]))
                await client.connect(info_from_p2p_addr(ours.get_addrs()[0]))
                clients.append(client)
            assert cap.open_inbound() == 2
            assert await connect_and_leave(ours) is False
            for client in clients:
                await client.close()
        await ours.close()
