"""A node's status and peer listing are typed snapshots; their JSON (the API's and
the CLI's ``--json``) keeps the fields and order it always had."""

from __future__ import annotations

import json
from pathlib import Path

from ..nodes import start_swarm

STATUS_FIELDS = [
    "version", "peer_id", "swarm", "addrs", "capabilities", "models", "record_seq",
    "record_expires_in", "dht_peers", "connected_peers", "known_records", "tasks_running",
    "load", "backends", "tasks_served", "tasks_rejected", "tasks_sent", "perf", "tasks",
    "sessions_kept", "records_rejected", "uptime_s", "api",
]  # fmt: skip
PEER_FIELDS = [
    "peer_id", "capabilities", "models", "load", "reputation", "record_seq",
    "record_expires_in", "source", "addrs", "connected", "in_routing_table", "liveness",
    "last_seen_s",
]  # fmt: skip


async def test_status_and_peers_serialise_to_the_same_json(tmp_path: Path) -> None:
    async with start_swarm(tmp_path, 2) as (a, b):
        await b.fetch_record(a.peer_id)
        status = b.status().to_json()
        assert list(status) == STATUS_FIELDS
        assert status["peer_id"] == b.peer_id_text and status["connected_peers"] == 1
        assert isinstance(status["capabilities"], list) and isinstance(status["tasks"], list)
        rows = [row.to_json() for row in b.peers()]
        assert [list(row) for row in rows] == [PEER_FIELDS]
        (row,) = rows
        assert row["peer_id"] == a.peer_id_text and row["source"] == "direct"
        assert row["connected"] and row["liveness"] == "alive"
        assert row["capabilities"] == list(a.record.record.caps)
        json.dumps({"status": status, "peers": rows})  # plain JSON all the way down
