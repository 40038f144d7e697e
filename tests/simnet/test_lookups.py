"""The harness's DHT lookup timing: a lookup that never answers is a failed
lookup in the report, not a missing one."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from simnet.swarm import LOOKUP_TIMEOUT, _timed_lookup, peer_text


class HangingDHT:
    """Test double: a DHT whose record lookups never answer (a saturated swarm's,
    at worst)."""

    async def get_record(self, key: Any) -> None:
        await trio.sleep_forever()


class NodeWithHangingDHT:
    """Test double for the node a lookup starts from: its peer ID and its DHT are
    all the harness reads."""

    peer_id_text = peer_text(1, 0)
    dht = HangingDHT()


async def test_a_lookup_that_never_answers_is_a_failure_at_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events: list[dict[str, Any]] = []
    t0 = trio.current_time()
    await _timed_lookup(NodeWithHangingDHT(), peer_text(1, 1), events.append, t0)  # type: ignore[arg-type]
    [event] = events
    assert event["type"] == "lookup" and event["ok"] is False
    assert event["latency"] == LOOKUP_TIMEOUT
    assert event["origin"] == peer_text(1, 0)
