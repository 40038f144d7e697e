"""``GET /metrics``: the node's counters in Prometheus's text exposition format
(version 0.0.4), written out directly from the state the node keeps anyway."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from llamanet.adapters.dht_stats import Histogram
from llamanet.node.node import Node
from llamanet.node.perf import percentile

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
QUANTILES: Final = (0.5, 0.95, 0.99)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help: str,
        samples: Iterable[tuple[Mapping[str, str], float]],
    ) -> None:
        self.lines.append(f"# HELP {name} {help}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(labels)} {float(value):g}")

    def histogram(
        self, name: str, help: str, series: Iterable[tuple[Mapping[str, str], Histogram]]
    ) -> None:
        self.lines.append(f"# HELP {name} {help}")
        self.lines.append(f"# TYPE {name} histogram")
        for labels, hist in series:
            for bound, count in hist.cumulative():
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                self.lines.append(f"{name}_bucket{_labels({**labels, 'le': le})} {count}")
            self.lines.append(f"{name}_sum{_labels(labels)} {hist.total:g}")
            self.lines.append(f"{name}_count{_labels(labels)} {hist.count}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render_metrics(node: Node) -> str:
    out = _Exposition()
    worker = node.worker
    out.family(
        "llamanet_tasks_served_total",
        "counter",
        "Tasks this node ran for peers, by capability and outcome.",
        (({"capability": c, "outcome": o}, n) for (c, o), n in sorted(worker.outcomes.items())),
    )
    out.family(
        "llamanet_tasks_rejected_total",
        "counter",
        "Task offers this node refused, by reason.",
        (({"reason": r}, n) for r, n in sorted(worker.rejections.items())),
    )
    out.family(
        "llamanet_tasks_sent_total",
        "counter",
        "Tasks this node sent to peers, by capability.",
        (({"capability": c}, n) for c, n in sorted(node.tasks_sent.items())),
    )
    out.family(
        "llamanet_tasks_running",
        "gauge",
        "Tasks running on this node now.",
        [({}, worker.in_flight)],
    )
    durations = sorted(worker.durations)
    quantiles = [
        ({"quantile": f"{q:g}"}, percentile(durations, q * 100) if durations else 0.0)
        for q in QUANTILES
    ]
    out.family(
        "llamanet_task_duration_seconds",
        "summary",
        f"Time the backend took for the last {len(durations)} completed tasks.",
        quantiles,
    )
    out.lines.append(f"llamanet_task_duration_seconds_count {len(durations)}")
    out.lines.append(f"llamanet_task_duration_seconds_sum {sum(durations):g}")
    out.family(
        "llamanet_records_rejected_total",
        "counter",
        "Signed records refused, by reason.",
        (({"reason": r}, n) for r, n in sorted(node.rejected_records.items())),
    )
    out.family(
        "llamanet_records_known",
        "gauge",
        "Verified records held in the registry.",
        [({}, len(node.registry))],
    )
    out.family(
        "llamanet_dht_routing_table_peers",
        "gauge",
        "Peers in the DHT routing table.",
        [({}, node.dht.routing_table_size())],
    )
    stats = node.dht.stats
    out.family(
        "llamanet_dht_operations_total",
        "counter",
        "DHT operations this node started, by operation and outcome.",
        (({"op": op, "outcome": o}, n) for (op, o), n in sorted(stats.outcomes.items())),
    )
    out.histogram(
        "llamanet_dht_operation_seconds",
        "Time DHT operations took, by operation.",
        (({"op": op}, h) for op, h in sorted(stats.seconds.items())),
    )
    out.histogram(
        "llamanet_dht_lookup_hops",
        "Longest chain of referrals a DHT operation's walk followed.",
        (({"op": op}, h) for op, h in sorted(stats.hops.items())),
    )
    out.family(
        "llamanet_dht_queries_total",
        "counter",
        "RPCs sent by DHT operations' walks, by operation.",
        (({"op": op}, n) for op, n in sorted(stats.queries.items())),
    )
    out.family(
        "llamanet_dht_streams_refused_total",
        "counter",
        "Inbound DHT streams reset because their peer was over its limits.",
        [({}, node.dht.refused_streams)],
    )
    out.family(
        "llamanet_record_requests_refused_total",
        "counter",
        "Record requests answered 'overloaded'.",
        [({}, node.caps_server.refused)],
    )
    out.family(
        "llamanet_peers_connected",
        "gauge",
        "Peers with an open libp2p connection.",
        [({}, len(node.host.get_connected_peers()))],
    )
    out.family(
        "llamanet_peers_refused_total",
        "counter",
        "Connections closed because the peer may not join this private swarm.",
        [({}, sum(node.admission.refused_peers.values()))],
    )
    out.family(
        "llamanet_membership_certificates_refused_total",
        "counter",
        "Membership certificates refused, by reason.",
        (({"reason": r}, n) for r, n in sorted(node.admission.refused_certificates.items())),
    )
    return out.text()
