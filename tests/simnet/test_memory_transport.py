"""simnet's in-memory py-libp2p transport: delays in virtual time, order, seeds,
real hosts and a real KadDHT on top, traffic counters, clean shutdown.

Every test runs under ``MockClock(autojump_threshold=0)``: the delays below are
simulated seconds and cost no wall time.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from types import ModuleType

import multiaddr
import pytest
import trio
import trio.testing
from libp2p.abc import IHost, INetStream, IRawConnection
from libp2p.custom_types import TProtocol
from libp2p.io.abc import ReadWriteCloser
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.kad_dht import kad_dht as kad_module
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.network import swarm as swarm_module
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.peerinfo import PeerInfo
from libp2p.records.validator import BlankValidator, NamespacedValidator
from libp2p.tools.anyio_service import background_trio_service
from libp2p.transport.exceptions import OpenConnectionError

from llamanet.adapters.libp2p_host import KAD_PROTOCOL
from llamanet.trust.keys import Identity
from simnet.memory_transport import (
    LinkModel,
    LinkStats,
    MemoryNetwork,
    MemoryTransport,
    build_memory_host,
    memory_addresses,
    pin_simulated_epoch,
    run_memory_host,
    virtual_time,
)

ECHO = TProtocol("/simnet-test/echo/1.0.0")
A, B = MemoryNetwork.address(0), MemoryNetwork.address(1)


def seed_for(i: int) -> bytes:
    return hashlib.sha256(b"simnet memory transport test %d" % i).digest()


@asynccontextmanager
async def raw_pair(network: MemoryNetwork) -> AsyncIterator[tuple[IRawConnection, ReadWriteCloser]]:
    """A raw connection from A to B and B's end of it, without hosts on top."""
    send, receive = trio.open_memory_channel[ReadWriteCloser](1)

    async def handler(conn: ReadWriteCloser) -> None:
        await send.send(conn)

    async with send, receive, trio.open_nursery() as nursery:
        listener = MemoryTransport(network, B).create_listener(handler)
        listener.background_nursery = nursery  # what Swarm.listen does
        await listener.listen(B)
        client = await MemoryTransport(network, A).dial(B)
        server = await receive.receive()
        try:
            yield client, server
        finally:
            await client.close()
            await server.close()
            await listener.close()
    assert network.open_connections == 0
    assert network.listening() == []


async def read_exactly(conn: ReadWriteCloser, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await conn.read(n - len(data))
        if not chunk:
            raise EOFError(f"end of stream after {len(data)} of {n} bytes")
        data += chunk
    return data


async def echo(stream: INetStream) -> None:
    try:
        while True:
            await stream.write(await stream.read(65536))
    except StreamEOF:
        await stream.close()


def kad_dht(host: IHost) -> KadDHT:
    validator = NamespacedValidator({"sim": BlankValidator()}, strict_validation=True)
    return KadDHT(
        host,
        DHTMode.SERVER,
        validator=validator,
        validator_changed=True,
        strict_validation=True,
    )


# -- hosts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "addresses",
    [
        pytest.param((A, B), id="fake-tcp"),
        pytest.param(
            (multiaddr.Multiaddr("/memory/1"), multiaddr.Multiaddr("/memory/2")), id="memory"
        ),
    ],
)
async def test_hosts_round_trip_costs_two_latencies_of_virtual_time(
    autojump_clock: trio.testing.MockClock,
    addresses: tuple[multiaddr.Multiaddr, multiaddr.Multiaddr],
) -> None:
    latency = 0.2
    network = MemoryNetwork(seed=1, default_link=LinkModel(latency=latency))
    a_addr, b_addr = addresses
    a = build_memory_host(seed_for(0), network, a_addr)
    b = build_memory_host(seed_for(1), network, b_addr)
    b.set_stream_handler(ECHO, echo)
    # The libp2p identity is llamanet's Ed25519 identity for the same seed.
    assert b.get_id().to_bytes() == Identity(seed_for(1)).peer_id
    wall_start, virtual_start = time.perf_counter(), trio.current_time()
    rtts: list[float] = []
    async with run_memory_host(a, [a_addr]), run_memory_host(b, [b_addr]):
        assert [str(addr) for addr in b.get_addrs()] == [f"{b_addr}/p2p/{b.get_id()}"]
        await a.connect(PeerInfo(b.get_id(), [b_addr]))
        stream = await a.new_stream(b.get_id(), [ECHO])
        before = network.traffic(a_addr, b_addr)
        for i in range(20):
            sent = trio.current_time()
            await stream.write(b"ping %d" % i)
            assert await stream.read(100) == b"ping %d" % i
            rtts.append(trio.current_time() - sent)
        payload = sum(len(b"ping %d" % i) for i in range(20))
        sent_stats = network.traffic(a_addr, b_addr) - before
        assert sent_stats.messages >= 20 and sent_stats.bytes >= payload
        await stream.close()
    wall, simulated = time.perf_counter() - wall_start, trio.current_time() - virtual_start

    assert all(2 * latency - 1e-9 <= rtt <= 2 * latency + 1e-3 for rtt in rtts), rtts
    assert simulated > sum(rtts) >= 40 * latency - 1e-6
    assert wall < simulated / 4  # the delays were simulated, not slept
    assert network.open_connections == 0 and network.listening() == []


async def test_kad_dht_over_twenty_hosts_finds_a_value(
    autojump_clock: trio.testing.MockClock,
) -> None:
    n, late = 20, 19  # host 19 joins only after the value was put
    network = MemoryNetwork(seed=5)
    addrs = memory_addresses(n)
    link_rng = random.Random(5)
    for i in range(n):
        for j in range(i + 1, n):
            network.set_link(addrs[i], addrs[j], LinkModel(latency=link_rng.uniform(0.01, 0.05)))
    hosts = [build_memory_host(seed_for(i), network, addr) for i, addr in enumerate(addrs)]
    dhts = [kad_dht(host) for host in hosts]
    assert KAD_PROTOCOL in hosts[0].get_mux().get_protocols()

    async def join(i: int) -> None:
        await hosts[i].connect(PeerInfo(hosts[0].get_id(), [addrs[0]]))
        await trio.sleep(0.2)  # let identify record the protocols, as llamanet does
        assert await dhts[i].add_peer(hosts[0].get_id())
        me = hosts[i].get_id().to_bytes()
        for peer in await dhts[i].peer_routing.find_closest_peers_network(me):
            await dhts[i].add_peer(peer)

    async def staggered_join(i: int) -> None:
        # KadDHT resets inbound streams beyond 12 at once: don't all hit host 0.
        await trio.sleep(0.05 * i)
        await join(i)

    async with AsyncExitStack() as stack:
        for host, addr, dht in zip(hosts, addrs, dhts, strict=True):
            await stack.enter_async_context(run_memory_host(host, [addr]))
            await stack.enter_async_context(background_trio_service(dht))
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for i in range(1, late):
                    nursery.start_soon(staggered_join, i)
            assert dhts[0].get_routing_table_size() == late - 1
            assert all(dht.get_routing_table_size() >= 2 for dht in dhts[1:late])

            await dhts[3].put_value("/sim/answer", b"42")
            holders = sum(dht.value_store.get(b"/sim/answer") is not None for dht in dhts)
            assert holders > 5

            await join(late)
            assert dhts[late].value_store.get(b"/sim/answer") is None
            asked = trio.current_time()
            assert await dhts[late].get_value("/sim/answer") == b"42"
            assert trio.current_time() - asked >= 2 * 0.01  # it went to the network
    assert network.open_connections == 0
    assert network.connections_opened >= n - 1
    assert network.total.messages > 1000


# -- raw connections -----------------------------------------------------------------


async def test_order_is_kept_under_jitter(autojump_clock: trio.testing.MockClock) -> None:
    model = LinkModel(latency=0.01, jitter=0.05)
    network = MemoryNetwork(seed=3, default_link=model)
    sent_at: list[float] = []
    arrived_at: list[float] = []
    async with raw_pair(network) as (client, server):

        async def writer() -> None:
            for i in range(200):
                sent_at.append(trio.current_time())
                await client.write(i.to_bytes(4, "big"))
                await trio.sleep(0.001)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            for i in range(200):
                assert int.from_bytes(await read_exactly(server, 4), "big") == i
                arrived_at.append(trio.current_time())

    delays = [got - sent for sent, got in zip(sent_at, arrived_at, strict=True)]
    assert all(model.latency - 1e-9 <= d <= model.latency + model.jitter + 1e-9 for d in delays)
    assert len({round(d, 6) for d in delays}) > 50  # the jitter really varied the delays


async def delivery_schedule(seed: int) -> list[float]:
    network = MemoryNetwork(seed=seed, default_link=LinkModel(latency=0.02, jitter=0.03, loss=0.1))
    times: list[float] = []
    async with raw_pair(network) as (client, server):
        start = trio.current_time()

        async def writer() -> None:
            for i in range(50):
                await client.write(bytes([i]))
                await trio.sleep(0.005)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            for i in range(50):
                assert await read_exactly(server, 1) == bytes([i])
                times.append(trio.current_time() - start)
    return times


async def test_same_seed_same_schedule(autojump_clock: trio.testing.MockClock) -> None:
    first, again, other = (
        await delivery_schedule(11),
        await delivery_schedule(11),
        await delivery_schedule(12),
    )
    assert again == pytest.approx(first, abs=1e-9)
    assert max(abs(x - y) for x, y in zip(first, other, strict=True)) > 1e-3


async def test_bandwidth_serialises_and_loss_delays(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=4, default_link=LinkModel(latency=0.1, bandwidth=10_000))
    async with raw_pair(network) as (client, server):
        start = trio.current_time()
        await client.write(bytes(5000))
        await client.write(bytes(5000))  # queues behind the first on the link
        await read_exactly(server, 5000)
        assert trio.current_time() - start == pytest.approx(0.5 + 0.1)
        await read_exactly(server, 5000)
        assert trio.current_time() - start == pytest.approx(1.0 + 0.1)

    lossy = LinkModel(latency=0.1, loss=0.5, retransmit_factor=3.0)
    network = MemoryNetwork(seed=4, default_link=lossy)
    delays: list[float] = []
    async with raw_pair(network) as (client, server):
        for _ in range(100):
            start = trio.current_time()
            await client.write(b"x")
            await read_exactly(server, 1)
            delays.append(trio.current_time() - start)
            await trio.sleep(1)  # let the link drain: no write queues behind a lost one
    assert {round(d, 6) for d in delays} == {0.1, 0.4}
    assert 20 < sum(d > 0.2 for d in delays) < 80


async def test_traffic_counters_grow_with_traffic(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork(seed=2)
    async with raw_pair(network) as (client, server):
        before = network.total.copy()
        await client.write(b"x" * 1000)
        await client.write(b"y" * 500)
        await trio.sleep(0.001)  # not due yet: nothing delivered
        assert network.total == before
        assert await read_exactly(server, 1500) == b"x" * 1000 + b"y" * 500
        assert network.total - before == LinkStats(messages=2, bytes=1500)
        assert network.traffic(A, B) == LinkStats(messages=2, bytes=1500)
        assert network.traffic(B, A) == LinkStats()
        await server.write(b"z")
        assert await read_exactly(client, 1) == b"z"
        assert network.sent_by(B) == LinkStats(messages=1, bytes=1)


async def test_close_gives_the_peer_eof_then_a_reset(
    autojump_clock: trio.testing.MockClock,
) -> None:
    latency = 0.05
    network = MemoryNetwork(default_link=LinkModel(latency=latency))
    async with raw_pair(network) as (client, server):
        await client.write(b"last words")
        await client.close()
        assert await client.read(10) == b""  # our own end: closed
        await client.write(b"ignored")  # dropped silently, as TrioTCPStream does
        assert await read_exactly(server, 10) == b"last words"
        assert await server.read(10) == b""  # then the end of stream
        await server.write(b"into the void")  # accepted; the RST is on its way
        await trio.sleep(2 * latency)
        with pytest.raises(ConnectionClosedError):
            await server.write(b"again")


async def test_dialling_nobody_is_refused_after_a_round_trip(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(default_link=LinkModel(latency=0.03))
    start = trio.current_time()
    with pytest.raises(OpenConnectionError, match="refused"):
        await MemoryTransport(network, A).dial(B)
    assert trio.current_time() - start == pytest.approx(0.06)
    transport = MemoryTransport(network, A)
    assert transport.can_dial(B) and transport.can_dial(multiaddr.Multiaddr("/memory/7"))
    assert not transport.can_dial(multiaddr.Multiaddr("/ip4/10.0.0.2/tcp/4101/ws"))
    assert not transport.can_dial(multiaddr.Multiaddr("/ip4/10.0.0.2/udp/4101/quic-v1"))


# -- py-libp2p's clock -----------------------------------------------------------------


def time_module_of(module: ModuleType) -> ModuleType:
    """What ``time`` means inside a py-libp2p module."""
    found = vars(module)["time"]
    assert isinstance(found, ModuleType)
    return found


async def test_libp2p_reads_the_simulated_clock(autojump_clock: trio.testing.MockClock) -> None:
    build_memory_host(seed_for(0), MemoryNetwork(), A)  # installs the simulated clock
    kad_time, swarm_time = time_module_of(kad_module), time_module_of(swarm_module)
    assert kad_time is not time and swarm_time is not time
    wall, monotonic = kad_time.time(), swarm_time.monotonic()
    assert abs(wall - time.time()) < 60
    await trio.sleep(3600)
    assert kad_time.time() - wall == pytest.approx(3600)
    assert swarm_time.monotonic() - monotonic == pytest.approx(3600)
    assert virtual_time() == pytest.approx(kad_time.time())
    # Outside a MockClock run (here: a worker thread) it is the real clock again.
    real_wall = await trio.to_thread.run_sync(kad_time.time)
    assert abs(real_wall - time.time()) < 60


def test_the_simulated_epoch_can_be_pinned() -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    pin_simulated_epoch(clock, 1_767_225_600.0)
    kad_time = time_module_of(kad_module)

    async def main() -> tuple[float, float]:
        await trio.sleep(10)
        return virtual_time(), kad_time.monotonic()

    build_memory_host(seed_for(0), MemoryNetwork(), A)
    assert trio.run(main, clock=clock) == (1_767_225_610.0, 1_767_225_610.0)


async def test_a_connection_budget_closes_idle_connections_past_their_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(seed=3, default_link=LinkModel(latency=0.01))
    hub_addr = multiaddr.Multiaddr("/memory/100")
    hub = build_memory_host(seed_for(100), network, hub_addr, connection_budget=3)
    addrs = [multiaddr.Multiaddr(f"/memory/{i}") for i in range(8)]
    spokes = [build_memory_host(seed_for(i), network, a) for i, a in enumerate(addrs)]
    hub.set_stream_handler(ECHO, echo)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(run_memory_host(hub, [hub_addr]))
        for spoke, addr in zip(spokes, addrs, strict=True):
            await stack.enter_async_context(run_memory_host(spoke, [addr]))
        for spoke in spokes[:6]:
            await spoke.connect(PeerInfo(hub.get_id(), [hub_addr]))
        # One spoke keeps a stream open: a connection in use is never closed.
        busy = await spokes[0].new_stream(hub.get_id(), [ECHO])
        assert len(hub.get_connected_peers()) == 6  # within the 5 s grace period
        await trio.sleep(6)
        # The next connection makes upstream's pruner look: down to two thirds.
        await spokes[6].connect(PeerInfo(hub.get_id(), [hub_addr]))
        await trio.sleep(2)
        connected = hub.get_connected_peers()
        assert len(connected) <= 3
        assert spokes[0].get_id() in connected and spokes[6].get_id() in connected
        await busy.write(b"still here")
        assert await busy.read(100) == b"still here"
        await busy.close()
