"""A flood of task requests from one peer does not starve another peer, and the
flooded node goes on serving."""

from __future__ import annotations

import os
import time
from pathlib import Path

import trio

from llamanet.errors import LlamanetError, TaskRejectedError
from llamanet.protocol.messages import TaskOffer

from ..nodes import start_node

FLOOD = 10_000
IN_FLIGHT = 64


async def test_ten_thousand_requests_from_one_peer_do_not_starve_another(tmp_path: Path) -> None:
    async with (
        start_node(tmp_path / "w", tasks_per_peer_per_s=100.0) as worker,
        start_node(tmp_path / "flooder", bootstrap=(worker.addrs()[0],)) as flooder,
        start_node(tmp_path / "honest", bootstrap=(worker.addrs()[0],)) as honest,
    ):
        outcomes: dict[str, int] = {"ok": 0, "overloaded": 0, "other": 0}
        honest_done: list[float] = []
        sent = 0

        async def flood_one() -> None:
            offer = TaskOffer(
                id=os.urandom(16),
                cap="text.echo",
                input="x" * 64,
                deadline=int((time.time() + 30) * 1000),
            )
            try:
                await flooder.client.run(worker.peer_id, offer)
                outcomes["ok"] += 1
            except TaskRejectedError as exc:
                outcomes["overloaded" if exc.code == "overloaded" else "other"] += 1
            except LlamanetError:
                outcomes["other"] += 1

        async def flood(limiter: trio.Semaphore) -> None:
            nonlocal sent
            async with trio.open_nursery() as nursery:
                for _ in range(FLOOD):
                    await limiter.acquire()
                    sent += 1

                    async def one() -> None:
                        try:
                            await flood_one()
                        finally:
                            limiter.release()

                    nursery.start_soon(one)

        async def honest_tasks() -> None:
            for i in range(30):
                started = trio.current_time()
                answer = await honest.ask("text.echo", f"hi {i}", peer=worker.peer_id_text)
                assert answer.output == f"hi {i}"
                honest_done.append(trio.current_time() - started)

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood, trio.Semaphore(IN_FLIGHT))
                await trio.sleep(0.2)  # the flood is under way
                await honest_tasks()
        assert sent == FLOOD
        assert sum(outcomes.values()) == FLOOD
        assert outcomes["overloaded"] > FLOOD / 2  # the flooder was held to its rate
        assert len(honest_done) == 30 and max(honest_done) < 5.0
        # The worker is still there for everyone.
        assert (await honest.ask("text.echo", "after", peer=worker.peer_id_text)).output == "after"
        assert worker.worker.rejections["overloaded"] == outcomes["overloaded"]
