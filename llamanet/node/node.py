"""A running llamanet node: composes identity, host, DHT, worker and client.

::

    async with open_node(NodeConfig(home=...)) as node:
        records = await node.find("math.eval")
        answer = await node.ask("math.eval", "2*(3+4)")

One trio nursery owns everything the node starts; leaving the ``async with``
cancels it, closes pooled streams and shuts the libp2p host down.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import statistics
import time
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Concatenate, Final, ParamSpec

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.peer.id import ID

from llamanet.adapters.caps import CapsServer
from llamanet.adapters.dht import CapsValidator, DHTConfig, LlamanetDHT
from llamanet.adapters.libp2p_host import (
    BID_PROTOCOL,
    CAPS_PROTOCOL,
    TASK_PROTOCOL,
    Libp2pByteStream,
    build_host,
    open_stream,
    peer_of,
)
from llamanet.adapters.stream import ByteStream
from llamanet.adapters.task_client import EventCallback, StreamPool, TaskClient
from llamanet.adapters.task_server import DEFAULT_FIRST_FRAME_TIMEOUT, ServerLimits, TaskServer
from llamanet.backends.agents import AgentBackend
from llamanet.backends.base import Backend
from llamanet.backends.builtin import BuiltinBackend
from llamanet.backends.model_files import DigestCache
from llamanet.backends.selection import build_backends, close_backends
from llamanet.discovery.liveness import LivenessConfig, LivenessTable
from llamanet.discovery.registry import Registry
from llamanet.errors import (
    ConfigError,
    NoCandidatesError,
    NodeClosedError,
    RemoteProtocolError,
    RequestTimeoutError,
    TaskError,
    TaskFailedError,
    TaskRejectedError,
    TransportError,
    VerificationError,
)
from llamanet.orchestrator.attestation import (
    CANARY_SEED,
    CANARY_TOKENS,
    SpotCheck,
    canary_prompt,
    next_digest_to_check,
)
from llamanet.orchestrator.delegation import Delegation
from llamanet.orchestrator.market import TenderReport
from llamanet.orchestrator.selection import PeerObservations, rank_candidates
from llamanet.orchestrator.verification import (
    MODES,
    Vote,
    answer_key,
    diverse,
    network_of,
    normalized_text,
    quorum,
)
from llamanet.protocol.capabilities import validate_capability
from llamanet.protocol.config import RecordPolicy, SessionConfig
from llamanet.protocol.messages import Message, Receipt, TaskChunk, TaskOffer, TaskResult
from llamanet.protocol.peer_ids import peer_id_from_text, peer_id_to_text
from llamanet.protocol.records import (
    SignedRecord,
)
from llamanet.trust.keys import Identity, load_or_create_identity
from llamanet.trust.reputation import Outcome, ReputationStore

from .activity import Activity
from .admission import Admission
from .config import NodeConfig
from .contacts import FIND_LIMIT, FIND_TIMEOUT, Contacts
from .inspection import NodeStatus, PeerRow, node_status, peer_rows
from .lan import LanDiscovery
from .market import Market
from .perf import percentile
from .presence import Presence
from .publishing import Publisher
from .sessions import Conversations, SessionLimits, chat_messages
from .worker import Worker, WorkerLimits

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)


ChunkCallback = Callable[[Any], Awaitable[None]]
DIGEST_CACHE: Final = "model_digests.json"
REPUTATION_FILE: Final = "reputation.sqlite"
AGREE_WORDS: Final = frozenset({"yes", "true", "same", "agree", "equivalent"})
_REQUESTER_FAULTS: Final = frozenset({"bad_request", "too_large", "cancelled", "session_unknown"})
ATTEMPT_SHARE: Final = 0.5
"""Part of the time left that one attempt may use while other candidates wait."""
DEFAULT_HEDGE_DELAY: Final = 1.0
HEDGE_MIN_SAMPLES: Final = 5
RTT_SAMPLES: Final = 64
HostBuilder = Callable[[Identity, Sequence[multiaddr.Multiaddr]], IHost]
"""Makes the node's libp2p host (TCP + Noise + Yamux; simnet's fast mode swaps in
an in-memory transport)."""
SPOT_CHECKS_KEPT: Final = 32
# Failures caused by the task itself: another peer would fail the same way.
_NOT_RETRYABLE: Final = frozenset({"bad_request", "too_large", "cancelled", "depth_exceeded"})


@dataclass(frozen=True, slots=True)
class Answer:
    """What :meth:`Node.ask` returns: the output and who produced it, with proof."""

    output: Any
    peer: str
    capability: str
    usage: Mapping[str, float]
    model_digest: str
    receipt: Receipt
    elapsed_ms: float
    attempts: list[tuple[str, str]] = field(default_factory=list)
    """``(peer, error)`` for candidates that failed before this one answered."""
    verified_by: list[tuple[str, Receipt]] = field(default_factory=list)
    """With ``verify``: each agreeing peer and its signed receipt."""


class _ConnectionWatcher(INotifee):
    """Forwards new connections to the node; never blocks libp2p's event path."""

    def __init__(self, channel: trio.MemorySendChannel[bytes]) -> None:
        self._channel = channel

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        # A full channel drops the event: the maintenance loop's refresh catches up.
        with contextlib.suppress(
            trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError
        ):
            self._channel.send_nowait(bytes(conn.muxed_conn.peer_id.to_bytes()))

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        return None

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None


_AskArgs = ParamSpec("_AskArgs")


def _tracked(
    ask: Callable[Concatenate[Node, _AskArgs], Awaitable[Answer]],
) -> Callable[Concatenate[Node, _AskArgs], Awaitable[Answer]]:
    """Records each call of :meth:`Node.ask` in ``node.activity``: its attempts
    and verification copies hang under it, and it under whatever asked."""

    @functools.wraps(ask)
    async def tracked(node: Node, /, *args: _AskArgs.args, **kwargs: _AskArgs.kwargs) -> Answer:
        # Only the capability may come positionally (input is not recorded).
        capability = args[0] if args else kwargs.get("capability", "")
        parent, verify = kwargs.get("parent"), kwargs.get("verify", 1)
        notes = [
            f"verify {verify}" if isinstance(verify, int) and verify > 1 else "",
            "hedged" if kwargs.get("hedge") else "",
            f"session {kwargs['session']}" if kwargs.get("session") else "",
        ]
        with node.activity.track(
            "ask",
            str(capability),
            parent=parent.hex() if isinstance(parent, bytes) else None,
            peer=str(kwargs.get("peer") or ""),
            label=", ".join(n for n in notes if n),
        ) as entry:
            answer = await ask(node, *args, **kwargs)
            entry.peer = answer.peer
            return answer

    return tracked


class Node:
    """Use :func:`open_node`; a ``Node`` is only usable while that context is open."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        backends: Sequence[Backend] | None = None,
        clock: Callable[[], float] = time.time,
        host_builder: HostBuilder = build_host,
    ) -> None:
        self.config = config
        self.clock = clock
        self.identity: Identity = load_or_create_identity(config.home)
        self.policy = RecordPolicy(pow_difficulty=config.pow_difficulty)
        self.activity = Activity(clock=clock)
        """Tasks asked for and served here, running and recent (``/v1/tasks``)."""
        self.worker = Worker(
            backends if backends is not None else [BuiltinBackend(config.skills)],
            WorkerLimits(
                max_concurrency=config.max_concurrency,
                max_tasks_per_peer=config.max_tasks_per_peer,
                max_input_bytes=config.max_input_bytes,
                max_depth=config.max_depth,
                tasks_per_peer_per_s=config.tasks_per_peer_per_s,
            ),
            clock=clock,
            sessions=SessionLimits(
                max_sessions=config.session_max,
                max_messages=config.session_max_messages,
                max_bytes=config.session_max_bytes,
                idle_timeout=config.session_idle_timeout,
            ),
            delegator=lambda request: Delegation(self, request),
            activity=self.activity,
        )
        self.conversations = Conversations(clock=clock)
        self.reputation = ReputationStore(config.home / REPUTATION_FILE)
        """What this node has seen of each peer; kept across restarts."""
        self._rtt: defaultdict[bytes, deque[float]] = defaultdict(lambda: deque(maxlen=RTT_SAMPLES))
        """Round trips (ms) of recent tasks this node sent each peer."""
        self.registry = Registry()
        self.validator = CapsValidator(self.policy, clock)
        self.rejected_records: Counter[str] = self.validator.rejections
        try:
            self._listen = [multiaddr.Multiaddr(a) for a in config.listen]
        except Exception as exc:  # multiaddr raises assorted types for bad text
            raise ConfigError(f"invalid listen address: {exc}") from exc
        self.host = host_builder(self.identity, self._listen)
        self.admission = Admission(
            config,
            peer_id=self.peer_id,
            host=self.host,
            clock=clock,
            forget=self._forget_refused,
        )
        """Who may talk to us (a private swarm's gate)."""
        self.dht = LlamanetDHT(
            self.host,
            self.validator,
            swarm=config.swarm,
            admit=self.admission.allowed_in_time,
            config=DHTConfig(
                streams_per_peer_per_s=config.dht_streams_per_peer_per_s,
                max_streams_per_peer=config.dht_streams_per_peer,
                max_peers_per_subnet=config.dht_max_peers_per_subnet,
            ),
        )
        session = SessionConfig(max_frame_size=config.max_frame_size)
        self.pool = StreamPool(self._open_task_stream, session_config=session)
        self.client = TaskClient(self.pool, clock=clock)
        self.task_server = TaskServer(
            self.worker,
            self.identity,
            limits=ServerLimits(
                session=session,
                idle_timeout=config.stream_idle_timeout,
                # A new stream gets no longer than an idle one to send its task.
                first_frame_timeout=min(DEFAULT_FIRST_FRAME_TIMEOUT, config.stream_idle_timeout),
            ),
            clock=clock,
        )
        self.caps_server = CapsServer(
            self._current_envelope, rate=config.record_fetches_per_peer_per_s
        )
        self.host.set_stream_handler(TASK_PROTOCOL, self._on_task_stream)
        self.host.set_stream_handler(CAPS_PROTOCOL, self._on_caps_stream)
        self.market = Market(self)
        self.host.set_stream_handler(BID_PROTOCOL, self._on_bid_stream)
        self._inbound_streams: Counter[bytes] = Counter()
        self.liveness = LivenessTable(
            LivenessConfig(
                interval=config.liveness_interval,
                timeout=config.liveness_timeout,
                max_failures=config.liveness_max_failures,
            )
        )
        self.lan = LanDiscovery(self)
        """Peers met by mDNS (started by :meth:`run` when ``config.mdns``)."""
        self.presence = Presence(
            host=self.host,
            table=self.liveness,
            registry=self.registry,
            dht=self.dht,
            clock=clock,
            forget=self.lan.forget,
        )
        """Pings, departures and last sightings."""
        self.contacts = Contacts(
            config,
            peer_id=self.peer_id,
            host=self.host,
            dht=self.dht,
            registry=self.registry,
            policy=self.policy,
            rejected=self.rejected_records,
            admission=self.admission,
            presence=self.presence,
            clock=clock,
        )
        """Bootstrap, connections and verified records."""
        self._running = False
        self.started_at = 0.0
        self.tasks_sent: Counter[str] = Counter()
        self.api_url: str | None = None
        self.publisher = Publisher(
            config,
            identity=self.identity,
            policy=self.policy,
            worker=self.worker,
            dht=self.dht,
            clock=clock,
            transport_addrs=self._transport_addrs,
        )
        """Our signed record and the loop that republishes it."""
        self.spot_checks: deque[SpotCheck] = deque(maxlen=SPOT_CHECKS_KEPT)
        """The latest scheduled spot checks, oldest first."""

    # -- identity and record ----------------------------------------------------

    @property
    def peer_id(self) -> bytes:
        return self.identity.peer_id

    @property
    def peer_id_text(self) -> str:
        return self.identity.peer_id_text

    @property
    def record(self) -> SignedRecord:
        if self.publisher.record is None:
            raise NodeClosedError("the node has not published a record yet")
        return self.publisher.record

    def _current_envelope(self) -> bytes:
        return self.record.envelope

    def addrs(self) -> list[str]:
        """Dialable addresses, each ending in ``/p2p/<our id>``."""
        return [str(a) for a in self.host.get_addrs()]

    def _transport_addrs(self) -> list[multiaddr.Multiaddr]:
        out = []
        for addr in self.host.get_addrs():
            text = str(addr).rsplit("/p2p/", 1)[0]
            out.append(multiaddr.Multiaddr(text))
        return out

    async def publish(self) -> SignedRecord:
        """Sign a fresh record, store it in the DHT and announce our capabilities."""
        return await self.publisher.publish()

    # -- lifecycle -----------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; ``started`` once listening, bootstrapped and signed."""
        log.info("starting node %s", self.peer_id_text)
        await self.publisher.prepare()
        connections_send, connections_recv = trio.open_memory_channel[bytes](256)
        self.host.get_network().register_notifee(_ConnectionWatcher(connections_send))
        try:
            async with self.host.run(self._listen), trio.open_nursery() as nursery:
                await nursery.start(self.dht.run)
                self._running = True
                self.started_at = self.clock()
                self.publisher.sign_first()
                await self.bootstrap()
                nursery.start_soon(self.contacts.add_connected, connections_recv)
                nursery.start_soon(self.publisher.run)
                nursery.start_soon(self._maintenance_loop)
                nursery.start_soon(self.presence.run)
                nursery.start_soon(self.publisher.follow_performance)
                nursery.start_soon(self.publisher.follow_models)
                if self.config.warmup:
                    nursery.start_soon(self.publisher.warm_up)
                if self.config.spot_check_interval > 0:
                    nursery.start_soon(self._spot_check_loop)
                if self.config.mdns:
                    await self.lan.start(nursery)
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    self._running = False
                    await self._close_gracefully()
        finally:
            self._running = False

    async def aclose(self) -> None:
        """Close pooled streams and the libp2p host; bounded in time, idempotent.

        Must run *before* the node's nursery is cancelled: cancelling first also
        cancels py-libp2p's per-connection tasks in the middle of their own cleanup
        (``SwarmConn.close`` marks the connection closed, then is cancelled before
        closing the socket), which leaks every socket.
        """
        await self._close_gracefully()

    async def _close_gracefully(self) -> None:
        with trio.CancelScope(shield=True):
            with trio.move_on_after(1):
                await self.pool.close_all()
            with trio.move_on_after(3):
                await self.host.close()

    async def bootstrap(self) -> int:
        """Connect to the bootstrap peers and look ourselves up (see :class:`Contacts`)."""
        return await self.contacts.bootstrap()

    async def connect(self, addr: str, *, quiet: bool = False) -> bytes | None:
        """Dial a multiaddr with ``/p2p/<id>`` and add the peer to the DHT."""
        return await self.contacts.connect(addr, quiet=quiet)

    def _forget_refused(self, peer: bytes) -> None:
        self.dht.remove_peer(peer)

    def allowed(self, peer: bytes) -> bool:
        """Whether ``peer`` may talk to us (see :class:`Admission`)."""
        return self.admission.allowed(peer)

    async def _maintenance_loop(self) -> None:
        while True:
            await trio.sleep(self.config.refresh_interval)
            gone = self.registry.expire(self.clock())
            if gone:
                log.debug("%d records expired", len(gone))
            await self.pool.reap()
            if self.dht.routing_table_size() == 0 and self.contacts.bootstrap_peers:
                await self.bootstrap()
            else:
                await self.dht.refresh()

    # -- inbound streams -----------------------------------------------------------------

    async def _on_task_stream(self, stream: INetStream) -> None:
        peer = peer_of(stream)
        if not await self.admission.allowed_in_time(peer):
            await Libp2pByteStream(stream).reset()
            await self.admission.refuse(peer)
            return
        if self._inbound_streams[peer] >= self.config.max_streams_per_peer:
            log.info("too many task streams from %s; resetting", ID(peer))
            await Libp2pByteStream(stream).reset()
            return
        self._inbound_streams[peer] += 1
        try:
            await self.task_server.serve(Libp2pByteStream(stream))
        finally:
            self._inbound_streams[peer] -= 1
            if self._inbound_streams[peer] <= 0:
                del self._inbound_streams[peer]

    async def _on_caps_stream(self, stream: INetStream) -> None:
        if self.publisher.record is None or not await self.admission.allowed_in_time(
            peer_of(stream)
        ):
            await Libp2pByteStream(stream).reset()
            return
        await self.caps_server.serve(Libp2pByteStream(stream))

    async def _on_bid_stream(self, stream: INetStream) -> None:
        if not await self.admission.allowed_in_time(peer_of(stream)):
            await Libp2pByteStream(stream).reset()
            return
        await self.market.server.serve(Libp2pByteStream(stream))

    async def tender(
        self, capability: str, input: Any, **options: Any
    ) -> tuple[Answer, TenderReport]:
        """Market mode: see :meth:`Market.tender`."""
        return await self.market.tender(capability, input, **options)

    async def _open_task_stream(self, peer: bytes) -> ByteStream:
        return await open_stream(self.host, peer, TASK_PROTOCOL)

    # -- discovery -------------------------------------------------------------------------

    def accept_record(
        self, envelope: bytes, *, source: str, expected_peer: bytes | None = None
    ) -> SignedRecord:
        """Verify a record from any path and hold it; raises :class:`RecordError`."""
        return self.contacts.accept_record(envelope, source=source, expected_peer=expected_peer)

    async def fetch_record(self, peer: bytes, *, source: str = "direct") -> SignedRecord:
        """Ask ``peer`` directly for its record and verify it (see :class:`Contacts`)."""
        return await self.contacts.fetch_record(peer, source=source)

    async def lookup_record(self, peer: bytes) -> SignedRecord | None:
        """The peer's newest record from the DHT, verified and held."""
        return await self.contacts.lookup_record(peer)

    async def find(
        self, capability: str, *, limit: int = FIND_LIMIT, timeout: float = FIND_TIMEOUT
    ) -> list[SignedRecord]:
        """Verified records of peers offering ``capability`` (see :meth:`Contacts.find`)."""
        self._check_running()
        return await self.contacts.find(capability, limit=limit, timeout=timeout)

    def _known_providers(self, capability: str) -> list[SignedRecord]:
        return self.contacts.known_providers(capability)

    # -- tasks -------------------------------------------------------------------------------

    @_tracked
    async def ask(
        self,
        capability: str,
        input: Any,
        *,
        params: Mapping[str, Any] | None = None,
        stream: bool = False,
        timeout: float = 30.0,
        peer: str | None = None,
        on_chunk: ChunkCallback | None = None,
        session: str | None = None,
        model: Mapping[str, Any] | None = None,
        max_price: float | None = None,
        hedge: bool | float = False,
        exclude: Iterable[str] = (),
        parent: bytes | None = None,
        depth: int = 0,
        budget: Mapping[str, float] | None = None,
        task_id: bytes | None = None,
        verify: int = 1,
        compare: str = "exact",
    ) -> Answer:
        """Run ``capability`` on ``input`` somewhere in the swarm.

        Candidates are verified peers offering the capability, best first (see
        :func:`rank_candidates`); a candidate that rejects, fails or cannot be
        reached is skipped for the next one until the deadline; once every
        provider this node knew has failed, the DHT is asked for others; and
        :class:`NoCandidatesError` lists them all if none answers.  ``peer`` pins
        the task to one peer, whose error is raised as it is.  A passed deadline
        raises :class:`RequestTimeoutError`.  ``on_chunk`` receives streamed chunk
        data.

        ``model`` constrains the model (``name``, ``family``, ``digest``,
        ``min_ctx``); ``max_price`` caps the price per 1k tokens; ``verify = k``
        runs the task on k distinct peers (on distinct networks where possible) and
        returns the answer more than half of them agree on, compared by
        ``compare``: ``exact``, ``text`` (normalized, same model digest) or the name
        of a judge capability; ``exclude`` names
        peers not to ask.  ``parent``, ``depth`` and ``budget`` are set by a
        worker's :class:`Delegation` for sub-tasks.  An attempt that
        gets no answer in time gives way to the next candidate after half of the
        time left.  With ``hedge`` (``True``: after this node's p95 round trip to
        the first candidate; a number: after that many seconds) a second candidate
        is asked too, and the first to answer wins while the other is cancelled.

        With a ``session``, a chat input (``{"messages": [...]}``) holds only the new
        turn: this node keeps the conversation, sends follow-ups to the peer that
        holds its history, and sends the whole of it again to a peer that does not
        (failover, or a worker that answered ``session_unknown``).
        """
        self._check_running()
        validate_capability(capability)
        if verify > 1:
            return await self._verified(
                capability,
                input,
                k=verify,
                compare=compare,
                timeout=timeout,
                exclude=exclude,
                options={"params": params, "model": model, "stream": stream,
                         "on_chunk": on_chunk, "max_price": max_price},
            )  # fmt: skip
        started = trio.current_time()
        deadline = self.clock() + timeout
        excluded = [peer_id_from_text(p) for p in exclude]
        tried: set[bytes] = set()

        def ranked(records: list[SignedRecord]) -> list[bytes]:
            candidates = rank_candidates(
                records,
                capability,
                exclude=[*excluded, *tried],
                model=model,
                max_price=max_price,
                seen=self._observations(capability, (r.peer for r in records)),
                explore=self.config.explore,
            )
            return [c.record.peer for c in candidates]

        # ``searched``: no (more) providers to look for in the DHT, because it was
        # asked during this ask already, or the task is pinned to ``peer``.
        if peer is not None:
            searched, targets = True, [peer_id_from_text(peer)]
        else:
            records = self._known_providers(capability)
            searched = not records
            if searched:
                records = await self.find(capability, timeout=min(FIND_TIMEOUT, timeout / 2))
            targets = ranked(records)
        if not targets:
            raise NoCandidatesError(capability)
        conversation = None
        if session is not None and chat_messages(input) is not None:
            conversation = self.conversations.get(session)
            holder = conversation.peer
            # The peer holding the history goes first: it needs only the new turn.
            targets.sort(key=lambda t: t != holder)
        attempts: list[tuple[str, Exception]] = []

        async def run(
            target: bytes, until: float, on_event: EventCallback, *, full: bool = False
        ) -> TaskResult:
            task_input = input
            if conversation is not None:
                task_input = self.conversations.turn_input(conversation, input, target, full=full)
            offer = TaskOffer(
                id=task_id or os.urandom(16),
                cap=capability,
                input=task_input,
                deadline=int(until * 1000),
                params=dict(params or {}),
                model=dict(model) if model else None,
                stream=stream,
                session=session,
                parent=parent,
                depth=depth,
                budget=dict(budget) if budget else None,
            )
            sent = trio.current_time()
            try:
                result = await self._attempt(target, offer, on_event)
            except TaskFailedError as exc:
                if exc.code != "session_unknown" or full or conversation is None:
                    raise
                log.info("peer %s lost session %s; resending it whole", ID(target), session)
                return await run(target, until, on_event, full=True)
            self._rtt[target].append((trio.current_time() - sent) * 1000)
            self.reputation.record(target, capability, Outcome.SUCCESS, self.clock())
            return result

        async def forward(event: Message) -> None:
            if on_chunk is not None and isinstance(event, TaskChunk):
                await on_chunk(event.data)

        def failed(target: bytes, exc: Exception) -> None:
            """Count a failed attempt; raise it if no other peer may be tried."""
            self._judge(target, capability, exc)
            if isinstance(exc, TaskRejectedError | TaskFailedError):
                self.tasks_sent[f"{capability}:{exc.code}"] += 1
                if peer is not None or exc.code in _NOT_RETRYABLE:
                    raise exc
            elif isinstance(exc, RequestTimeoutError):
                self.tasks_sent[f"{capability}:timeout"] += 1
                if peer is not None:
                    raise exc
            else:
                self.tasks_sent[f"{capability}:unreachable"] += 1
                if peer is not None:
                    raise exc
            attempts.append((peer_id_to_text(target), exc))

        pending = list(targets)
        while self.clock() < deadline:
            if not pending:
                if searched:
                    break
                # Every provider this node knew has failed. The registry holds what
                # discovery happened to bring (a few per capability, thinning as
                # peers leave), not the swarm: ask the DHT for others first.
                searched = True
                left = deadline - self.clock()
                pending = ranked(await self.find(capability, timeout=min(FIND_TIMEOUT, left / 2)))
                continue
            target = pending.pop(0)
            tried.add(target)
            if hedge and pending:
                second = pending.pop(0)
                tried.add(second)
                won, errors = await self._hedged(
                    run, target, second, deadline, self._hedge_delay(target, hedge), forward
                )
                for loser, exc in errors:
                    failed(loser, exc)
                if won is None:
                    continue
                target, result = won
            else:
                # Leave time for the others: a peer that never answers costs at most
                # a share of what is left.
                now = self.clock()
                until = deadline if not pending else now + (deadline - now) * ATTEMPT_SHARE
                try:
                    result = await run(target, until, forward)
                except (TaskError, TransportError, RemoteProtocolError) as exc:
                    failed(target, exc)
                    continue
            self.tasks_sent[f"{capability}:ok"] += 1
            if conversation is not None:
                self.conversations.answered(conversation, input, target, result.output)
            return Answer(
                output=result.output,
                peer=peer_id_to_text(target),
                capability=capability,
                usage=result.usage,
                model_digest=result.model_digest,
                receipt=result.receipt,
                elapsed_ms=(trio.current_time() - started) * 1000,
                attempts=[(p, str(e)) for p, e in attempts],
            )
        if self.clock() >= deadline:
            raise RequestTimeoutError(
                f"deadline passed after {len(attempts)} failed attempts: "
                + "; ".join(f"{p[:16]}…: {e}" for p, e in attempts)
            )
        raise NoCandidatesError(capability, "every candidate failed", attempts)

    async def _attempt(
        self, target: bytes, offer: TaskOffer, on_event: EventCallback
    ) -> TaskResult:
        """One try of a task on one peer, recorded under the ask it belongs to."""
        with self.activity.track(
            "attempt", offer.cap, peer=peer_id_to_text(target), id=offer.id.hex()
        ):
            result = await self.client.run(target, offer, on_event=on_event)
        self.presence.seen(target)
        return result

    def liveness_of(self, peer: bytes) -> str:
        """``alive``, ``suspect``, ``gone`` or ``unwatched`` (see :class:`Presence`)."""
        return self.presence.state_of(peer)

    def swarm_capabilities(self) -> list[str]:
        """Every capability in the verified records this node holds."""
        now = self.clock()
        caps = {
            cap
            for entry in self.registry.entries(now=now)
            if entry.record.peer != self.peer_id
            for cap in entry.record.record.caps
        }
        return sorted(caps)

    def running_tasks(self) -> list[dict[str, Any]]:
        """Tasks running here: who asked, their parent task and their sub-tasks."""
        return [
            {
                "id": request.id.hex(),
                "capability": request.capability,
                "requester": request.requester,
                "parent": request.parent.hex() if request.parent else None,
                "depth": request.depth,
                "subtasks": request.delegate.tree() if request.delegate else [],
            }
            for request in self.worker.running.values()
        ]

    def price_of(self, peer: str) -> float:
        """The price per 1k tokens ``peer`` advertises (0 if not known)."""
        record = self.registry.get(peer_id_from_text(peer), now=self.clock())
        return record.record.price if record is not None else 0.0

    def _observations(
        self, capability: str | None = None, peers: Iterable[bytes] = ()
    ) -> PeerObservations:
        reputation = self.reputation.scores(peers, capability, self.clock()) if capability else {}
        return PeerObservations(
            rtt_ms={p: statistics.median(s) for p, s in self._rtt.items() if s},
            reputation=reputation,
        )

    async def _verified(
        self,
        capability: str,
        input: Any,
        *,
        k: int,
        compare: str,
        timeout: float,
        exclude: Iterable[str],
        options: dict[str, Any],
    ) -> Answer:
        if compare not in MODES:
            validate_capability(compare)  # otherwise it names a judge
        deadline = self.clock() + timeout
        skip = {peer_id_from_text(p) for p in exclude}
        records = [r for r in self._known_providers(capability) if r.peer not in skip]
        if len(records) < k:
            # Knowing some providers is not knowing enough of them to verify with.
            found = {r.peer: r for r in records}
            found.update((r.peer, r) for r in await self.find(capability) if r.peer not in skip)
            records = list(found.values())
        # Exploration here too: verifiers that are always the top k would never
        # check anyone else, and would be predictable to whoever wants to collude.
        ranked = rank_candidates(
            records,
            capability,
            seen=self._observations(capability, (r.peer for r in records)),
            explore=self.config.explore,
        )
        order = [c.record.peer for c in ranked]
        if len(order) < k:
            raise NoCandidatesError(
                capability, f"verification needs {k} distinct peers; {len(order)} offer it"
            )
        networks = {r.peer: network_of(r.record.addrs) for r in records}
        targets = diverse(order, networks, k)
        spare = [p for p in order if p not in targets]
        answers: dict[bytes, Answer] = {}

        async def one(target: bytes) -> None:
            current: bytes | None = target
            while current is not None and self.clock() < deadline:
                try:
                    answers[current] = await self.ask(
                        capability,
                        input,
                        peer=peer_id_to_text(current),
                        timeout=deadline - self.clock(),
                        **options,
                    )
                    return
                except (TaskError, TransportError, RemoteProtocolError):
                    current = spare.pop(0) if spare else None

        async with trio.open_nursery() as nursery:
            for target in targets:
                nursery.start_soon(one, target)
        keys = await self._answer_keys(capability, input, answers, compare)
        outcome = quorum([Vote(peer_id_to_text(p), key) for p, key in keys.items()])
        if outcome is None:
            raise VerificationError(
                f"{capability}: no answer had a majority of {len(answers)} "
                f"(of {k} asked, {len(set(keys.values()))} different)"
            )
        _, agree, disagree = outcome
        now = self.clock()
        for text in agree:
            self.reputation.record(peer_id_from_text(text), capability, Outcome.AGREED, now)
        for text in disagree:
            log.info("peer %s disagreed with the quorum on %s", text, capability)
            self.reputation.record(peer_id_from_text(text), capability, Outcome.DISAGREED, now)
        winner = answers[peer_id_from_text(agree[0])]
        proofs = [(p, answers[peer_id_from_text(p)].receipt) for p in agree]
        return replace(winner, verified_by=proofs)

    async def spot_check(self, digest: str, *, round_number: int = 0) -> SpotCheck:
        """Send the same seeded canary prompt to every peer claiming model
        ``digest``; flag (and mark down) those whose answer is not the majority's.
        See :mod:`llamanet.orchestrator.attestation` for what this can show."""
        self._check_running()
        claimants = sorted({peer for peer, claimed in self._model_claims() if claimed == digest})
        check = SpotCheck(digest=digest, prompt=canary_prompt(digest, round_number))
        params = {"max_tokens": CANARY_TOKENS, "seed": CANARY_SEED, "temperature": 0}

        async def ask_one(peer: bytes) -> None:
            try:
                answer = await self.ask(
                    "llm.generate",
                    {"prompt": check.prompt},
                    params=params,
                    model={"digest": digest},
                    peer=peer_id_to_text(peer),
                    timeout=60,
                )
            except (TaskError, TransportError, RemoteProtocolError) as exc:
                log.info("spot check: %s did not answer: %s", ID(peer), exc)
                return
            check.answers[peer_id_to_text(peer)] = normalized_text(answer.output)

        async with trio.open_nursery() as nursery:
            for peer in claimants:
                nursery.start_soon(ask_one, peer)
        outcome = quorum([Vote(p, a) for p, a in check.answers.items()])
        if outcome is None:
            return check  # too few answers, or no majority: nothing to conclude
        check.majority, check.agreeing, check.flagged = outcome
        for text in check.flagged:
            log.warning("spot check: %s does not answer like model %s", text, digest)
            self.reputation.record(
                peer_id_from_text(text), "llm.generate", Outcome.DISAGREED, self.clock()
            )
        return check

    def _model_claims(self) -> list[tuple[bytes, str]]:
        return [
            (entry.record.peer, model.digest)
            for entry in self.registry.entries(now=self.clock())
            if entry.record.peer != self.peer_id
            and self.allowed(entry.record.peer)
            and "llm.generate" in entry.record.record.caps
            for model in entry.record.record.models
            if model.digest
        ]

    async def _spot_check_loop(self) -> None:
        # One digest per interval, the one checked longest ago, so the cost stays
        # one short generation per claimant per interval however many models there
        # are; jittered so that a swarm's checkers do not fire together.
        last_checked: dict[str, float] = {}
        round_number = 0
        while True:
            interval = self.config.spot_check_interval
            await trio.sleep(interval * random.uniform(0.75, 1.25))
            digest = next_digest_to_check(self._model_claims(), last_checked)
            if digest is None:
                continue
            last_checked[digest] = trio.current_time()
            round_number += 1
            check = await self.spot_check(digest, round_number=round_number)
            self.spot_checks.append(check)
            log.info(
                "spot check of %s: %d answers, %d flagged",
                digest,
                len(check.answers),
                len(check.flagged),
            )

    async def _answer_keys(
        self, capability: str, input: Any, answers: Mapping[bytes, Answer], compare: str
    ) -> dict[bytes, str]:
        if compare in MODES:
            return {p: answer_key(a.output, compare, a.model_digest) for p, a in answers.items()}
        # A judge capability: each answer joins the first group the judge says it
        # agrees with, else starts its own.
        groups: list[tuple[str, Any]] = []
        keys: dict[bytes, str] = {}
        for peer, answer in answers.items():
            for label, representative in groups:
                verdict = await self.ask(
                    compare, {"task": input, "a": representative, "b": answer.output}
                )
                if verdict.output is True or str(verdict.output).strip().lower() in AGREE_WORDS:
                    keys[peer] = label
                    break
            else:
                label = f"group{len(groups)}"
                groups.append((label, answer.output))
                keys[peer] = label
        return keys

    def _judge(self, peer: bytes, capability: str, exc: Exception) -> None:
        """What a failed attempt says about the peer (a refusal says nothing; a
        task the requester got wrong is not the worker's fault)."""
        if isinstance(exc, TaskRejectedError):
            return
        if isinstance(exc, TaskFailedError) and exc.code in _REQUESTER_FAULTS:
            return
        outcome = Outcome.TIMEOUT if isinstance(exc, RequestTimeoutError) else Outcome.FAILURE
        self.reputation.record(peer, capability, outcome, self.clock())

    def _hedge_delay(self, target: bytes, hedge: bool | float) -> float:
        """Seconds after which a second request goes out: ``hedge`` if a number,
        else the p95 of this node's recent round trips to ``target``."""
        if not isinstance(hedge, bool):
            return float(hedge)
        samples = self._rtt.get(target)
        if not samples or len(samples) < HEDGE_MIN_SAMPLES:
            return DEFAULT_HEDGE_DELAY
        return percentile(samples, 95) / 1000

    async def _hedged(
        self,
        run: Callable[[bytes, float, EventCallback], Awaitable[TaskResult]],
        first: bytes,
        second: bytes,
        deadline: float,
        delay: float,
        forward: EventCallback,
    ) -> tuple[tuple[bytes, TaskResult] | None, list[tuple[bytes, Exception]]]:
        """``first`` now and ``second`` after ``delay`` (at once if ``first`` fails);
        the first to answer wins and the other is cancelled.  An attempt answers
        with its first streamed chunk, so only one ever streams to the caller."""
        won: list[tuple[bytes, TaskResult]] = []
        errors: list[tuple[bytes, Exception]] = []
        first_failed = trio.Event()
        claimed: list[bytes] = []

        async def attempt(target: bytes, wait: float, scope: trio.CancelScope) -> None:
            if wait:
                with trio.move_on_after(wait):
                    await first_failed.wait()

            async def on_event(event: Message) -> None:
                if isinstance(event, TaskChunk):
                    if not claimed:
                        claimed.append(target)
                        log.info("hedged task: %s answered first", ID(target))
                        scope.cancel()  # the other attempt
                    if claimed[0] == target:
                        await forward(event)

            try:
                result = await run(target, deadline, on_event)
            except (TaskError, TransportError, RemoteProtocolError) as exc:
                errors.append((target, exc))
                if target == first:
                    first_failed.set()
                return
            if not won and (not claimed or claimed[0] == target):
                won.append((target, result))
                nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            first_scope, second_scope = trio.CancelScope(), trio.CancelScope()

            async def guarded(target: bytes, wait: float, own: trio.CancelScope,
                              other: trio.CancelScope) -> None:  # fmt: skip
                with own:
                    await attempt(target, wait, other)

            nursery.start_soon(guarded, first, 0.0, first_scope, second_scope)
            nursery.start_soon(guarded, second, delay, second_scope, first_scope)
        return (won[0] if won else None), errors

    def _check_running(self) -> None:
        if not self._running:
            raise NodeClosedError("the node is not running")

    # -- inspection ---------------------------------------------------------------------------

    def status(self) -> NodeStatus:
        """What this node is and does now (see :class:`NodeStatus`)."""
        return node_status(self)

    def peers(self) -> list[PeerRow]:
        """Every peer this node knows of, connected ones first."""
        return peer_rows(self)


@asynccontextmanager
async def open_node(
    config: NodeConfig,
    *,
    backends: Sequence[Backend] | None = None,
    clock: Callable[[], float] = time.time,
    host_builder: HostBuilder = build_host,
) -> AsyncIterator[Node]:
    """Start a node and yield it once it is listening, bootstrapped and signed."""
    opened = backends is None
    if backends is None:
        backends = await build_backends(
            config.backends, config.skills, digest_cache=DigestCache(config.home / DIGEST_CACHE)
        )
        if config.agents:
            backends = [AgentBackend(config.agents, backends), *backends]
    try:
        node = Node(config, backends=backends, clock=clock, host_builder=host_builder)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            try:
                yield node
            finally:
                await node.aclose()
                nursery.cancel_scope.cancel()
        node.reputation.close()
    finally:
        if opened:
            with trio.CancelScope(shield=True):
                await close_backends(backends)
