"""Scenario files (TOML): who is in the swarm, how the network and the nodes
behave, what work arrives, for how long, with which seed.  Parsed into frozen
dataclasses; every problem in a file is reported at once, with the key it is at.

Everything random in a run derives from ``seed``: node identities, agent answers,
the workload and the churn schedule, so a seed names a run.
"""

from __future__ import annotations

import hashlib
import random
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

MODES: Final = ("fast", "real", "lan")
BEHAVIOURS: Final = ("honest", "wrong", "slow", "drop", "forge", "flood")
TASK_BEHAVIOURS: Final = ("wrong", "slow", "drop")
"""Behaviours that show in the answers (the others are attacks: simnet/attacks.py)."""
STRATEGIES: Final = ("direct", "monolith", "decompose", "relay", "compare")
COMPARED: Final = ("monolith", "decompose", "relay")
"""``compare`` runs these in turn, each on the same questions at the same times."""
DOMAINS: Final = ("code", "math", "reason")
"""Kinds of checkable question; the capability for a domain is ``sim.<domain>``."""


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message lists every problem."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Profile:
    """How a simulated agent performs (e.g. "coder 7B")."""

    ttft_ms: float = 200.0
    tokens_per_s: float = 40.0
    answer_tokens: int = 40
    accuracy: float = 0.9
    """Chance of a right answer in the agent's own domains."""
    other_accuracy: float = 0.5
    """Chance of a right answer outside them."""
    domains: tuple[str, ...] = DOMAINS
    price: float = 0.0
    """Credits per 1k tokens."""
    concurrency: int = 0
    """Questions the agent works on at once (a big model serving one request at
    a time: 1); the rest wait their turn.  0: no limit."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Group:
    name: str
    count: int
    profile: str
    capabilities: tuple[str, ...]
    behaviour: str = "honest"
    """``wrong`` answers wrongly, ``slow`` takes ten times as long, ``drop``
    never answers; ``forge`` stores forged records at honest peers and ``flood``
    floods them with task offers (simnet/attacks.py), both answering honestly."""
    behaviour_rate: float = 1.0
    """Fraction of tasks on which the behaviour shows."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Network:
    latency_ms: float = 10.0
    jitter_ms: float = 2.0
    loss: float = 0.0
    bandwidth_mbps: float | None = None
    connection_budget: int | None = None
    """Fast mode: connections a node keeps before closing idle ones (None: py-libp2p's
    default of 300); a swarm of a thousand needs one."""


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeSettings:
    """How often every node does its upkeep (llamanet's own settings)."""

    refresh_interval: float = 30.0
    """Routing-table refresh; short, so a node up before its bootstrap peer soon
    retries (llamanet's default is 300 s)."""
    liveness_interval: float = 5.0
    """Pings of the peers a node watches (llamanet's default)."""
    bootstrap_nodes: int = 1
    """How many of the first group nodes serve as bootstrap peers; each other
    node dials two of them (by its index), so no one peer takes every join."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Churn:
    join_per_min: float = 0.0
    leave_per_min: float = 0.0
    crash_per_min: float = 0.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Workload:
    rate_per_s: float = 1.0
    mix: Mapping[str, float] = field(default_factory=lambda: {"sim.math": 1.0})
    """Capability -> weight; ``sim.composite`` is a question in every domain."""
    verify: int = 1
    strategy: str = "direct"
    """How composite questions are answered: ``monolith`` (one big agent serves
    ``sim.composite``: all parts in one task), ``decompose`` (one sub-task per part
    to the ``sim.<domain>`` specialists, in parallel), ``relay`` (the parts in
    turn through one fixed peer serving ``sim.relay``), or ``compare``: each of
    the three for ``duration`` seconds in turn, same questions, same arrivals."""
    min_success: float | None = None
    """The share of tasks that must succeed for the run to pass."""
    min_accuracy: float | None = None
    """The share of answered checkable tasks that must be right."""
    timeout: float = 30.0
    """Seconds one task may take."""
    explore: float = 0.05
    """Chance that a requester tries a peer it has never used (llamanet's
    default); liars are only found out by those who ask them."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Scenario:
    name: str
    description: str = ""
    mode: str = "fast"
    seed: int = 1
    duration: float = 30.0
    """Seconds of workload, after discovery has converged (or ``settle`` passed)."""
    settle: float = 20.0
    """Longest wait for discovery to converge before the workload starts."""
    ramp: float = 0.0
    """Seconds over which the nodes start, in index order after the bootstrap node
    (0: all at once).  A thousand nodes dialling one bootstrap peer at the same
    instant is not how swarms grow, and it is refused past its connection limit."""
    requesters: int = 1
    """Extra nodes, serving nothing, that submit the workload."""
    groups: tuple[Group, ...] = ()
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    network: Network = Network()
    node: NodeSettings = NodeSettings()
    churn: Churn = Churn()
    workload: Workload = Workload()
    notes: tuple[str, ...] = ()

    @property
    def nodes(self) -> int:
        return self.requesters + sum(g.count for g in self.groups)

    def with_overrides(self, **changes: Any) -> Scenario:
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        fields.update({k: v for k, v in changes.items() if v is not None})
        changed = Scenario(**fields)
        if problems := _check(changed):
            raise ScenarioError(f"{self.name} with overrides:\n  " + "\n  ".join(problems))
        return changed


# -- derived, deterministic facts ------------------------------------------------------


def phases(scenario: Scenario) -> tuple[str, ...]:
    """The strategy of each phase of the workload: one, or every compared one in
    turn (each phase replays the same arrivals for ``duration``)."""
    strategy = scenario.workload.strategy
    return COMPARED if strategy == "compare" else (strategy,)


def capabilities_for(strategy: str) -> tuple[str, ...]:
    """What answering a composite question takes under ``strategy``."""
    if strategy == "decompose":
        return tuple(f"sim.{d}" for d in DOMAINS)
    if strategy == "relay":
        return ("sim.relay",)
    if strategy == "compare":
        return tuple(sorted({c for s in COMPARED for c in capabilities_for(s)}))
    return ("sim.composite",)


def bootstrap_indices(scenario: Scenario) -> tuple[int, ...]:
    """The nodes others bootstrap from: the first group nodes (after the requesters)."""
    first = scenario.requesters
    return tuple(range(first, first + scenario.node.bootstrap_nodes))


def bootstraps_of(scenario: Scenario, index: int) -> tuple[int, ...]:
    """Which of them node ``index`` dials: two, spread by index; a bootstrap node
    dials only those started before it."""
    boots = bootstrap_indices(scenario)
    peers = [i for i in boots if i < index] if index in boots else list(boots)
    if len(peers) <= 2:
        return tuple(peers)
    return (peers[index % len(peers)], peers[(index + 1) % len(peers)])


def node_seed(seed: int, index: int) -> bytes:
    """Node ``index``'s 32-byte Ed25519 seed in a run with ``seed``."""
    return hashlib.sha256(f"simnet-node:{seed}:{index}".encode()).digest()


@dataclass(frozen=True, kw_only=True, slots=True)
class Placement:
    """Node ``index`` of the run: its group (``None`` for a requester)."""

    index: int
    group: Group | None


def placements(scenario: Scenario) -> list[Placement]:
    """Requesters first, then the groups' nodes interleaved, each group spread
    evenly over the indices (the biggest group first).  Nodes start in index order
    over the ``ramp``, so the swarm is a mix of the groups at every moment of it:
    one group after another would leave every early node polling the DHT, for
    half the ramp, for a capability nobody offers yet."""
    out = [Placement(index=i, group=None) for i in range(scenario.requesters)]
    slots = sorted(
        ((k + 0.5) / group.count, order)
        for order, group in enumerate(scenario.groups)
        for k in range(group.count)
    )
    for _, order in slots:
        out.append(Placement(index=len(out), group=scenario.groups[order]))
    return out


@dataclass(frozen=True, slots=True)
class Arrival:
    at: float
    """Seconds after the workload (or, comparing strategies, its phase) starts."""
    capability: str


def arrivals(scenario: Scenario) -> list[Arrival]:
    """The workload's task arrivals, Poisson at ``rate_per_s`` over ``duration``,
    each capability drawn from ``mix``; from the seed, so a run (and every phase
    of a comparison) has exactly these."""
    w = scenario.workload
    rng = random.Random(f"workload:{scenario.seed}")
    capabilities, weights = list(w.mix), [float(v) for v in w.mix.values()]
    out: list[Arrival] = []
    at = rng.expovariate(w.rate_per_s)
    while at < scenario.duration:
        out.append(Arrival(at, rng.choices(capabilities, weights=weights)[0]))
        at += rng.expovariate(w.rate_per_s)
    return out


@dataclass(frozen=True, slots=True)
class ChurnStep:
    at: float
    kind: Literal["join", "leave", "crash"]
    index: int
    """The node that leaves or crashes, or the new node's index for a join."""


def churn_schedule(scenario: Scenario) -> list[ChurnStep]:
    """Poisson arrivals of joins, leaves and crashes over the workload, drawn from
    the seed.  Requesters and the bootstrap node (the first group node) stay; a
    node that left may come back on a later join (same identity)."""
    rng = random.Random(f"churn:{scenario.seed}")
    movable = [p.index for p in placements(scenario) if p.group is not None][1:]
    up, down = list(movable), list[int]()
    steps: list[ChurnStep] = []
    rates = {
        "join": scenario.churn.join_per_min / 60,
        "leave": scenario.churn.leave_per_min / 60,
        "crash": scenario.churn.crash_per_min / 60,
    }
    total = sum(rates.values())
    if total <= 0 or not movable:
        return steps
    at = 0.0
    while True:
        at += rng.expovariate(total)
        if at >= scenario.duration:
            return steps
        kind = rng.choices(list(rates), weights=list(rates.values()))[0]
        if kind == "join" and down:
            index = down.pop(rng.randrange(len(down)))
            up.append(index)
        elif kind != "join" and len(up) > 1:
            index = up.pop(rng.randrange(len(up)))
            down.append(index)
        else:
            continue
        steps.append(ChurnStep(round(at, 3), kind, index))  # type: ignore[arg-type]


# -- parsing ------------------------------------------------------------------------------

_TOP: Final = {
    "name", "description", "mode", "seed", "duration", "settle", "ramp", "requesters", "groups",
    "profiles", "network", "node", "churn", "workload", "notes",
}  # fmt: skip


def load_scenario(path: Path) -> Scenario:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: {exc}") from exc
    return parse_scenario(data, source=str(path), default_name=path.stem)


def parse_scenario(data: Mapping[str, Any], *, source: str, default_name: str = "") -> Scenario:
    problems: list[str] = []
    for key in sorted(set(data) - _TOP):
        problems.append(f"unknown key {key!r}")
    profiles = {
        name: _table(Profile, table, f"profiles.{name}", problems)
        for name, table in _tables(data.get("profiles", {}), "profiles", problems).items()
    }
    groups = []
    for i, table in enumerate(_list_of_tables(data.get("groups", []), "groups", problems)):
        where = f"groups[{i}]"
        group = _table(Group, table, where, problems)
        if group is None:
            continue
        if group.profile not in profiles:
            problems.append(f"{where}.profile: no profile {group.profile!r}")
        if group.behaviour not in BEHAVIOURS:
            problems.append(f"{where}.behaviour must be one of {', '.join(BEHAVIOURS)}")
        if group.count < 1:
            problems.append(f"{where}.count must be at least 1")
        if not 0 <= group.behaviour_rate <= 1:
            problems.append(f"{where}.behaviour_rate must be between 0 and 1")
        groups.append(group)
    scalars = {k: data[k] for k in ("name", "description", "mode", "seed", "duration",
                                    "settle", "ramp", "requesters") if k in data}  # fmt: skip
    scalars.setdefault("name", default_name or "scenario")
    network = _table(Network, data.get("network", {}), "network", problems)
    churn = _table(Churn, data.get("churn", {}), "churn", problems)
    node = _table(NodeSettings, data.get("node", {}), "node", problems)
    workload = _table(Workload, data.get("workload", {}), "workload", problems)
    notes = data.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        problems.append("notes must be a list of strings")
        notes = []
    scenario: Scenario | None = None
    try:
        scenario = Scenario(
            **scalars,
            groups=tuple(groups),
            profiles={k: v for k, v in profiles.items() if v is not None},
            network=network or Network(),
            churn=churn or Churn(),
            node=node or NodeSettings(),
            workload=workload or Workload(),
            notes=tuple(notes),
        )
    except TypeError as exc:
        problems.append(str(exc))
    if scenario is not None:
        problems.extend(_check(scenario))
    if problems or scenario is None:
        raise ScenarioError(f"{source}:\n  " + "\n  ".join(problems))
    return scenario


def _check(s: Scenario) -> list[str]:
    problems = []
    if s.mode not in MODES:
        problems.append(f"mode must be one of {', '.join(MODES)}")
    seed: Any = s.seed  # from TOML, whatever the annotation says
    if isinstance(seed, bool) or not isinstance(seed, int):
        problems.append("seed must be an integer")
    for name in ("duration", "settle"):
        value = getattr(s, name)
        if not isinstance(value, int | float) or value <= 0:
            problems.append(f"{name} must be a positive number of seconds")
    if min(s.node.refresh_interval, s.node.liveness_interval) <= 0:
        problems.append("node: intervals must be positive numbers of seconds")
    if not 1 <= s.node.bootstrap_nodes <= max(1, sum(g.count for g in s.groups)):
        problems.append("node.bootstrap_nodes: from 1 to the number of group nodes")
    if not isinstance(s.ramp, int | float) or s.ramp < 0:
        problems.append("ramp must be zero or a positive number of seconds")
    if not isinstance(s.requesters, int) or s.requesters < 1:
        problems.append("requesters must be at least 1")
    if not s.groups:
        problems.append("at least one [[groups]] entry is needed")
    w = s.workload
    if w.strategy not in STRATEGIES:
        problems.append(f"workload.strategy must be one of {', '.join(STRATEGIES)}")
    if not w.rate_per_s > 0:
        problems.append("workload.rate_per_s must be positive")
    if not 0 <= w.explore <= 1:
        problems.append("workload.explore must be between 0 and 1")
    if not isinstance(w.verify, int) or w.verify < 1:
        problems.append("workload.verify must be at least 1")
    offered = {c for g in s.groups for c in g.capabilities}
    for capability, weight in dict(w.mix).items():
        if not isinstance(weight, int | float) or weight < 0:
            problems.append(f"workload.mix.{capability}: weight must be >= 0")
        needed = (
            set(capabilities_for(w.strategy)) if capability == "sim.composite" else {capability}
        )
        for cap in sorted(needed - offered):
            problems.append(f"workload.mix.{capability}: no group offers {cap!r}")
    for name, profile in s.profiles.items():
        if not 0 <= profile.accuracy <= 1 or not 0 <= profile.other_accuracy <= 1:
            problems.append(f"profiles.{name}: accuracies must be between 0 and 1")
        if profile.concurrency < 0:
            problems.append(f"profiles.{name}.concurrency must be >= 0 (0: no limit)")
        if profile.tokens_per_s <= 0 or profile.ttft_ms < 0 or profile.answer_tokens < 1:
            problems.append(f"profiles.{name}: speeds and sizes must be positive")
        for domain in sorted(set(profile.domains) - set(DOMAINS)):
            problems.append(f"profiles.{name}.domains: unknown domain {domain!r}")
    for rate in ("join_per_min", "leave_per_min", "crash_per_min"):
        if getattr(s.churn, rate) < 0:
            problems.append(f"churn.{rate} must be >= 0")
    if s.network.latency_ms < 0 or s.network.jitter_ms < 0 or not 0 <= s.network.loss < 1:
        problems.append("network: latency and jitter must be >= 0, loss in [0, 1)")
    if s.network.connection_budget is not None and s.network.connection_budget < 3:
        problems.append("network.connection_budget: at least 3 connections")
    return problems


def _tables(value: Any, where: str, problems: list[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        problems.append(f"{where} must be a table")
        return {}
    return value


def _list_of_tables(value: Any, where: str, problems: list[str]) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        problems.append(f"{where} must be an array of tables ([[{where}]])")
        return []
    return value


def _table(cls: Any, value: Any, where: str, problems: list[str]) -> Any:
    if not isinstance(value, dict):
        problems.append(f"{where} must be a table")
        return None
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(value) - known)
    for key in unknown:
        problems.append(f"{where}: unknown key {key!r}")
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items() if k in known}
    try:
        return cls(**fields)
    except TypeError as exc:
        problems.append(f"{where}: {exc}")
        return None
