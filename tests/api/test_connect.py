"""``llamanet.connect``: the library's way to use a running daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import llamanet
from llamanet.errors import DaemonNotRunningError

from ..nodes import start_node
from .test_server import serving

FLOW = """
[[steps]]
id = "sum"
capability = "math.eval"

[[steps]]
id = "stats"
capability = "text.stats"
input = "result {{sum}}"
"""


async def test_ask_stream_find_and_run_through_the_daemon(tmp_path: Path) -> None:
    async with (
        start_node(tmp_path / "worker") as worker,
        start_node(tmp_path / "daemon", bootstrap=(worker.addrs()[0],)) as daemon,
        serving(daemon),
        llamanet.connect(daemon.config.home) as client,
    ):
        assert (await client.status())["peer_id"] == daemon.peer_id_text
        (found,) = await client.find("math.eval")
        assert found["peer_id"] == worker.peer_id_text
        answer = await client.ask("math.eval", "2*(3+4)")
        assert answer["output"] == 14 and answer["peer"] == worker.peer_id_text
        with pytest.raises(llamanet.RemoteError, match="needs 2 distinct peers"):
            await client.ask("math.eval", "1+1", verify=2)
        awarded = await client.ask("math.eval", "1+1", market="cheapest")
        assert awarded["output"] == 2 and awarded["market"]["bids"] == 1
        with pytest.raises(llamanet.RemoteError, match="award rule"):
            await client.ask("math.eval", "1+1", market="auction")
        chunks = [c async for c in client.stream("text.echo", "streamed")]
        assert "".join(map(str, chunks)) == "streamed"

        flow = tmp_path / "flow.toml"
        flow.write_text(FLOW)
        steps: list[dict[str, Any]] = []

        async def on_step(event: dict[str, Any]) -> None:
            steps.append(event)

        result = await client.run(flow, "1+2", on_step=on_step)
        assert result["output"]["words"] == 2
        assert [s["step"] for s in result["steps"]] == ["sum", "stats"]
        assert [e["state"] for e in steps].count("done") == 2

        with pytest.raises(llamanet.RemoteError) as info:
            await client.ask("vision.ocr", "x", timeout=2)
        assert info.value.type == "NoCandidatesError"
        bad = {"steps": [{"id": "a", "capability": "math.eval", "input": "{{zz}}"}]}
        with pytest.raises(llamanet.RemoteError) as info:
            await client.run(bad, None)
        assert info.value.problems == ["step 'a' refers to unknown step 'zz'"]


async def test_no_daemon_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DaemonNotRunningError, match="no llamanet daemon is running"):
        async with llamanet.connect(tmp_path / "nobody"):
            pass
