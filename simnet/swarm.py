"""Run a share of a scenario's nodes in this trio run: real ``llamanet`` nodes
with simulated agents, their churn, and (in the share that holds the requesters)
the workload and the measurements.  The same code runs in every mode; only the
host underneath (TCP on loopback or in a namespace, or the in-memory transport)
and the clock (wall or virtual) differ.

Events go to ``emit`` as plain dicts: ``{"type": "task", ...}`` and so on, in
the shapes of :mod:`simnet.events`, with times relative to the workload's start.
"""

from __future__ import annotations

import hashlib
import logging
import random
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

from llamanet.adapters.dht_stats import tracing
from llamanet.adapters.libp2p_host import NETWORK_ERRORS, build_host
from llamanet.adapters.task_traffic import counting_traffic
from llamanet.api.server import serve_api
from llamanet.errors import LlamanetError
from llamanet.node.config import NodeConfig
from llamanet.node.contacts import FIND_LIMIT
from llamanet.node.node import HostBuilder, Node, open_node
from llamanet.node.pow_cache import cached_pow, save_pow
from llamanet.protocol.budget import credits_for, tokens_used
from llamanet.protocol.config import TEST_POW_DIFFICULTY
from llamanet.protocol.peer_ids import peer_id_from_text
from llamanet.protocol.pow import solve_pow
from llamanet.trust.keys import Identity, load_or_create_identity

from .agents import SimulatedAgent, is_correct, make_question
from .attacks import flood, forge
from .events import ChurnEvent, DiscoveryEvent, LookupEvent, ReputationSample, TaskEvent
from .scenario import (
    TASK_BEHAVIOURS,
    Placement,
    Scenario,
    arrivals,
    bootstrap_indices,
    bootstraps_of,
    capabilities_for,
    churn_schedule,
    node_seed,
    phases,
    placements,
)

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]

DISCOVERY_POLL = 2.0
DISCOVERY_PROBE_LIMIT = 3
"""Providers a discovery probe asks for.  "Can find" needs one verified provider;
asking for Node.find's default 20 would have every node fetch (and then watch
for liveness) twenty records per capability, which at a thousand nodes is most
of the swarm's traffic and none of what the probe measures.  A requester's probe
asks for as many as ``Node.find`` does by default: what it finds is what its
tasks go to, as a node that asks for a capability it knows nobody for finds that
many itself."""
SAMPLE_INTERVAL = 2.0
LOOKUP_INTERVAL = 1.0
LOOKUPS_PER_ROUND = 4
LOOKUP_TIMEOUT = 10.0
"""A lookup still running after this counts as failed (and the run can end)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Share:
    """What one process (or, in fast mode, the one trio run) is responsible for."""

    indices: tuple[int, ...]
    listen: Mapping[int, str]
    """Node index -> listen multiaddr (without ``/p2p``)."""
    bootstrap: Mapping[int, str]
    """Bootstrap node index -> its full multiaddr (with ``/p2p/<id>``)."""
    base: Path
    mdns: bool = False
    api: bool = False
    """Serve each node's local API (``llamanet --home <node home> ...`` works)."""
    workload: bool = True
    """Run the scenario's workload in the requesters' share (``up`` does not)."""


def peer_text(seed: int, index: int) -> str:
    return Identity(node_seed(seed, index)).peer_id_text


def _prepare_home(home: Path, seed: bytes) -> None:
    """The node's identity from the run's seed, and its proof of work solved here:
    the node would solve it in a thread, whose finishing time is not the simulated
    clock's (fast mode jumps while it waits)."""
    identity = load_or_create_identity(home, new=lambda: Identity(seed))
    if cached_pow(home, identity, TEST_POW_DIFFICULTY) is None:
        nonce = solve_pow(identity.peer_id, TEST_POW_DIFFICULTY)
        assert nonce is not None
        save_pow(home, identity, TEST_POW_DIFFICULTY, nonce)


def node_config(scenario: Scenario, share: Share, place: Placement) -> NodeConfig:
    home = share.base / f"n{place.index}"
    _prepare_home(home, node_seed(scenario.seed, place.index))
    price = scenario.profiles[place.group.profile].price if place.group else 0.0
    return NodeConfig(
        home=home,
        listen=(share.listen[place.index],),
        # (lan mode has none: mDNS finds the peers.)
        bootstrap=tuple(
            share.bootstrap[i] for i in bootstraps_of(scenario, place.index) if i in share.bootstrap
        ),
        bootstrap_file=share.base / "no-bootstrap.toml",
        mdns=share.mdns,
        backends=("builtin",),
        skills=(),
        pow_difficulty=TEST_POW_DIFFICULTY,
        explore=scenario.workload.explore,
        warmup=False,
        spot_check_interval=0.0,
        price=price,
        refresh_interval=scenario.node.refresh_interval,
        liveness_interval=scenario.node.liveness_interval,
        log_level="warning",
    )


@dataclass
class _Live:
    nodes: dict[int, Node] = field(default_factory=dict)
    stops: dict[int, trio.CancelScope] = field(default_factory=dict)


async def run_share(
    scenario: Scenario,
    share: Share,
    emit: Emit,
    *,
    t0: float,
    host_builder: HostBuilder | None = None,
    clock: Callable[[], float] = time.time,
) -> None:
    """Run this share's nodes until the workload ends (the requesters' share) or
    until cancelled.  ``t0`` is when the workload starts, on ``trio.current_time()``'s
    clock (nodes start before it, discovery converges, then work arrives)."""
    began = trio.current_time()
    places = {p.index: p for p in placements(scenario)}
    live = _Live()
    groups = {p.index: p.group for p in places.values()}
    liars = {
        peer_text(scenario.seed, i)
        for i, g in groups.items()
        if g and g.behaviour in TASK_BEHAVIOURS
    }
    honest = [
        peer_text(scenario.seed, i) for i, g in groups.items() if g and g.behaviour == "honest"
    ]
    wanted = capabilities_wanted(scenario)

    async def attack(node: Node, index: int, behaviour: str) -> None:
        await trio.sleep_until(t0)
        if behaviour == "forge" and honest:
            await forge(node, honest, emit, t0, seed=scenario.seed)
        elif behaviour == "flood" and wanted:
            await flood(node, wanted[index % len(wanted)], emit, t0, seed=scenario.seed)

    async def node_life(index: int, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        place = places[index]
        config = node_config(scenario, share, place)
        backends = []
        if place.group is not None:
            profile = scenario.profiles[place.group.profile]
            backends = [
                SimulatedAgent(seed=scenario.seed, index=index, group=place.group, profile=profile)
            ]
        with trio.CancelScope() as scope:
            live.stops[index] = scope
            async with (
                open_node(
                    config,
                    backends=backends or None,
                    host_builder=host_builder or build_host,
                    clock=clock,
                ) as node,
                trio.open_nursery() as services,
            ):
                if share.api:
                    await services.start(serve_api, node)
                if place.group is not None and place.group.behaviour in ("forge", "flood"):
                    services.start_soon(attack, node, index, place.group.behaviour)
                live.nodes[index] = node
                emit({"type": "node_up", "index": index})
                limit = DISCOVERY_PROBE_LIMIT if place.group is not None else FIND_LIMIT
                services.start_soon(
                    _discovery_probe, scenario, node, emit, began, trio.current_time(), limit
                )
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    live.nodes.pop(index, None)
                    services.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        # The bootstrap nodes (the first group nodes) first, in order: the others
        # dial them.
        first = [i for i in bootstrap_indices(scenario) if i in share.indices]
        for index in first:
            await nursery.start(node_life, index)
        emit({"type": "bootstrap_ready", "indices": first})
        async with trio.open_nursery() as starting:
            for index in share.indices:
                if index not in first:
                    if scenario.ramp:
                        await trio.sleep_until(began + scenario.ramp * index / scenario.nodes)
                    starting.start_soon(nursery.start, node_life, index)
        emit({"type": "ready", "indices": list(share.indices)})
        nursery.start_soon(_churn, scenario, share, live, nursery, node_life, emit, t0)
        if not share.workload:
            return
        # Every process times lookups from its own nodes, so that in real mode the
        # origins are the swarm's and not only the requesters' process.
        end = t0 + scenario.duration * len(phases(scenario))
        if 0 not in share.indices:
            await _lookups(scenario, share, live.nodes, emit, t0, end)
            emit({"type": "rss", "mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
            # The runner waits for this from every process before it stops them.
            emit({"type": "lookups_done"})
            return
        requesters = [live.nodes[p.index] for p in places.values() if p.group is None]
        async with trio.open_nursery() as measuring:
            measuring.start_soon(_lookups, scenario, share, live.nodes, emit, t0, end)
            await _workload(scenario, requesters, groups, liars, emit, t0)
        for index, node in live.nodes.items():
            group = groups.get(index)
            if group is None or group.behaviour == "honest":
                emit({"type": "rejected_records", "counts": dict(node.rejected_records)})
        emit({"type": "rss", "mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
        emit({"type": "done"})
        nursery.cancel_scope.cancel()


def capabilities_wanted(scenario: Scenario) -> list[str]:
    """Every capability the workload will ask for."""
    wanted: set[str] = set()
    for capability in scenario.workload.mix:
        if capability == "sim.composite":
            wanted |= set(capabilities_for(scenario.workload.strategy))
        else:
            wanted.add(capability)
    return sorted(wanted)


async def _discovery_probe(
    scenario: Scenario,
    node: Node,
    emit: Emit,
    began: float,
    joined: float,
    limit: int,
) -> None:
    """Record when ``node`` can first find each capability the workload needs
    (asking for ``limit`` providers), counted from when the nodes began to start
    and from when it joined."""
    for capability in capabilities_wanted(scenario):
        while True:
            try:
                found = await node.find(capability, limit=limit)
            except LlamanetError:
                found = []
            if found:
                now = trio.current_time()
                event = DiscoveryEvent(
                    node=node.peer_id_text,
                    capability=capability,
                    at=now - began,
                    after_join=now - joined,
                )
                emit({"type": "discovery", **asdict(event)})
                break
            await trio.sleep(DISCOVERY_POLL)


async def _churn(
    scenario: Scenario,
    share: Share,
    live: _Live,
    nursery: trio.Nursery,
    node_life: Any,
    emit: Emit,
    t0: float,
) -> None:
    for step in churn_schedule(scenario):
        if step.index not in share.indices:
            continue
        await trio.sleep_until(t0 + step.at)
        if step.kind == "join":
            nursery.start_soon(node_life, step.index)
        else:
            # Both cancel the node's life; a leave closes its connections first
            # (open_node's goodbye), a crash does not get to.
            node = live.nodes.get(step.index)
            if node is not None and step.kind == "leave":
                await node.aclose()
            scope = live.stops.get(step.index)
            if scope is not None:
                scope.cancel()
        event = ChurnEvent(at=step.at, node=peer_text(scenario.seed, step.index), kind=step.kind)
        emit({"type": "churn", **asdict(event)})


async def _workload(
    scenario: Scenario,
    requesters: Sequence[Node],
    groups: Mapping[int, Any],
    liars: set[str],
    emit: Emit,
    t0: float,
) -> None:
    await trio.sleep_until(t0)
    # Discovery has had ``settle`` seconds; give the requesters a little longer
    # to know enough providers of everything they will ask for (as many as a
    # verified task asks; bounded), so the first tasks measure the protocol's work
    # and not a cold start.
    wanted = capabilities_wanted(scenario)
    enough = scenario.workload.verify

    def ready() -> bool:
        return all(
            len(r.registry.find(c, now=r.clock())) >= enough for r in requesters for c in wanted
        )

    with trio.move_on_after(scenario.settle):
        # The registry is filled by other tasks and signals nobody: poll it.
        while not ready():  # noqa: ASYNC110
            await trio.sleep(0.2)
    begin = max(t0, trio.current_time())
    group_of = {peer_text(scenario.seed, i): g.name for i, g in groups.items() if g}
    strategies = phases(scenario)
    end = begin + scenario.duration * len(strategies)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_samples, scenario, requesters, groups, liars, emit, t0, end)
        for phase, strategy in enumerate(strategies):
            # Each phase replays the same arrivals and questions.
            start = begin + phase * scenario.duration
            for number, arrival in enumerate(arrivals(scenario)):
                await trio.sleep_until(start + arrival.at)
                requester = requesters[number % len(requesters)]
                nursery.start_soon(
                    _one_task,
                    scenario,
                    strategy,
                    requester,
                    number,
                    arrival.capability,
                    group_of,
                    emit,
                    t0,
                )


async def _one_task(
    scenario: Scenario,
    strategy: str,
    requester: Node,
    number: int,
    capability: str,
    group_of: Mapping[str, str],
    emit: Emit,
    t0: float,
) -> None:
    w = scenario.workload
    question = make_question(scenario.seed, number, capability)
    started = trio.current_time()
    kind = strategy if capability == "sim.composite" else "task"
    fields: dict[str, Any] = {"capability": capability, "verify": w.verify, "kind": kind}
    try:
        with trio.fail_after(w.timeout), tracing() as lookups, counting_traffic() as traffic:
            found_at = trio.current_time()
            composite = capability == "sim.composite"
            for needed in capabilities_for(strategy) if composite else (capability,):
                # As ask() does: the DHT only when no provider is known yet.
                if not requester.registry.find(needed, now=requester.clock()):
                    await requester.find(needed)
            discovery = trio.current_time() - found_at
            output, peer, exec_s, cost = await _solve(requester, question, capability, strategy, w)
        elapsed = trio.current_time() - started
        fields |= {
            "ok": True,
            "correct": is_correct(question, output),
            "peer": peer,
            "group": group_of.get(peer or ""),
            "cost": cost,
            # Task frames both ways, and DHT RPCs as a request and a response each.
            "messages": traffic.frames + 2 * lookups.queries,
            "bytes": traffic.bytes,
            "phases": {
                "discovery": discovery,
                "execution": exec_s,
                "transfer": max(0.0, elapsed - discovery - exec_s),
            },
        }
    except (LlamanetError, trio.TooSlowError) as exc:
        log.warning("task %d failed: %r", number, exc)
        fields |= {"ok": False, "error": getattr(exc, "code", None) or type(exc).__name__}
    event = TaskEvent(submitted=started - t0, finished=trio.current_time() - t0, **fields)
    emit({"type": "task", **asdict(event)})


async def _solve(
    requester: Node, question: dict[str, Any], capability: str, strategy: str, w: Any
) -> tuple[Any, str | None, float, float]:
    """Ask the swarm; (output, who answered, agent seconds, credits)."""
    if capability != "sim.composite" or strategy in ("direct", "monolith"):
        answer = await requester.ask(
            capability,
            question,
            verify=w.verify,
            timeout=w.timeout,
            task_id=_task_id(question, capability),
        )
        return answer.output, answer.peer, _exec_s(answer.usage), _cost(requester, answer)
    parts = question["parts"]
    outputs: list[Any] = [None] * len(parts)
    spent = [0.0, 0.0]
    if strategy == "decompose":

        async def part(i: int) -> None:
            answer = await requester.ask(
                f"sim.{parts[i]['domain']}",
                parts[i],
                timeout=w.timeout,
                task_id=_task_id(question, f"part{i}"),
            )
            outputs[i] = answer.output
            spent[0] = max(spent[0], _exec_s(answer.usage))  # in parallel
            spent[1] += _cost(requester, answer)

        async with trio.open_nursery() as nursery:
            for i in range(len(parts)):
                nursery.start_soon(part, i)
        return outputs, None, spent[0], spent[1]
    # relay: each part in turn through one fixed peer serving sim.relay.
    relay: str | None = None
    for i, p in enumerate(parts):
        answer = await requester.ask(
            "sim.relay", p, peer=relay, timeout=w.timeout, task_id=_task_id(question, f"relay{i}")
        )
        relay = relay or answer.peer
        outputs[i] = answer.output
        spent[0] += _exec_s(answer.usage)
        spent[1] += _cost(requester, answer)
    return outputs, relay, spent[0], spent[1]


def _task_id(question: dict[str, Any], what: str) -> bytes:
    # From the question, not os.urandom: the same seed sends the same bytes.
    return hashlib.sha256(f"{question['id']}:{question['domain']}:{what}".encode()).digest()[:16]


def _exec_s(usage: Mapping[str, float]) -> float:
    return float(usage.get("exec_ms", 0.0)) / 1000


def _cost(requester: Node, answer: Any) -> float:
    return credits_for(tokens_used(answer.usage), requester.price_of(answer.peer))


async def _samples(
    scenario: Scenario,
    requesters: Sequence[Node],
    groups: Mapping[int, Any],
    liars: set[str],
    emit: Emit,
    t0: float,
    end: float,
) -> None:
    """Reputation as the requesters see it, every ``SAMPLE_INTERVAL``, until ``end``."""
    peers = [(peer_text(scenario.seed, i), g) for i, g in groups.items() if g]
    while trio.current_time() < end:
        now = trio.current_time()
        for requester in requesters:
            wall = requester.clock()
            for text, group in peers:
                peer = peer_id_from_text(text)
                scores = [requester.reputation.score(peer, c, wall) for c in group.capabilities]
                sample = ReputationSample(
                    at=now - t0,
                    observer=requester.peer_id_text,
                    peer=text,
                    liar=text in liars,
                    score=sum(scores) / len(scores),
                )
                emit({"type": "reputation", **asdict(sample)})
        await trio.sleep(SAMPLE_INTERVAL)


async def _lookups(
    scenario: Scenario,
    share: Share,
    nodes: Mapping[int, Node],
    emit: Emit,
    t0: float,
    end: float,
) -> None:
    """Timed DHT record lookups from ``t0`` until ``end``: every
    ``LOOKUP_INTERVAL``, this share's part of ``LOOKUPS_PER_ROUND`` (in proportion
    to its nodes, so the swarm's rate is the same however many processes run it),
    each from a random running node of this share for a random other node's
    record, so the figures are the swarm's and not one node's view of it."""
    await trio.sleep_until(t0)
    rng = random.Random(f"lookups:{scenario.seed}:{min(share.indices)}")
    part, owed = LOOKUPS_PER_ROUND * len(share.indices) / scenario.nodes, 0.0
    while trio.current_time() < end:
        running = sorted(nodes)
        owed += part
        count = int(owed)
        owed -= count
        async with trio.open_nursery() as nursery:
            for _ in range(count if running else 0):
                origin = rng.choice(running)
                target = rng.choice([i for i in range(scenario.nodes) if i != origin] or [origin])
                nursery.start_soon(
                    _timed_lookup, nodes[origin], peer_text(scenario.seed, target), emit, t0
                )
            await trio.sleep(LOOKUP_INTERVAL)


async def _timed_lookup(origin: Node, target: str, emit: Emit, t0: float) -> None:
    started = trio.current_time()
    found = None
    with tracing() as trace, trio.move_on_after(LOOKUP_TIMEOUT):
        try:
            found = await origin.dht.get_record(peer_id_from_text(target))
        except (LlamanetError, *NETWORK_ERRORS):  # churn may stop the origin meanwhile
            pass
    lookup = LookupEvent(
        at=started - t0,
        latency=trio.current_time() - started,
        ok=found is not None,
        origin=origin.peer_id_text,
        hops=trace.hops,
        queries=trace.queries,
    )
    emit({"type": "lookup", **asdict(lookup)})
