"""What a node says about itself and its peers: typed, frozen snapshots, turned
into JSON only at the API's edge (:meth:`NodeStatus.to_json`,
:meth:`PeerRow.to_json`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import multiaddr

from llamanet.protocol.peer_ids import peer_id_to_text
from llamanet.version import __version__

if TYPE_CHECKING:
    from .node import Node


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeStatus:
    """A node's own state, as ``llamanet status`` and ``GET /v1/status`` show it."""

    version: str
    peer_id: str
    swarm: str
    addrs: tuple[str, ...]
    capabilities: tuple[str, ...]
    models: tuple[Mapping[str, Any], ...]
    record_seq: int | None
    record_expires_in: int | None
    dht_peers: int
    connected_peers: int
    known_records: int
    tasks_running: int
    load: float
    backends: tuple[str, ...]
    tasks_served: Mapping[str, int]
    """``capability:outcome`` -> tasks this node served."""
    tasks_rejected: Mapping[str, int]
    tasks_sent: Mapping[str, int]
    """``capability:outcome`` -> attempts this node sent."""
    perf: Mapping[str, float]
    tasks: tuple[Mapping[str, Any], ...]
    """The tasks running here, with their requester, parent and sub-tasks."""
    sessions_kept: int
    records_rejected: Mapping[str, int]
    uptime_s: float
    api: str | None

    def to_json(self) -> dict[str, Any]:
        return _json(self)


@dataclass(frozen=True, kw_only=True, slots=True)
class PeerRow:
    """One peer as ``llamanet peers`` and ``GET /v1/peers`` show it: a peer we hold
    a verified record of, are connected to, or have in the routing table."""

    peer_id: str
    capabilities: tuple[str, ...]
    models: tuple[str, ...]
    load: float | None
    reputation: float
    record_seq: int | None
    record_expires_in: int | None
    source: str | None
    """Where its record came from (``direct``, ``dht``, ``mdns``), if we hold one."""
    addrs: tuple[str, ...]
    connected: bool
    in_routing_table: bool
    liveness: str
    last_seen_s: float | None

    def to_json(self) -> dict[str, Any]:
        return _json(self)


def _json(snapshot: Any) -> dict[str, Any]:
    return {
        field.name: _plain(getattr(snapshot, field.name)) for field in dataclasses.fields(snapshot)
    }


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def node_status(node: Node) -> NodeStatus:
    signed = node.publisher.record
    record = signed.record if signed else None
    worker = node.worker
    return NodeStatus(
        version=__version__,
        peer_id=node.peer_id_text,
        swarm=node.config.swarm,
        addrs=tuple(node.addrs()),
        capabilities=tuple(record.caps) if record else tuple(worker.capabilities()),
        models=tuple(m.to_wire() for m in worker.models()),
        record_seq=record.seq if record else None,
        record_expires_in=round(record.exp - node.clock()) if record else None,
        dht_peers=node.dht.routing_table_size(),
        connected_peers=len(node.host.get_connected_peers()),
        known_records=len(node.registry),
        tasks_running=worker.in_flight,
        load=round(worker.load, 3),
        backends=tuple(backend.name for backend in worker.backends),
        tasks_served={f"{cap}:{outcome}": n for (cap, outcome), n in worker.outcomes.items()},
        tasks_rejected=dict(worker.rejections),
        tasks_sent=dict(node.tasks_sent),
        perf=worker.perf(),
        tasks=tuple(node.running_tasks()),
        sessions_kept=len(worker.sessions),
        records_rejected=dict(node.rejected_records),
        uptime_s=round(node.clock() - node.started_at, 1) if node.started_at else 0,
        api=node.api_url,
    )


def peer_rows(node: Node) -> list[PeerRow]:
    """Every peer the node knows of, connected ones first."""
    now = node.clock()
    connected = {bytes(p.to_bytes()) for p in node.host.get_connected_peers()}
    in_table = set(node.dht.routing_table_peers())
    held: dict[bytes, dict[str, Any]] = {}
    for entry in node.registry.entries(now=now):
        rec = entry.record.record
        held[rec.peer] = {
            "capabilities": tuple(rec.caps),
            "models": tuple(m.name for m in rec.models),
            "load": rec.load,
            "record_seq": rec.seq,
            "record_expires_in": round(rec.exp - now),
            "source": entry.source,
            "addrs": tuple(str(multiaddr.Multiaddr(a)) for a in rec.addrs),
        }
    unheld: dict[str, Any] = {
        "capabilities": (),
        "models": (),
        "load": None,
        "record_seq": None,
        "record_expires_in": None,
        "source": None,
        "addrs": (),
    }
    rows = []
    for peer in held.keys() | connected | in_table:
        seen = node.presence.last_seen.get(peer)
        rows.append(
            PeerRow(
                peer_id=peer_id_to_text(peer),
                reputation=round(node.reputation.overall(peer, now), 3),
                connected=peer in connected,
                in_routing_table=peer in in_table,
                liveness=node.liveness_of(peer),
                last_seen_s=round(now - seen, 1) if seen is not None else None,
                **held.get(peer, unheld),
            )
        )
    return sorted(rows, key=lambda r: (not r.connected, r.peer_id))
