"""What a simnet run records, as plain data: the runner appends events while the
scenario runs, :mod:`simnet.metrics` turns them into figures, :mod:`simnet.report`
writes them out.  Times are seconds since the workload started, except discovery
times, which count from when the nodes began to start (simulated seconds in fast
mode, wall-clock seconds otherwise)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

PHASES = ("discovery", "selection", "transfer", "queueing", "execution")
"""Where a task's time went, as far as the requester can tell."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskEvent:
    """One task (or workflow) submitted by the workload, finished or not."""

    submitted: float
    finished: float
    capability: str
    ok: bool
    """An answer came back (whether right or wrong)."""
    correct: bool | None = None
    """The answer matched the known correct one (``None``: not checkable)."""
    error: str | None = None
    """The typed error's code when ``ok`` is false."""
    peer: str | None = None
    """Who answered (peer ID text)."""
    group: str | None = None
    """The scenario group of the peer who answered."""
    verify: int = 1
    cost: float = 0.0
    """Credits spent, per the answering peers' prices."""
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds per phase (keys from :data:`PHASES`)."""
    messages: int = 0
    """Task-protocol frames both ways (every attempt and verification copy), plus
    two per DHT RPC the task's discovery sent."""
    bytes: int = 0
    """Bytes of those task-protocol frames (DHT traffic is in the run's totals)."""
    kind: str = "task"
    """``task`` or the workflow/strategy name (e.g. ``monolith``, ``decompose``)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DiscoveryEvent:
    """``node`` could first find a provider of ``capability`` ``at`` seconds after
    the nodes began to start."""

    node: str
    capability: str
    at: float
    after_join: float | None = None
    """Seconds since ``node`` itself was up (with a ramp, nodes join over time)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LookupEvent:
    """One DHT lookup (record or providers) made by the harness to measure the DHT."""

    at: float
    latency: float
    ok: bool
    origin: str | None = None
    """The node that looked up (peer ID text)."""
    hops: int | None = None
    """Longest chain of referrals the lookup followed (llamanet.adapters.dht_stats)."""
    queries: int | None = None
    """RPCs the lookup sent."""


@dataclass(frozen=True, kw_only=True, slots=True)
class AttackEvent:
    """One attempt by a ``forge`` or ``flood`` node, and what the target did."""

    at: float
    kind: str
    """``forge.<forgery>`` or ``flood``."""
    attacker: str
    target: str
    outcome: str
    """forge: ``refused``, ``kept`` or ``unreachable``; flood: ``served`` or the
    rejection's code (``overloaded``...)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ReputationSample:
    """What ``observer`` thought of ``peer`` at ``at`` (``liar``: the scenario made
    ``peer`` misbehave)."""

    at: float
    observer: str
    peer: str
    liar: bool
    score: float


@dataclass(frozen=True, kw_only=True, slots=True)
class ChurnEvent:
    at: float
    node: str
    kind: Literal["join", "leave", "crash"]


@dataclass(kw_only=True, slots=True)
class RunLog:
    """Everything one run recorded."""

    scenario: str
    mode: Literal["fast", "real", "lan"]
    seed: int
    nodes: int
    duration: float
    """Scenario duration (simulated or wall seconds)."""
    wall_time: float = 0.0
    """Wall-clock seconds the whole run took, start-up included."""
    peak_rss_mb: float = 0.0
    """Largest resident set of any simnet process."""
    machine: dict[str, Any] = field(default_factory=dict)
    tasks: list[TaskEvent] = field(default_factory=list)
    discovery: list[DiscoveryEvent] = field(default_factory=list)
    expected_discoveries: int = 0
    """(node, capability) pairs that should become findable."""
    lookups: list[LookupEvent] = field(default_factory=list)
    reputation: list[ReputationSample] = field(default_factory=list)
    churn: list[ChurnEvent] = field(default_factory=list)
    attacks: list[AttackEvent] = field(default_factory=list)
    rejected_records: dict[str, int] = field(default_factory=dict)
    """Records refused by honest nodes, by reason, summed at the end of the run."""
    notes: list[str] = field(default_factory=list)
    """What the report must say in words (e.g. "this is a simulation")."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunLog:
        data = dict(data)
        data["tasks"] = [TaskEvent(**t) for t in data.get("tasks", [])]
        data["discovery"] = [DiscoveryEvent(**d) for d in data.get("discovery", [])]
        data["lookups"] = [LookupEvent(**x) for x in data.get("lookups", [])]
        data["reputation"] = [ReputationSample(**r) for r in data.get("reputation", [])]
        data["churn"] = [ChurnEvent(**c) for c in data.get("churn", [])]
        data["attacks"] = [AttackEvent(**a) for a in data.get("attacks", [])]
        return cls(**data)
