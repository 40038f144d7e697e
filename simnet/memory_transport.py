"""An in-memory py-libp2p transport with simulated links, for simnet's ``fast`` mode.

Many real py-libp2p hosts (and the llamanet nodes on top of them) run in one
process under ``trio.testing.MockClock``: every byte a host writes reaches its
peer after the link's simulated delay, measured in virtual seconds, and nothing
touches a socket.  Results are in simulated seconds and repeatable by seed.

Public API:

* :class:`LinkModel`: latency, jitter, loss (as a retransmission delay) and
  bandwidth of one direction of a link.
* :class:`MemoryNetwork`: the listeners by address, the link models (a default and
  per-pair overrides) and the traffic counters (:class:`LinkStats`).
* :class:`MemoryTransport` / :class:`MemoryListener` / :class:`MemoryConnection`:
  py-libp2p's ``ITransport`` / ``IListener`` / ``IRawConnection`` over it.
* :func:`build_memory_host`: a llamanet-configured ``BasicHost`` on that transport;
  :func:`run_memory_host`: ``host.run`` that also closes the host on the way out;
  :func:`memory_addresses` / :meth:`MemoryNetwork.address`: node addresses.
* :func:`virtual_time`, :func:`pin_simulated_epoch` and
  :func:`use_virtual_wall_clock`: the simulated wall clock (see "Wall clock" below).

Addresses.  The ``multiaddr`` package has a ``/memory/<n>`` protocol and this
transport accepts it, but simnet gives hosts fake TCP addresses,
``/ip4/10.x.y.z/tcp/<port>`` (:meth:`MemoryNetwork.address`), because llamanet
itself expects TCP: its bootstrap parser refuses any address without
``/ip4|ip6|dns/.../tcp/`` (``llamanet/discovery/bootstrap.py``), and its registry
limits records per IP address, so each simulated node gets its own IP.  These
addresses are never dialled over a real network: a host built by
:func:`build_memory_host` has this transport and no other (py-libp2p's
``new_host(transports=[...])`` uses the given list as it is), and this transport
only looks addresses up in its :class:`MemoryNetwork`.  ``10.0.0.0/8`` is private,
so py-libp2p's subnet-diversity caps in the routing table leave these peers alone,
as they would on a LAN.

Delivery.  A :class:`MemoryConnection` is a pair of one-way pipes.  A write never
blocks: it is stamped with its delivery time, ``max(previous delivery on this
pipe, now + serialisation + latency + jitter [+ loss penalty])``, so a direction
never reorders; the reader waits (in virtual time: trio's clock, never
``time.time()``) until the head of its pipe is due.  No task runs per connection
or per chunk: the only tasks are py-libp2p's own (the inbound handler runs in the
listening swarm's nursery, like TCP's), so nothing outlives the hosts.  Dialling
costs the dialler one round trip (SYN, SYN-ACK; the listener's handler starts
when the SYN arrives); dialling an address nobody listens on is refused after one
round trip.  Closing an end sends the end of stream after whatever is in flight;
the peer's writes after that are accepted for one round trip, then fail with
``ConnectionClosedError`` (TCP's RST).

Cost.  Under ``MockClock(autojump_threshold=0)`` each distinct delivery instant
is at least one pass of trio's run loop, so jitter (every write due at its own
instant) costs wall time; a read that finds data due and every write are
cancellation points but not schedule points, which saves one run-loop pass per
yamux frame.

Randomness.  Jitter and loss are drawn from ``random.Random`` streams derived from
the network's seed, one per pipe (keyed by the two addresses and the ordinal of
the connection between them), not from one shared stream: trio runs the tasks of
a scheduling batch in a random order, so draws from one stream would be handed
out in a different order on every run.

py-libp2p 0.8.1 behaviours handled here:

* Wall clock.  py-libp2p reads ``time.time()`` / ``time.monotonic()`` for
  behaviour, not only logs: the swarm's failed-dial cache (60 s), its prune and
  auto-connect debouncing (``network/swarm.py``), KadDHT's ``ADD_PROVIDER`` rate
  limit (10 per 10 s, ``kad_dht/kad_dht.py``), value and provider record expiry
  and republishing (``kad_dht/value_store.py``, ``provider_store.py``), routing
  table staleness (``kad_dht/routing_table.py``), address TTLs
  (``peer/peerdata.py``), connection health, pruning grace periods and the
  resource manager's token buckets (``rcmgr/``).  Under ``MockClock`` a simulated
  minute passes in milliseconds of wall time, so all of those would be stretched
  by the speed-up (a peer blacklisted for 60 s would stay blacklisted for the
  whole run) and would depend on the machine's speed.
  :func:`use_virtual_wall_clock` (called by :func:`build_memory_host`) replaces
  the ``time`` module global of every loaded ``libp2p.*`` module by
  :data:`SIMULATED_TIME`, which answers from trio's clock while a ``MockClock``
  drives the current run and from the real clock otherwise (so real-mode hosts in
  the same process are unaffected).  A ``libp2p`` module first imported after the
  last host was built keeps the real clock until the next call.
* ``get_remote_address()`` must be an ``(ip, port)`` pair or ``None``: the swarm,
  identify and the resource manager turn it into ``/ip4|ip6/<ip>/tcp/<port>``
  (``network/swarm.py`` ``_build_remote_multiaddr``,
  ``identity/identify/identify.py`` ``_remote_address_to_multiaddr``,
  ``RawConnection.get_transport_addresses``).  A connection reports its peer's
  fake TCP address, and ``None`` for ``/memory`` addresses.  The dialler is
  reported at its listen address rather than at an ephemeral port, as with TCP
  port reuse; otherwise identify's observed-address logic could start
  advertising ports nobody listens on.
* ``IListener.listen(maddr)`` gets no nursery, but the swarm sets the listener's
  ``background_nursery`` attribute before calling it (``Swarm.listen``); inbound
  connections are handled in that nursery, where the handler waits for the swarm
  to finish (``Swarm._do_handle_inbound_connection``).
* ``read_exactly`` (``libp2p/io/utils.py``) gives up after 100 short reads, so a
  read returns everything that is due (up to ``n``), not one write at a time.
* ``TrioTCPStream`` returns ``b""`` from a read and silently drops a write after a
  *local* close; this connection does the same, so code above behaves as on TCP.
* Leaving ``host.run`` does not close the host's connections, and identify runs
  in trio *system* tasks (``BasicHost._schedule_identify``) that only
  ``host.close()`` cancels: :func:`run_memory_host` closes the host on the way
  out, as llamanet's ``Node`` does.  The swarm closes connections one after the
  other, each taking a few round trips, so that close takes simulated seconds.
"""

from __future__ import annotations

import math
import random
import sys
import time as _real_time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final

import multiaddr
import trio
import trio.testing
from libp2p import new_host
from libp2p.abc import IHost, IListener, IRawConnection, ITransport
from libp2p.connection_types import ConnectionType
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import THandler, TProtocol
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.peer.peerstore import PeerStore
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.transport.exceptions import OpenConnectionError

from llamanet.adapters.libp2p_host import (
    apply_host_workarounds,
    connection_config,
    quiet_clean_eof_warnings,
    use_llamanet_kad_protocol,
)

__all__ = [
    "SIMULATED_TIME",
    "LinkModel",
    "LinkStats",
    "MemoryConnection",
    "MemoryListener",
    "MemoryNetwork",
    "MemoryTransport",
    "build_memory_host",
    "memory_addresses",
    "pin_simulated_epoch",
    "run_memory_host",
    "use_virtual_wall_clock",
    "virtual_time",
]

TRANSPORT_NAME: Final = "memory"
MAX_READ: Final = 65536
"""What a read with no size returns at most (as trio's ``receive_some``)."""


# -- link model and counters -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkModel:
    """One direction of a simulated link.  Times in (virtual) seconds."""

    latency: float = 0.02
    """One-way propagation delay of every write."""
    jitter: float = 0.0
    """Extra delay drawn uniformly from ``[0, jitter]`` for each write."""
    loss: float = 0.0
    """Probability that a write is lost once and retransmitted.  A reliable
    stream cannot drop bytes, so loss shows as ``retransmit_factor * latency``
    of extra delay for that write (and, as order is kept, for what follows)."""
    bandwidth: float | None = None
    """Bytes per second, or ``None`` for unlimited.  Writes queue behind each
    other on the link: a write is serialised after the previous one."""
    retransmit_factor: float = 3.0
    """A lost write costs this many latencies more (timeout + resend)."""

    def __post_init__(self) -> None:
        if self.latency < 0 or self.jitter < 0:
            raise ValueError("latency and jitter must not be negative")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError("loss is a probability in [0, 1)")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise ValueError("bandwidth must be positive (or None for unlimited)")
        if self.retransmit_factor < 0:
            raise ValueError("retransmit_factor must not be negative")


@dataclass(slots=True)
class LinkStats:
    """Traffic handed to readers: ``messages`` counts writes (a yamux frame, a
    handshake message...), ``bytes`` their payload.  A write counts once its
    first byte is read; bytes still in flight when a reader closes never count."""

    messages: int = 0
    bytes: int = 0

    def copy(self) -> LinkStats:
        return LinkStats(self.messages, self.bytes)

    def __sub__(self, other: LinkStats) -> LinkStats:
        return LinkStats(self.messages - other.messages, self.bytes - other.bytes)


# -- the simulated wall clock ----------------------------------------------------

# Per MockClock: (wall time, monotonic time, perf counter) when it was first seen,
# so the simulated clocks continue from the real ones instead of starting at 0.
_EPOCHS: weakref.WeakKeyDictionary[trio.testing.MockClock, tuple[float, float, float]] = (
    weakref.WeakKeyDictionary()
)


def _mock_clock() -> trio.testing.MockClock | None:
    try:
        clock = trio.lowlevel.current_clock()
    except RuntimeError:  # not in a trio run (or in a worker thread)
        return None
    return clock if isinstance(clock, trio.testing.MockClock) else None


def _epochs(clock: trio.testing.MockClock) -> tuple[float, float, float]:
    epochs = _EPOCHS.get(clock)
    if epochs is None:
        now = clock.current_time()
        epochs = (
            _real_time.time() - now,
            _real_time.monotonic() - now,
            _real_time.perf_counter() - now,
        )
        _EPOCHS[clock] = epochs
    return epochs


def pin_simulated_epoch(clock: trio.testing.MockClock, wall: float) -> None:
    """Make the simulated clocks read ``wall`` (seconds since the Unix epoch) when
    ``clock`` reads 0, instead of the real time when they were first read: a run
    whose timestamps must not depend on when it was started calls this before
    ``trio.run``.  ``monotonic`` and ``perf_counter`` start from ``wall`` too."""
    _EPOCHS[clock] = (wall, wall, wall)


def virtual_time() -> float:
    """Seconds since the Unix epoch on the simulated wall clock: the real time when
    the run's ``MockClock`` was first read here, plus the virtual time since.  The
    real wall clock outside a ``MockClock`` run."""
    clock = _mock_clock()
    if clock is None:
        return _real_time.time()
    return _epochs(clock)[0] + clock.current_time()


class _SimulatedTime(ModuleType):
    """Stands in for the ``time`` module inside py-libp2p: ``time``, ``monotonic``,
    ``perf_counter`` (and their ``_ns`` forms) follow trio's clock under a
    ``MockClock``; everything else is the real ``time`` module."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_real_time, name)

    def time(self) -> float:
        return virtual_time()

    def time_ns(self) -> int:
        return int(virtual_time() * 1e9)

    def monotonic(self) -> float:
        clock = _mock_clock()
        if clock is None:
            return _real_time.monotonic()
        return _epochs(clock)[1] + clock.current_time()

    def monotonic_ns(self) -> int:
        return int(self.monotonic() * 1e9)

    def perf_counter(self) -> float:
        clock = _mock_clock()
        if clock is None:
            return _real_time.perf_counter()
        return _epochs(clock)[2] + clock.current_time()

    def perf_counter_ns(self) -> int:
        return int(self.perf_counter() * 1e9)


SIMULATED_TIME: Final = _SimulatedTime("time", "py-libp2p's view of time in simnet")


def use_virtual_wall_clock() -> int:
    """Point the ``time`` global of every loaded ``libp2p.*`` module at
    :data:`SIMULATED_TIME` (see the module docstring).  Idempotent; returns how many
    modules were switched by this call.  Modules that import ``time`` inside a
    function body (``network/health/monitor.py``, for a log line) keep the real one."""
    switched = 0
    for name, module in list(sys.modules.items()):
        if (name == "libp2p" or name.startswith("libp2p.")) and getattr(
            module, "time", None
        ) is _real_time:
            module.time = SIMULATED_TIME  # type: ignore[attr-defined]
            switched += 1
    return switched


# -- addresses -------------------------------------------------------------------

_IP_PROTOCOLS: Final = ("ip4", "ip6")


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """A listen or dial address with the ``/p2p/...`` part removed."""

    key: str
    """Canonical text, e.g. ``/ip4/10.0.0.1/tcp/4101`` or ``/memory/3``."""
    remote_address: tuple[str, int] | None
    """What ``get_remote_address()`` reports for this end (``None`` for memory)."""


def _endpoint(maddr: multiaddr.Multiaddr) -> _Endpoint | None:
    """The endpoint ``maddr`` names, or ``None`` if this transport does not handle it."""
    try:
        names = [p.name for p in maddr.protocols()]
    except Exception:  # multiaddr raises several unrelated types for odd input
        return None
    while names and names[-1] == "p2p":
        names.pop()
    if names == ["memory"]:
        value = maddr.value_for_protocol("memory")
        return _Endpoint(f"/memory/{value}", None) if value is not None else None
    if len(names) == 2 and names[0] in _IP_PROTOCOLS and names[1] == "tcp":
        ip = maddr.value_for_protocol(names[0])
        port = maddr.value_for_protocol("tcp")
        if ip is None or port is None:
            return None
        return _Endpoint(f"/{names[0]}/{ip}/tcp/{port}", (str(ip), int(port)))
    return None


def _with_port(endpoint: _Endpoint, port: int) -> _Endpoint:
    """``endpoint`` with its port (or memory number) replaced."""
    if endpoint.remote_address is None:
        return _Endpoint(f"/memory/{port}", None)
    ip = endpoint.remote_address[0]
    family = "ip6" if ":" in ip else "ip4"
    return _Endpoint(f"/{family}/{ip}/tcp/{port}", (ip, port))


def _is_unspecified(endpoint: _Endpoint) -> bool:
    return endpoint.remote_address is not None and endpoint.remote_address[0] in ("0.0.0.0", "::")


def _port_of(endpoint: _Endpoint) -> int:
    if endpoint.remote_address is not None:
        return endpoint.remote_address[1]
    return int(endpoint.key.rsplit("/", 1)[1])


# -- the network -----------------------------------------------------------------


class MemoryNetwork:
    """Listeners by address, link models and traffic counters of one simulated
    network.  Owns no tasks: connections are driven by their readers and writers,
    and inbound handlers run in the listening hosts' nurseries."""

    def __init__(self, seed: int = 0, default_link: LinkModel | None = None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        """Seeded randomness of this network; per-pipe streams are derived from the
        seed (see the module docstring), so this one is left to callers."""
        self.default_link = default_link or LinkModel()
        self.total = LinkStats()
        """Everything delivered on this network."""
        self.per_link: dict[tuple[str, str], LinkStats] = {}
        """Delivered traffic per direction ``(from address, to address)``."""
        self.connections_opened = 0
        self._links: dict[tuple[str, str], LinkModel] = {}
        self._listeners: dict[str, MemoryListener] = {}
        self._open: set[MemoryConnection] = set()
        self._pipe_ordinals: dict[tuple[str, str], int] = {}
        self._next_port = 40000
        self._next_memory = 1

    # links ---------------------------------------------------------------

    def set_link(
        self,
        a: multiaddr.Multiaddr | str,
        b: multiaddr.Multiaddr | str,
        model: LinkModel,
        *,
        both_ways: bool = True,
    ) -> None:
        """Use ``model`` from ``a`` to ``b`` (and back, unless ``both_ways`` is
        false).  Applies to writes made from now on, also on open connections."""
        ka, kb = self._key(a), self._key(b)
        self._links[(ka, kb)] = model
        if both_ways:
            self._links[(kb, ka)] = model

    def clear_link(self, a: multiaddr.Multiaddr | str, b: multiaddr.Multiaddr | str) -> None:
        """Back to the default model between ``a`` and ``b`` (both ways)."""
        ka, kb = self._key(a), self._key(b)
        self._links.pop((ka, kb), None)
        self._links.pop((kb, ka), None)

    def link(self, src: multiaddr.Multiaddr | str, dst: multiaddr.Multiaddr | str) -> LinkModel:
        """The model in force from ``src`` to ``dst``."""
        return self._link(self._key(src), self._key(dst))

    def _link(self, src: str, dst: str) -> LinkModel:
        return self._links.get((src, dst), self.default_link)

    # addresses -----------------------------------------------------------

    @staticmethod
    def address(index: int, port: int = 4101) -> multiaddr.Multiaddr:
        """The fake TCP address of simulated node ``index`` (``0 <= index < 2**24 -
        2``): ``/ip4/10.x.y.z/tcp/<port>``, one IP per node, never dialled for real."""
        if not 0 <= index < (1 << 24) - 2:
            raise ValueError("node index out of range for 10.0.0.0/8")
        n = index + 1  # skip 10.0.0.0
        return multiaddr.Multiaddr(f"/ip4/10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}/tcp/{port}")

    def listening(self) -> list[str]:
        """Addresses with a listener, sorted."""
        return sorted(self._listeners)

    @property
    def open_connections(self) -> int:
        """Connections with at least one end not yet closed."""
        return len(self._open)

    # counters ------------------------------------------------------------

    def traffic(self, src: multiaddr.Multiaddr | str, dst: multiaddr.Multiaddr | str) -> LinkStats:
        """A copy of the traffic delivered from ``src`` to ``dst`` so far."""
        stats = self.per_link.get((self._key(src), self._key(dst)))
        return stats.copy() if stats is not None else LinkStats()

    def sent_by(self, addr: multiaddr.Multiaddr | str) -> LinkStats:
        """Traffic delivered from ``addr`` to anyone."""
        key = self._key(addr)
        out = LinkStats()
        for (src, _), stats in self.per_link.items():
            if src == key:
                out.messages += stats.messages
                out.bytes += stats.bytes
        return out

    # internals -----------------------------------------------------------

    @staticmethod
    def _key(addr: multiaddr.Multiaddr | str) -> str:
        maddr = multiaddr.Multiaddr(addr) if isinstance(addr, str) else addr
        endpoint = _endpoint(maddr)
        if endpoint is None:
            raise ValueError(f"not an address of the memory transport: {addr}")
        return endpoint.key

    def _bind(self, endpoint: _Endpoint, listener: MemoryListener) -> _Endpoint:
        if _is_unspecified(endpoint):
            raise OpenConnectionError(
                f"cannot listen on {endpoint.key}: the simulated network has no interfaces "
                "to expand a wildcard to; listen on the node's own address"
            )
        if _port_of(endpoint) == 0:
            endpoint = self._free_port(endpoint)
        if endpoint.key in self._listeners:
            raise OpenConnectionError(f"cannot listen on {endpoint.key}: address in use")
        self._listeners[endpoint.key] = listener
        return endpoint

    def _unbind(self, key: str, listener: MemoryListener) -> None:
        if self._listeners.get(key) is listener:
            del self._listeners[key]

    def _free_port(self, endpoint: _Endpoint) -> _Endpoint:
        while True:
            if endpoint.remote_address is None:
                candidate = _with_port(endpoint, self._next_memory)
                self._next_memory += 1
            else:
                candidate = _with_port(endpoint, self._next_port)
                self._next_port += 1
            if candidate.key not in self._listeners:
                return candidate

    def _pipe_rng(self, src: str, dst: str) -> random.Random:
        ordinal = self._pipe_ordinals.get((src, dst), 0)
        self._pipe_ordinals[(src, dst)] = ordinal + 1
        return random.Random(f"{self.seed}|{src}|{dst}|{ordinal}")

    def _stats(self, src: str, dst: str) -> LinkStats:
        stats = self.per_link.get((src, dst))
        if stats is None:
            stats = self.per_link[(src, dst)] = LinkStats()
        return stats

    async def _connect(self, local: _Endpoint, remote: _Endpoint) -> MemoryConnection:
        """Open a connection from ``local`` to the listener at ``remote``: the dialler
        pays one round trip, the listener's handler starts when the SYN arrives."""
        there = self._link(local.key, remote.key).latency
        back = self._link(remote.key, local.key).latency
        await trio.sleep(there)
        listener = self._listeners.get(remote.key)
        if listener is None:
            await trio.sleep(back)  # the RST travels back
            raise OpenConnectionError(f"connection refused: nothing listens on {remote.key}")
        outgoing = _Pipe(self, local.key, remote.key)
        incoming = _Pipe(self, remote.key, local.key)
        client = MemoryConnection(
            self, local=local, remote=remote, reader=incoming, writer=outgoing, initiator=True
        )
        server = MemoryConnection(
            self, local=remote, remote=local, reader=outgoing, writer=incoming, initiator=False
        )
        if not listener._accept(server):
            await trio.sleep(back)
            raise OpenConnectionError(f"connection refused: {remote.key} is shutting down")
        self._open.add(client)
        self._open.add(server)
        self.connections_opened += 1
        try:
            await trio.sleep(back)
        except BaseException:
            client._close_now()  # cancelled on the way back: the listener sees an EOF
            raise
        return client


# -- pipes and connections -------------------------------------------------------


class _Pipe:
    """One direction of a connection: chunks stamped with their delivery time."""

    __slots__ = (
        "_eof_queued",
        "_link_free_at",
        "_network",
        "_rng",
        "_stats",
        "chunks",
        "dst",
        "last_delivery",
        "reader_closed",
        "src",
        "waiters",
    )

    def __init__(self, network: MemoryNetwork, src: str, dst: str) -> None:
        self._network = network
        self.src = src
        self.dst = dst
        self._rng = network._pipe_rng(src, dst)
        self._stats = network._stats(src, dst)
        # (delivery time, data, counted); b"" is the end of stream.
        self.chunks: deque[tuple[float, bytes, bool]] = deque()
        self.last_delivery = -math.inf
        self._link_free_at = -math.inf
        self._eof_queued = False
        self.reader_closed = False
        # Cancel scopes of the readers waiting for the head to be due: a write to an
        # empty pipe sets their deadline, a local close cancels them.  So a reader
        # wakes once per delivery, when it is due, not also when it is written.
        self.waiters: set[trio.CancelScope] = set()

    def model(self) -> LinkModel:
        return self._network._link(self.src, self.dst)

    def _delay(self, model: LinkModel) -> float:
        delay = model.latency
        if model.jitter:
            delay += self._rng.uniform(0.0, model.jitter)
        if model.loss and self._rng.random() < model.loss:
            delay += model.retransmit_factor * model.latency
        return delay

    def send(self, data: bytes) -> None:
        if self._eof_queued or self.reader_closed:
            return
        model = self.model()
        now = trio.current_time()
        start = max(now, self._link_free_at)
        done = start + (len(data) / model.bandwidth if model.bandwidth else 0.0)
        self._link_free_at = done
        self._queue(max(self.last_delivery, done + self._delay(model)), data)

    def send_eof(self) -> None:
        if not (self._eof_queued or self.reader_closed):
            model = self.model()
            self._queue(max(self.last_delivery, trio.current_time() + model.latency), b"")
        self._eof_queued = True

    def _queue(self, at: float, data: bytes) -> None:
        self.last_delivery = at
        self.chunks.append((at, data, False))
        for scope in self.waiters:
            if at < scope.deadline:  # only when the pipe was empty: deliveries never go back
                scope.deadline = at

    def close_reader(self) -> None:
        self.reader_closed = True
        self.chunks.clear()
        for scope in self.waiters:
            scope.cancel()

    async def receive(self, max_bytes: int) -> bytes:
        # A cancellation point, but a schedule point only when it has to wait: under
        # MockClock every extra yield is one more pass of trio's run loop, and a
        # yamux frame is two reads (header, body).  Readers loop through other
        # awaits (yamux's locks, channels), so nobody is starved.
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self.reader_closed:
                return b""
            due = self.chunks[0][0] if self.chunks else math.inf
            now = trio.current_time()
            if due <= now:
                return self._take(now, max_bytes)
            with trio.CancelScope(deadline=due) as scope:
                self.waiters.add(scope)
                try:
                    await trio.sleep_forever()
                finally:
                    self.waiters.discard(scope)

    def _take(self, now: float, max_bytes: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        chunks = self.chunks
        while chunks and size < max_bytes:
            at, data, counted = chunks[0]
            if at > now or not data:
                break  # not due yet, or the end of stream (returned on the next read)
            if not counted:
                self._stats.messages += 1
                self._network.total.messages += 1
            room = max_bytes - size
            if len(data) > room:
                chunks[0] = (at, data[room:], True)
                data = data[:room]
            else:
                chunks.popleft()
            parts.append(data)
            size += len(data)
        self._stats.bytes += size
        self._network.total.bytes += size
        return b"".join(parts)


class MemoryConnection(IRawConnection):
    """One end of a simulated connection (py-libp2p's ``IRawConnection``)."""

    def __init__(
        self,
        network: MemoryNetwork,
        *,
        local: _Endpoint,
        remote: _Endpoint,
        reader: _Pipe,
        writer: _Pipe,
        initiator: bool,
    ) -> None:
        self.network = network
        self.local_key = local.key
        self.remote_key = remote.key
        self._remote_address = remote.remote_address
        self._reader = reader
        self._writer = writer
        self._transport_addresses = [multiaddr.Multiaddr(remote.key)]
        self.is_initiator = initiator
        self.closed = False
        self._opened_at = trio.current_time()
        self._reset_at: float | None = None

    def __repr__(self) -> str:
        arrow = "->" if self.is_initiator else "<-"
        return f"<MemoryConnection {self.local_key} {arrow} {self.remote_key}>"

    async def write(self, data: bytes) -> None:
        # Never blocks (the pipe has no window: yamux's own flow control bounds what
        # is in flight) and, like a read that finds data, is no schedule point.
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.closed:
            return  # as TrioTCPStream: a write after our own close is dropped silently
        if self._writer.reader_closed:
            # The peer has closed.  As on TCP, the first write after that is
            # accepted (and lost); the peer's RST comes back one round trip later,
            # and writes from then on fail.
            now = trio.current_time()
            if self._reset_at is None:
                rtt = self._writer.model().latency + self._reader.model().latency
                self._reset_at = now + rtt
            if now >= self._reset_at:
                raise ConnectionClosedError(
                    f"connection reset by {self.remote_key}", transport=TRANSPORT_NAME
                )
            return
        if data:
            self._writer.send(bytes(data))

    async def read(self, n: int | None = None) -> bytes:
        if n is not None and n <= 0:
            await trio.lowlevel.checkpoint()
            return b""
        return await self._reader.receive(MAX_READ if n is None else n)

    async def close(self) -> None:
        """Close both directions: the peer reads what is in flight, then the end of
        stream; our own reads return ``b""`` from now on."""
        self._close_now()
        await trio.lowlevel.checkpoint()

    def _close_now(self) -> None:
        if not self.closed:
            self.closed = True
            self._writer.send_eof()
            self._reader.close_reader()
            self.network._open.discard(self)

    def get_remote_address(self) -> tuple[str, int] | None:
        return self._remote_address

    def get_transport_addresses(self) -> list[multiaddr.Multiaddr]:
        return list(self._transport_addresses)

    def get_connection_type(self) -> ConnectionType:
        return ConnectionType.DIRECT

    def conn_state(self) -> dict[str, Any]:
        """Context for py-libp2p's ``IncompleteReadError`` messages."""
        return {
            "transport": TRANSPORT_NAME,
            "connection_duration": trio.current_time() - self._opened_at,
        }


# -- transport and listener ------------------------------------------------------


class MemoryListener(IListener):
    """Accepts connections for one host.  Handlers run in the swarm's background
    nursery, which ``Swarm.listen`` assigns to ``background_nursery``."""

    background_nursery: trio.Nursery | None

    def __init__(self, network: MemoryNetwork, handler: THandler) -> None:
        self.network = network
        self.handler = handler
        self.background_nursery = None
        self._bound: list[_Endpoint] = []
        self._closed = False

    async def listen(self, maddr: multiaddr.Multiaddr) -> None:
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise OpenConnectionError(f"cannot listen on {maddr}: listener is closed")
        if self.background_nursery is None:
            raise OpenConnectionError(
                f"cannot listen on {maddr}: no background nursery (run the host with "
                "host.run(...), which runs the swarm)"
            )
        endpoint = _endpoint(maddr)
        if endpoint is None:
            raise OpenConnectionError(f"the memory transport cannot listen on {maddr}")
        self._bound.append(self.network._bind(endpoint, self))

    def _accept(self, conn: MemoryConnection) -> bool:
        nursery = self.background_nursery
        if self._closed or nursery is None:
            return False
        try:
            nursery.start_soon(self.handler, conn)
        except RuntimeError:  # the nursery is closing: the host is shutting down
            return False
        return True

    def get_addrs(self) -> tuple[multiaddr.Multiaddr, ...]:
        return tuple(multiaddr.Multiaddr(e.key) for e in self._bound)

    async def close(self) -> None:
        self._closed = True
        for endpoint in self._bound:
            self.network._unbind(endpoint.key, self)
        self._bound.clear()
        await trio.lowlevel.checkpoint()


class MemoryTransport(ITransport):
    """Dials and listens on a :class:`MemoryNetwork`.  ``local_address`` is where
    this host's connections come from (its listen address): it selects link models
    and labels traffic."""

    def __init__(self, network: MemoryNetwork, local_address: multiaddr.Multiaddr) -> None:
        endpoint = _endpoint(local_address)
        if endpoint is None:
            raise ValueError(f"not an address of the memory transport: {local_address}")
        self.network = network
        self.local = endpoint

    async def dial(self, maddr: multiaddr.Multiaddr) -> IRawConnection:
        remote = _endpoint(maddr)
        if remote is None:
            raise OpenConnectionError(f"the memory transport cannot dial {maddr}")
        return await self.network._connect(self.local, remote)

    def create_listener(self, handler_function: THandler) -> MemoryListener:
        return MemoryListener(self.network, handler_function)

    def can_dial(self, maddr: multiaddr.Multiaddr) -> bool:
        return _endpoint(maddr) is not None

    def can_listen(self, maddr: multiaddr.Multiaddr) -> bool:
        return self.can_dial(maddr)

    def protocols(self) -> list[str]:
        return ["memory", "tcp"]


# -- hosts -----------------------------------------------------------------------

PLAINTEXT_NOTE: Final = (
    "Fast mode's connections use libp2p's plaintext handshake, not Noise, so a peer "
    "ID is not proven by the transport here; llamanet's nodes negotiate Noise only "
    "(real and lan modes do). Record and receipt signatures are real Ed25519."
)


def build_memory_host(
    seed32: bytes,
    network: MemoryNetwork,
    address: multiaddr.Multiaddr,
    *,
    connection_budget: int | None = None,
) -> IHost:
    """A py-libp2p ``BasicHost`` on ``network``: the Ed25519 key from ``seed32`` (as
    ``llamanet.adapters.libp2p_host.build_host`` derives it from an identity's
    seed), plaintext security, yamux, and llamanet's tweaks (llamanet's KAD
    protocol id, clean-EOF log filter, connection settings, no auto-connector).
    Not yet listening: run it with ``host.run([address])``.  ``connection_budget``
    is :func:`llamanet.adapters.libp2p_host.connection_config`'s, with a 5 s grace
    period (simulated runs are short).

    Plaintext (``/plaintext/2.0.0``) replaces Noise because fast mode does not
    measure cryptography and a Noise handshake per connection is pure CPU cost
    that virtual time does not see.  Identities are still real Ed25519 keys (the
    plaintext handshake exchanges them and checks the peer ID against the key),
    and llamanet's record signatures are still real Ed25519 signatures.
    """
    if len(seed32) != 32:
        raise ValueError("an Ed25519 seed is 32 bytes")
    use_llamanet_kad_protocol()
    quiet_clean_eof_warnings()
    key_pair = create_new_key_pair(seed32)
    peerstore = PeerStore()
    host = new_host(
        key_pair=key_pair,
        peerstore_opt=peerstore,
        sec_opt={
            TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(key_pair, peerstore=peerstore)
        },
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        transports=[MemoryTransport(network, address)],
        listen_addrs=[address],
        connection_config=connection_config(connection_budget, grace_period=5.0),
        enable_mDNS=False,
    )
    apply_host_workarounds(host)
    use_virtual_wall_clock()
    return host


@asynccontextmanager
async def run_memory_host(
    host: IHost, listen: Sequence[multiaddr.Multiaddr], *, close_timeout: float = 60.0
) -> AsyncIterator[IHost]:
    """``host.run(listen)``, closing the host on the way out as llamanet's ``Node``
    does (shielded, bounded in virtual seconds).  Leaving ``host.run`` alone does not
    close py-libp2p's connections, and its identify tasks are trio *system* tasks
    (``BasicHost._schedule_identify``) that only ``host.close()`` cancels.  A
    connection takes a few round trips to close and the swarm closes them one
    after another, so closing a well-connected host takes simulated seconds."""
    async with host.run(listen):
        try:
            yield host
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(close_timeout):
                await host.close()


def memory_addresses(count: int, port: int = 4101) -> Sequence[multiaddr.Multiaddr]:
    """:meth:`MemoryNetwork.address` for nodes ``0 .. count - 1``."""
    return [MemoryNetwork.address(i, port) for i in range(count)]
