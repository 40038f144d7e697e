"""Figures from a :class:`~simnet.events.RunLog`: pure functions, no I/O.

Every figure is computed from the recorded events alone, so a report can be
recomputed from its own ``report.json``.  A figure without data is ``None``
rather than an exception: a run that lost all its tasks still deserves a report.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, Final

from .events import PHASES, ReputationSample, RunLog, TaskEvent

CHURN_WINDOW: Final = 10.0
"""Seconds after a churn event during which a submitted task counts as "during churn"."""

CHURN_KINDS: Final = ("join", "leave", "crash")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) with linear interpolation between closest
    ranks (numpy's default method); ``None`` for no values."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be in [0, 100], got {q!r}")
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def _mean(values: Iterable[float]) -> float | None:
    items = list(values)
    return sum(items) / len(items) if items else None


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _latencies(tasks: Iterable[TaskEvent]) -> list[float]:
    return [t.finished - t.submitted for t in tasks if t.ok]


def _accuracy(tasks: Iterable[TaskEvent]) -> float | None:
    checked = [t.correct for t in tasks if t.ok and t.correct is not None]
    return _ratio(sum(checked), len(checked))


def _success_rate(tasks: Sequence[TaskEvent]) -> float | None:
    return _ratio(sum(t.ok for t in tasks), len(tasks))


def _run(log: RunLog) -> dict[str, Any]:
    return {
        "scenario": log.scenario,
        "mode": log.mode,
        "seed": log.seed,
        "nodes": log.nodes,
        "duration": log.duration,
        "wall_time": log.wall_time,
        "peak_rss_mb": log.peak_rss_mb,
        "machine": dict(log.machine),
        "notes": list(log.notes),
    }


def discovery_times(log: RunLog, *, after_join: bool = False) -> list[float]:
    """When each distinct (node, capability) pair first became findable, sorted:
    since the nodes began to start, or (``after_join``) since the node itself was
    up (events without that time are left out)."""
    first: dict[tuple[str, str], float] = {}
    for event in log.discovery:
        at = event.after_join if after_join else event.at
        if at is not None:
            key = (event.node, event.capability)
            first[key] = min(at, first.get(key, at))
    return sorted(first.values())


def _discovery(log: RunLog) -> dict[str, Any]:
    times = discovery_times(log)
    after_join = discovery_times(log, after_join=True)
    converged = bool(times) and len(times) >= log.expected_discoveries
    return {
        "expected": log.expected_discoveries,
        "found": len(times),
        "convergence_s": times[-1] if converged else None,
        "converged_fraction": _ratio(len(times), log.expected_discoveries),
        "p50": percentile(times, 50),
        "p95": percentile(times, 95),
        # Per node, from its own start: what a node joining a running swarm sees.
        "after_join_p50": percentile(after_join, 50),
        "after_join_p95": percentile(after_join, 95),
        "after_join_max": max(after_join, default=None),
    }


def _lookups(log: RunLog) -> dict[str, Any]:
    ok = [x.latency for x in log.lookups if x.ok]
    return {
        "count": len(log.lookups),
        "success_rate": _ratio(len(ok), len(log.lookups)),
        "latency_p50": percentile(ok, 50),
        "latency_p95": percentile(ok, 95),
        "latency_p99": percentile(ok, 99),
        "hops_mean": _mean(x.hops for x in log.lookups if x.hops is not None),
        "hops_max": max((x.hops for x in log.lookups if x.hops is not None), default=None),
        "queries_mean": _mean(x.queries for x in log.lookups if x.queries is not None),
    }


def _by_kind(tasks: Sequence[TaskEvent]) -> dict[str, Any]:
    groups: dict[str, list[TaskEvent]] = defaultdict(list)
    for task in tasks:
        groups[task.kind].append(task)
    out: dict[str, Any] = {}
    for kind in sorted(groups):
        members = groups[kind]
        latencies = _latencies(members)
        out[kind] = {
            "count": len(members),
            "success_rate": _success_rate(members),
            "accuracy": _accuracy(members),
            "latency_mean": _mean(latencies),
            "latency_p50": percentile(latencies, 50),
            "latency_p95": percentile(latencies, 95),
            "cost_per_task": _ratio(sum(t.cost for t in members), len(members)),
        }
    return out


def _by_group(tasks: Sequence[TaskEvent]) -> dict[str, Any]:
    groups: dict[str, list[TaskEvent]] = defaultdict(list)
    for task in tasks:
        if task.group is not None:
            groups[task.group].append(task)
    return {
        name: {"count": len(groups[name]), "accuracy": _accuracy(groups[name])}
        for name in sorted(groups)
    }


def _tasks(log: RunLog) -> dict[str, Any]:
    tasks = log.tasks
    count = len(tasks)
    latencies = _latencies(tasks)
    errors = Counter(t.error or "unknown" for t in tasks if not t.ok)
    cost_total = sum(t.cost for t in tasks)
    return {
        "count": count,
        "success_rate": _success_rate(tasks),
        "accuracy": _accuracy(tasks),
        "latency_mean": _mean(latencies),
        "latency_p50": percentile(latencies, 50),
        "latency_p95": percentile(latencies, 95),
        "latency_p99": percentile(latencies, 99),
        "errors": dict(sorted(errors.items())),
        "cost_total": cost_total,
        "cost_per_task": _ratio(cost_total, count),
        "messages_per_task": _ratio(sum(t.messages for t in tasks), count),
        "bytes_per_task": _ratio(sum(t.bytes for t in tasks), count),
        "overhead": {
            phase: _mean(t.phases[phase] for t in tasks if phase in t.phases) for phase in PHASES
        },
        "by_kind": _by_kind(tasks),
        "by_group": _by_group(tasks),
    }


def reputation_means(
    samples: Iterable[ReputationSample],
) -> list[tuple[float, float | None, float | None]]:
    """Per sample time: (at, mean liar score, mean honest score), sorted by time."""
    scores: dict[float, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for sample in samples:
        liars, honest = scores[sample.at]
        (liars if sample.liar else honest).append(sample.score)
    return [(at, _mean(scores[at][0]), _mean(scores[at][1])) for at in sorted(scores)]


def _demotion_time(means: Sequence[tuple[float, float | None, float | None]]) -> float | None:
    # Only times where both groups were sampled can be compared.  Walk back from
    # the end: demotion is the start of the final unbroken run of "liars lower".
    demoted: float | None = None
    for at, liar, honest in reversed(means):
        if liar is None or honest is None:
            continue
        if liar >= honest:
            break
        demoted = at
    return demoted


def _reputation(log: RunLog) -> dict[str, Any]:
    means = reputation_means(log.reputation)
    has_liars = any(s.liar for s in log.reputation)
    liar_means = [m[1] for m in means if m[1] is not None]
    honest_means = [m[2] for m in means if m[2] is not None]
    return {
        "samples": len(log.reputation),
        "liars": len({s.peer for s in log.reputation if s.liar}),
        "demotion_s": _demotion_time(means) if has_liars else None,
        "final_liar_mean": liar_means[-1] if liar_means else None,
        "final_honest_mean": honest_means[-1] if honest_means else None,
    }


def _during_churn(task: TaskEvent, churn_times: Sequence[float]) -> bool:
    return any(at <= task.submitted <= at + CHURN_WINDOW for at in churn_times)


def _churn(log: RunLog) -> dict[str, Any]:
    kinds = Counter(c.kind for c in log.churn)
    times = [c.at for c in log.churn]
    during = [t for t in log.tasks if _during_churn(t, times)]
    calm = [t for t in log.tasks if not _during_churn(t, times)]
    return {
        "counts": {kind: kinds.get(kind, 0) for kind in CHURN_KINDS},
        "tasks_during_churn": len(during),
        "success_rate_during_churn": _success_rate(during),
        "success_rate_calm": _success_rate(calm),
    }


def _attacks(log: RunLog) -> dict[str, Any]:
    outcomes: dict[str, Counter[str]] = defaultdict(Counter)
    for attack in log.attacks:
        outcomes[attack.kind][attack.outcome] += 1
    forged: Counter[str] = Counter()
    for kind, counts in outcomes.items():
        if kind.startswith("forge."):
            forged.update(counts)
    flood = outcomes.get("flood", Counter())
    return {
        "by_kind": {kind: dict(sorted(c.items())) for kind, c in sorted(outcomes.items())},
        # Of the forged records that reached their target, the share refused.
        "forged_records_refused": _ratio(forged["refused"], forged["refused"] + forged["kept"]),
        "flood_offers": sum(flood.values()),
        "flood_served": _ratio(flood["served"], sum(flood.values())),
        "records_rejected_by_honest_nodes": dict(sorted(log.rejected_records.items())),
    }


def summarize(log: RunLog) -> dict[str, Any]:
    """Every figure of a run, as a JSON-serialisable dict of sections."""
    return {
        "run": _run(log),
        "discovery": _discovery(log),
        "lookups": _lookups(log),
        "tasks": _tasks(log),
        "reputation": _reputation(log),
        "churn": _churn(log),
        "attacks": _attacks(log),
    }


def _is_number(value: Any) -> bool:
    # bool is an int to Python, but True - False is not a meaningful delta.
    return isinstance(value, int | float) and not isinstance(value, bool)


def flatten(summary: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Leaves of a nested summary under dotted keys, in the summary's own order."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Rows (dotted key, value in ``a``, value in ``b``) for the numeric leaves both
    summaries have, in ``a``'s order.  A figure that is ``None`` on one side (no
    data there) is kept when the other side has a number: that difference is news."""
    flat_a, flat_b = flatten(a), flatten(b)
    rows: list[tuple[str, Any, Any]] = []
    for key, left in flat_a.items():
        if key not in flat_b:
            continue
        right = flat_b[key]
        numeric = (_is_number(left) or left is None) and (_is_number(right) or right is None)
        if numeric and (_is_number(left) or _is_number(right)):
            rows.append((key, left, right))
    return rows
