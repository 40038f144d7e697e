"""The one place llamanet builds and configures a py-libp2p host.

py-libp2p 0.8.1 behaviours handled here, each with a test in
``tests/adapters/test_libp2p_upstream.py`` that fails when upstream changes:

* ``new_host`` without ``sec_opt`` offers Noise, TLS, SECIO *and plaintext*
  (``/plaintext/2.0.0``), and a dialler that offers only plaintext is accepted.
  Plaintext carries a public key with no proof of its private key, so such a
  dialler can connect as any peer ID it likes.  :func:`build_host` passes
  :func:`noise_only`: the handshake itself proves the remote peer's ID, and a
  dial to an address under the wrong peer ID fails (Noise compares the key it
  gets with the peer ID it dialled).  Pinned in ``tests/adapters/test_noise_only.py``.
* ``KadDHT(protocol_prefix=...)`` is ignored on the wire: ``PROTOCOL_ID =
  "/ipfs/kad/1.0.0"`` is hard-coded in ``libp2p/kad_dht/common.py`` and imported by
  value into ``kad_dht.py``, ``peer_routing.py``, ``value_store.py`` and
  ``provider_store.py`` (``routing_table.py`` re-imports it from ``common`` at call
  time).  :func:`use_llamanet_kad_protocol` rebinds all five names, so every DHT in
  this process speaks only ``/llamanet/kad/1.0.0`` and never joins or answers the
  IPFS DHT.  All DHTs in a llamanet process are llamanet DHTs, so a process-wide
  rebinding is the honest scope.
* ``Swarm.dial_peer`` waits ``_HAPPY_EYEBALLS_DELAY`` (250 ms) after the last dial
  even with one address, unless ``max_connections_per_peer`` connections already
  succeeded: we set that limit to 1, and a loopback connect takes milliseconds.
* ``NetStream.read`` raises ``StreamEOF`` at end of stream, while
  ``read_varint_prefixed_bytes_limited`` (used by the KAD handler) expects ``b""``,
  so every normal end of an inbound DHT stream is logged as a WARNING "Failed to
  read DHT message from stream".  :class:`_CleanEofFilter` drops exactly those
  records (an EOF is not a failure) and keeps every other warning.
* The ``AutoConnector`` dials peerstore entries towards (low + high watermark) / 2
  connections and has no off switch; with the DHT filling the peerstore it keeps
  dialling every peer it ever heard of.  :func:`build_host` replaces its
  ``maybe_connect`` on the instance with a no-op: llamanet decides whom to
  connect to (bootstrap, DHT lookups, tasks).
* The swarm's inbound connection cap (``Swarm._inbound_limiter``,
  ``max_connections - min_connections`` slots, 250 by default) takes a slot per
  inbound connection and gives it back when the connection's handler returns,
  which is when the swarm stops (the handler awaits ``manager.wait_finished()``
  for as long as the swarm lives).  So it caps inbound connections over the
  host's *lifetime*: after 250 of them, closed or not, a host refuses every new
  one ("failed to negotiate the secure protocol" at the dialler).  A node near a
  popular DHT key, or a bootstrap peer, gets there within minutes in a large
  swarm.  :class:`LiveInboundCap` takes its place and counts the inbound
  connections open now.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Iterable, Sequence
from typing import Any, Final

import ifaddr
import multiaddr
import multiaddr.exceptions
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream, ISecureTransport
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.kad_dht import common as _kad_common
from libp2p.kad_dht import kad_dht as _kad_dht
from libp2p.kad_dht import peer_routing as _kad_peer_routing
from libp2p.kad_dht import provider_store as _kad_provider_store
from libp2p.kad_dht import value_store as _kad_value_store
from libp2p.network.config import ConnectionConfig
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID
from libp2p.rcmgr import Direction
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from llamanet.errors import PeerUnreachableError, StreamBrokenError
from llamanet.protocol import bids
from llamanet.trust.keys import Identity

TASK_PROTOCOL: Final = TProtocol("/llamanet/task/1.0.0")
CAPS_PROTOCOL: Final = TProtocol("/llamanet/caps/1.0.0")
BID_PROTOCOL: Final = TProtocol(bids.BID_PROTOCOL)
KAD_PROTOCOL: Final = TProtocol("/llamanet/kad/1.0.0")
UPSTREAM_KAD_PROTOCOL: Final = "/ipfs/kad/1.0.0"

_KAD_MODULES: Final = (
    _kad_common,
    _kad_dht,
    _kad_peer_routing,
    _kad_value_store,
    _kad_provider_store,
)

# What a libp2p/trio operation on a stream or connection raises when the network,
# not our code, failed.  Mapped to TransportError subclasses at this boundary.
NETWORK_ERRORS: Final = (
    BaseLibp2pError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
    EOFError,
)

log = logging.getLogger(__name__)


def use_llamanet_kad_protocol() -> None:
    """Make every KadDHT in this process speak only ``/llamanet/kad/1.0.0``.

    Idempotent.  Raises ``RuntimeError`` if upstream no longer has the constant we
    rebind, so an upgrade cannot silently put our nodes back on the IPFS DHT.
    """
    for module in _KAD_MODULES:
        current = getattr(module, "PROTOCOL_ID", None)
        if current not in (UPSTREAM_KAD_PROTOCOL, KAD_PROTOCOL):
            raise RuntimeError(
                f"{module.__name__}.PROTOCOL_ID is {current!r}; the kad protocol "
                "workaround in llamanet/adapters/libp2p_host.py needs review"
            )
        module.PROTOCOL_ID = KAD_PROTOCOL  # type: ignore[attr-defined]


class _CleanEofFilter(logging.Filter):
    """Drops KadDHT's warning for a peer closing its stream normally."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.msg == "Failed to read DHT message from stream: %s"
            and isinstance(record.args, tuple)
            and len(record.args) == 1
            and isinstance(record.args[0], StreamEOF)
        )


_EOF_FILTER: Final = _CleanEofFilter()


def quiet_clean_eof_warnings() -> None:
    """Install :class:`_CleanEofFilter` on KadDHT's logger (idempotent)."""
    logger = logging.getLogger(_kad_dht.__name__)
    if _EOF_FILTER not in logger.filters:
        logger.addFilter(_EOF_FILTER)


def connection_config(budget: int | None = None, *, grace_period: float = 20.0) -> ConnectionConfig:
    """Connection settings for llamanet hosts (see the module docstring).

    ``budget``: above this many connections, upstream's pruner closes idle ones
    (no open streams, older than ``grace_period``) down to two thirds of it; a
    DHT walk leaves a connection to every peer it asked, so a swarm of thousands
    needs one.  Inbound connections are refused only at four times the budget.
    ``None`` keeps upstream's watermarks (prune above 300, down to 100).
    """
    watermarks: dict[str, Any] = {}
    if budget is not None:
        if budget < 3:
            raise ValueError("a connection budget below 3 leaves no room for a DHT walk")
        low = budget * 2 // 3
        watermarks = {
            "high_watermark": budget,
            "low_watermark": low,
            "min_connections": min(low, ConnectionConfig.min_connections),
            "max_connections": max(4 * budget, ConnectionConfig.max_connections),
        }
    return ConnectionConfig(
        **watermarks,
        grace_period=grace_period,
        max_connections_per_peer=1,
        dial_timeout=5.0,
        outbound_upgrade_timeout=5.0,
        inbound_upgrade_timeout=5.0,
        outbound_stream_protocol_negotiation_timeout=5.0,
        inbound_stream_protocol_negotiation_timeout=5.0,
    )


async def _no_auto_connect() -> None:
    return None


class LiveInboundCap:
    """Stands in for ``Swarm._inbound_limiter`` (see the module docstring): refuses
    an inbound connection while ``cap`` inbound connections are open, and holds no
    slot per connection, so a closed connection frees its place at once.  Upstream
    calls ``acquire_nowait`` before upgrading a connection and ``release`` when
    the swarm stops; only the first matters here."""

    def __init__(self, swarm: Any, cap: int) -> None:
        self._swarm = swarm
        self.total_tokens = cap

    def open_inbound(self) -> int:
        return sum(
            1
            for conns in self._swarm.connections.values()
            for conn in conns
            if not conn.is_closed and conn.direction == Direction.INBOUND
        )

    def acquire_nowait(self) -> None:
        if self.open_inbound() >= self.total_tokens:
            raise trio.WouldBlock

    def release(self) -> None:
        return None


def apply_host_workarounds(host: IHost) -> None:
    """What every llamanet host needs on top of py-libp2p's defaults, whatever its
    transport: no auto-connector, an inbound cap on open connections."""
    swarm: Any = host.get_network()
    swarm.auto_connector.maybe_connect = _no_auto_connect
    swarm._inbound_limiter = LiveInboundCap(swarm, int(swarm._inbound_limiter.total_tokens))


def interface_addresses() -> list[tuple[str, str]]:
    """``(family, address)`` of every configured interface address, loopback last."""
    found: list[tuple[str, str]] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                family, addr = "ip4", ip.ip
            else:
                family, addr = "ip6", ip.ip[0]
                if addr.startswith("fe80"):
                    continue  # link-local needs a zone, which multiaddrs cannot carry well
            found.append((family, addr))
    found.sort(key=lambda fa: ipaddress.ip_address(fa[1]).is_loopback)
    return found


def expand_unspecified(addrs: Sequence[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
    """Replace ``0.0.0.0`` / ``::`` listen addresses by one address per interface:
    peers cannot dial a wildcard, and libp2p would advertise it as it is."""
    out: list[multiaddr.Multiaddr] = []
    for addr in addrs:
        text = str(addr)
        for wildcard, family in (("/ip4/0.0.0.0/", "ip4"), ("/ip6/::/", "ip6")):
            if text.startswith(wildcard):
                rest = text[len(wildcard) :]
                out.extend(
                    multiaddr.Multiaddr(f"/{fam}/{ip}/{rest}")
                    for fam, ip in interface_addresses()
                    if fam == family
                )
                break
        else:
            out.append(addr)
    return list(dict.fromkeys(out))


def parse_multiaddrs(raw: Iterable[bytes]) -> list[multiaddr.Multiaddr]:
    """The addresses in ``raw`` that parse; a peer's bad address is its problem,
    not ours."""
    addrs = []
    for item in raw:
        with contextlib.suppress(ValueError, TypeError, multiaddr.exceptions.Error):
            addrs.append(multiaddr.Multiaddr(item))
    return addrs


def noise_only(key_pair: KeyPair) -> dict[TProtocol, ISecureTransport]:
    """The one security transport llamanet negotiates (see the module docstring)."""
    return {
        NOISE_PROTOCOL_ID: NoiseTransport(
            key_pair, noise_privkey=create_new_x25519_key_pair().private_key
        )
    }


def build_host(identity: Identity, listen: Sequence[multiaddr.Multiaddr]) -> IHost:
    """A TCP + Noise + Yamux host with ``identity``'s Ed25519 key.  Not yet
    listening: run it with ``host.run(listen)``."""
    use_llamanet_kad_protocol()
    quiet_clean_eof_warnings()
    key_pair = create_new_key_pair(identity.seed)
    host = new_host(
        key_pair=key_pair,
        sec_opt=noise_only(key_pair),
        listen_addrs=list(listen),
        connection_config=connection_config(),
        enable_mDNS=False,
        addrs_factory=expand_unspecified,
    )
    apply_host_workarounds(host)
    return host


def peer_of(stream: INetStream) -> bytes:
    """The remote peer's ID bytes for a stream."""
    return bytes(stream.muxed_conn.peer_id.to_bytes())


class Libp2pByteStream:
    """A libp2p stream seen as plain bytes, with libp2p's exceptions mapped.

    ``read`` returns ``b""`` at a clean end of stream and raises
    :class:`StreamBrokenError` when the stream was reset or the connection died.
    """

    __slots__ = ("_peer", "_stream", "closed")

    def __init__(self, stream: INetStream) -> None:
        self._stream = stream
        self._peer = stream.muxed_conn.peer_id
        self.closed = False

    @property
    def peer(self) -> bytes:
        return bytes(self._peer.to_bytes())

    async def read(self, max_bytes: int = 65536) -> bytes:
        try:
            return await self._stream.read(max_bytes)
        except EOFError:
            return b""
        except NETWORK_ERRORS as exc:
            raise StreamBrokenError(
                f"stream from {self._peer} broke: {type(exc).__name__}", peer_id=str(self._peer)
            ) from exc

    async def write(self, data: bytes) -> None:
        try:
            await self._stream.write(data)
        except NETWORK_ERRORS as exc:
            raise StreamBrokenError(
                f"stream to {self._peer} broke: {type(exc).__name__}", peer_id=str(self._peer)
            ) from exc

    async def close(self) -> None:
        """Graceful close; never raises (the peer may already be gone)."""
        if self.closed:
            return
        self.closed = True
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            try:
                await self._stream.close()
            except NETWORK_ERRORS:
                await self._reset_quietly()

    async def reset(self) -> None:
        """Abort the stream; never raises."""
        if self.closed:
            return
        self.closed = True
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await self._reset_quietly()

    async def _reset_quietly(self) -> None:
        try:
            await self._stream.reset()
        except NETWORK_ERRORS as exc:
            log.debug("reset of stream to %s failed: %r", self._peer, exc)


async def open_stream(host: IHost, peer_id: bytes, protocol: TProtocol) -> Libp2pByteStream:
    """Open a stream to ``peer_id`` (dialling it if needed), mapping failures to
    :class:`PeerUnreachableError`."""
    try:
        stream = await host.new_stream(ID(peer_id), [protocol])
    except NETWORK_ERRORS as exc:
        raise PeerUnreachableError(
            f"cannot open {protocol} to {ID(peer_id)}: {exc}", peer_id=str(ID(peer_id))
        ) from exc
    return Libp2pByteStream(stream)
