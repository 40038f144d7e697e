"""Who may talk to a private node: the allow-list, and members who show a
certificate the swarm's admin signed for their (Noise-proven) peer ID.

py-libp2p 0.8.1 has no hook to refuse a peer during the handshake, so a
connection is checked as soon as it is reported and closed if the peer is not
admitted, and every inbound stream handler (task, caps, bid, DHT) checks again,
waiting briefly for an exchange still in progress.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable

import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID

from llamanet.adapters.libp2p_host import NETWORK_ERRORS, Libp2pByteStream, open_stream
from llamanet.adapters.membership import (
    EXCHANGE_TIMEOUT,
    MEMBER,
    exchange_certificates,
    serve_certificate_exchange,
)
from llamanet.errors import (
    ConfigError,
    DecodeError,
    MembershipError,
    RemoteProtocolError,
    TransportError,
)
from llamanet.protocol.membership import check_certificate, decode_certificate
from llamanet.protocol.peer_ids import peer_id_from_text

from .config import NodeConfig

log = logging.getLogger(__name__)


class Admission:
    """A node's gate.  Open (everyone allowed) unless ``allow_peers`` or
    ``swarm_admin`` is configured.  ``forget`` is called for each refused peer (to
    take it out of the routing table)."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        peer_id: bytes,
        host: IHost,
        clock: Callable[[], float],
        forget: Callable[[bytes], None],
    ) -> None:
        self._config = config
        self._peer_id = peer_id
        self._host = host
        self._clock = clock
        self._forget = forget
        self._allow: frozenset[bytes] | None = (
            frozenset(peer_id_from_text(p) for p in config.allow_peers)
            if config.allow_peers
            else None
        )
        """A private swarm's members (``None``: open to anyone)."""
        self._admin = peer_id_from_text(config.swarm_admin) if config.swarm_admin else None
        self._certificate = self._load_certificate()
        self._members: dict[bytes, int] = {}
        """Peers admitted by certificate, and when their certificate expires."""
        self._admissions: dict[bytes, trio.Event] = {}
        self.refused_peers: Counter[bytes] = Counter()
        """Connections closed, by peer."""
        self.refused_certificates: Counter[str] = Counter()
        """Membership certificates refused, by reason."""
        if self._admin is not None:
            host.set_stream_handler(MEMBER, self._on_member_stream)

    @property
    def private(self) -> bool:
        return self._allow is not None or self._admin is not None

    def allowed(self, peer: bytes) -> bool:
        """Whether ``peer`` may talk to us: anyone, unless the swarm is private;
        then those on the allow-list and those who showed a valid certificate."""
        if not self.private or peer == self._peer_id:
            return True
        if self._allow is not None and peer in self._allow:
            return True
        return self._members.get(peer, 0) > self._clock()

    async def allowed_in_time(self, peer: bytes) -> bool:
        """:meth:`allowed`, once a certificate exchange in progress has finished:
        a member's first stream can arrive before the exchange its connection
        started is done (bounded by the exchange's timeout)."""
        if self.allowed(peer) or self._admin is None:
            return self.allowed(peer)
        event = self._admissions.setdefault(peer, trio.Event())
        with trio.move_on_after(EXCHANGE_TIMEOUT):
            await event.wait()
        return self.allowed(peer)

    async def admit_connection(self, peer: bytes) -> bool:
        """Check a new connection: allowed, or a member after the certificate
        exchange; otherwise it is refused (closed).  Whether it may stay."""
        if self.allowed(peer) or (self._admin is not None and await self._exchange(peer)):
            return True
        await self.refuse(peer)
        return False

    async def refuse(self, peer: bytes) -> None:
        """Close ``peer``'s connection: it is not a member of this private swarm."""
        self._admissions.pop(peer, None)
        self.refused_peers[peer] += 1
        self._forget(peer)
        log.info("closing the connection of %s: not a member of this private swarm", ID(peer))
        with contextlib.suppress(*NETWORK_ERRORS):
            await self._host.get_network().close_peer(ID(peer))

    # -- certificates ------------------------------------------------------------

    def _load_certificate(self) -> bytes:
        if self._admin is None:
            return b""
        path = self._config.certificate_path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            log.warning(
                "no membership certificate at %s: only allow-listed peers will talk to us "
                "(ask the swarm admin to run: llamanet certify %s)",
                path,
                ID(self._peer_id),
            )
            return b""
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            check_certificate(
                decode_certificate(data),
                admin=self._admin,
                swarm=self._config.swarm,
                peer=self._peer_id,
                now=self._clock(),
            )
        except (DecodeError, MembershipError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        return data

    def _check_member(self, peer: bytes, data: bytes) -> bool:
        assert self._admin is not None
        try:
            cert = decode_certificate(data)
            check_certificate(
                cert, admin=self._admin, swarm=self._config.swarm, peer=peer, now=self._clock()
            )
        except DecodeError:
            self.refused_certificates["malformed" if data else "missing"] += 1
            return False
        except MembershipError as exc:
            self.refused_certificates[exc.reason] += 1
            log.info("refused the membership certificate of %s: %s", ID(peer), exc)
            return False
        self._members[peer] = cert.exp
        self._admissions.setdefault(peer, trio.Event()).set()
        return True

    async def _exchange(self, peer: bytes) -> bool:
        """Exchange certificates with ``peer``; whether it may stay."""
        with trio.move_on_after(EXCHANGE_TIMEOUT):
            try:
                stream = await open_stream(self._host, peer, MEMBER)
                theirs = await exchange_certificates(stream, self._certificate)
            except (*NETWORK_ERRORS, TransportError, RemoteProtocolError) as exc:
                log.debug("no membership certificate from %s: %r", ID(peer), exc)
                if not self.allowed(peer):
                    self.refused_certificates["missing"] += 1
            else:
                self._check_member(peer, theirs)
        # It may also have shown one on its own stream meanwhile.
        return self.allowed(peer)

    async def _on_member_stream(self, stream: INetStream) -> None:
        await serve_certificate_exchange(
            Libp2pByteStream(stream), self._certificate, self._check_member
        )
