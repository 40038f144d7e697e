"""A worker process killed with SIGKILL in the middle of a task."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from llamanet.errors import StreamBrokenError

from ..nodes import start_node

ROOT = Path(__file__).resolve().parents[2]


async def _read_line(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


async def test_requester_gets_a_typed_error_within_the_deadline(tmp_path: Path) -> None:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.slow_worker", str(tmp_path / "worker")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        with trio.fail_after(30):
            addr = await _read_line(proc.stdout)
        assert "/p2p/" in addr, "worker did not start"
        worker_id = addr.rsplit("/p2p/", 1)[1]
        async with start_node(tmp_path / "requester", bootstrap=(addr,)) as requester:
            first_chunk = trio.Event()

            async def on_chunk(data: object) -> None:
                first_chunk.set()

            async def kill_when_working() -> None:
                await first_chunk.wait()
                proc.send_signal(signal.SIGKILL)

            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(kill_when_working)
                with pytest.raises(StreamBrokenError, match="closed the stream during the task"):
                    await requester.ask(
                        "test.slow",
                        None,
                        peer=worker_id,
                        stream=True,
                        timeout=20.0,
                        on_chunk=on_chunk,
                        params={"seconds": 60},
                    )
            assert trio.current_time() - started < 20.0
            # The requester is unharmed and still works.
            assert requester.status().tasks_sent["test.slow:unreachable"] == 1
    finally:
        proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()
        if proc.stdout is not None:
            await proc.stdout.aclose()
