"""Failover and hedging between real nodes on loopback: a worker that never
answers, one that is overloaded, one killed mid-task, the only known provider
failing, and a hedged request."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from llamanet.errors import NoCandidatesError
from llamanet.node.node import Node

from ..doubles import CrashingSkillDouble, DelayedAnswerDouble, SlowSkillDouble
from ..nodes import eventually, providers_of, start_node

ROOT = Path(__file__).resolve().parents[2]


class Flaky(CrashingSkillDouble):
    """TEST DOUBLE: serves test.crash, always failing."""


@asynccontextmanager
async def bad_and_good(tmp_path: Path) -> AsyncIterator[tuple[Node, Node, Node]]:
    """Two providers of ``test.crash``, one always failing and one answering "ok",
    and a requester that holds both their records."""
    async with (
        start_node(tmp_path / "bad", backends=[Flaky()]) as bad,
        start_node(
            tmp_path / "good", backends=[DelayedAnswerDouble("ok", 0, "test.crash")]
        ) as good,
        start_node(tmp_path / "r", bootstrap=(bad.addrs()[0], good.addrs()[0])) as requester,
    ):
        await providers_of(requester, "test.crash", 2)
        yield bad, good, requester


def prefer(requester: Node, *order: Node) -> None:
    """Make ``requester`` rank ``order`` that way, as if it had measured them."""
    for rank, node in enumerate(order):
        requester._rtt[node.peer_id].extend([1.0 + 100 * rank] * 5)


async def test_a_worker_that_never_answers_gives_way_to_the_next(tmp_path: Path) -> None:
    stuck, quick = DelayedAnswerDouble("stuck", 3600), DelayedAnswerDouble("quick", 0)
    async with (
        start_node(tmp_path / "a", backends=[stuck]) as a,
        start_node(tmp_path / "b", backends=[quick]) as b,
        start_node(tmp_path / "r", bootstrap=(a.addrs()[0], b.addrs()[0])) as requester,
    ):
        await providers_of(requester, "test.delay", 2)
        prefer(requester, a, b)
        started = trio.current_time()
        answer = await requester.ask("test.delay", None, timeout=4.0)
        took = trio.current_time() - started
        assert answer.output == "quick" and answer.peer == b.peer_id_text
        assert [peer for peer, _ in answer.attempts] == [a.peer_id_text]
        assert 1.5 < took < 3.5  # half of the time left went to the stuck peer
        # The stuck worker was told its deadline and gave up too.
        await eventually(lambda: stuck.cancelled == 1)
        assert requester.status().tasks_sent == {"test.delay:timeout": 1, "test.delay:ok": 1}


async def test_an_overloaded_worker_gives_way_to_the_next(tmp_path: Path) -> None:
    busy, free = SlowSkillDouble(), SlowSkillDouble()
    async with (
        start_node(tmp_path / "a", backends=[busy], max_concurrency=1) as a,
        start_node(tmp_path / "b", backends=[free]) as b,
        start_node(tmp_path / "r", bootstrap=(a.addrs()[0], b.addrs()[0])) as requester,
        trio.open_nursery() as nursery,
    ):
        await providers_of(requester, "test.slow", 2)
        prefer(requester, a, b)

        async def occupy() -> None:
            await requester.ask("test.slow", None, peer=a.peer_id_text, params={"seconds": 30})

        nursery.start_soon(occupy)
        await busy.first_chunk_sent.wait()
        answer = await requester.ask("test.slow", None, params={"seconds": 0.01})
        assert answer.peer == b.peer_id_text
        assert "overloaded" in answer.attempts[0][1]
        nursery.cancel_scope.cancel()


async def test_a_worker_killed_mid_task_gives_way_to_the_next(tmp_path: Path) -> None:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.slow_worker", str(tmp_path / "worker")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        with trio.fail_after(30):
            addr = (await proc.stdout.receive_some(4096)).decode().strip()
        doomed_id = addr.rsplit("/p2p/", 1)[1]
        survivor_backend = SlowSkillDouble()
        async with (
            start_node(tmp_path / "b", backends=[survivor_backend]) as b,
            start_node(tmp_path / "r", bootstrap=(addr, b.addrs()[0])) as requester,
        ):
            await providers_of(requester, "test.slow", 2)
            requester._rtt[b.peer_id].extend([500.0] * 5)  # the doomed worker looks best
            chunks: list[object] = []

            async def on_chunk(data: object) -> None:
                chunks.append(data)
                if len(chunks) == 1:
                    proc.send_signal(signal.SIGKILL)

            with trio.fail_after(20):
                answer = await requester.ask(
                    "test.slow",
                    None,
                    stream=True,
                    on_chunk=on_chunk,
                    params={"seconds": 0.2},
                    timeout=15.0,
                )
            assert answer.peer == b.peer_id_text and answer.output == "done"
            assert answer.attempts[0][0] == doomed_id
            assert survivor_backend.finished == 1
    finally:
        proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()
        if proc.stdout is not None:
            await proc.stdout.aclose()


async def test_a_hedged_request_goes_to_a_second_peer_and_the_loser_is_cancelled(
    tmp_path: Path,
) -> None:
    slow, fast = DelayedAnswerDouble("slow", 5), DelayedAnswerDouble("fast", 0)
    async with (
        start_node(tmp_path / "a", backends=[slow]) as a,
        start_node(tmp_path / "b", backends=[fast]) as b,
        start_node(tmp_path / "r", bootstrap=(a.addrs()[0], b.addrs()[0])) as requester,
    ):
        await providers_of(requester, "test.delay", 2)
        prefer(requester, a, b)
        started = trio.current_time()
        answer = await requester.ask("test.delay", None, hedge=0.3, timeout=10.0, stream=True)
        took = trio.current_time() - started
        assert answer.output == "fast" and answer.peer == b.peer_id_text
        assert 0.3 <= took < 2.0
        assert slow.started == 1 and fast.started == 1
        await eventually(lambda: slow.cancelled == 1)

        # Not fired when the first answers before the threshold.
        prefer(requester, b, a)
        answer = await requester.ask("test.delay", None, hedge=2.0, timeout=10.0)
        assert answer.peer == b.peer_id_text and slow.started == 1


def test_the_hedge_threshold_is_the_p95_of_own_round_trips(tmp_path: Path) -> None:
    from llamanet.testing import loopback_config

    node = Node(loopback_config(tmp_path / "n"))
    peer = b"\x00" * 38
    assert node._hedge_delay(peer, True) == 1.0  # nothing measured yet
    assert node._hedge_delay(peer, 0.25) == 0.25
    node._rtt[peer].extend(float(ms) for ms in range(1, 61))
    assert node._hedge_delay(peer, True) == 0.057


async def test_failures_cost_reputation_which_steers_later_tasks(tmp_path: Path) -> None:
    from llamanet.trust.reputation import NEUTRAL

    async with bad_and_good(tmp_path) as (bad, good, requester):
        # The bad peer looks a little faster, so it is tried first at the start.
        requester._rtt[bad.peer_id].extend([4.0] * 9)
        requester._rtt[good.peer_id].extend([5.0] * 9)
        picked = []
        for _ in range(6):
            answer = await requester.ask("test.crash", None, timeout=5)
            picked.append(bool(answer.attempts))  # did it fail over from the bad one?
        assert answer.output == "ok"
        now = requester.clock()
        assert requester.reputation.score(bad.peer_id, "test.crash", now) < NEUTRAL
        assert requester.reputation.score(good.peer_id, "test.crash", now) > NEUTRAL
        assert picked[0] is True  # tried the bad peer first, then failed over
        assert picked[-1] is False  # the bad peer is no longer tried first
        rows = {row.peer_id: row for row in requester.peers()}
        assert rows[bad.peer_id_text].reputation < NEUTRAL


async def test_when_every_known_provider_fails_the_dht_is_asked_for_others(
    tmp_path: Path,
) -> None:
    async with bad_and_good(tmp_path) as (bad, good, requester):
        # As churn leaves a node's registry: one provider known, and it fails.
        requester.registry.remove(good.peer_id)
        assert [r.peer for r in requester._known_providers("test.crash")] == [bad.peer_id]
        answer = await requester.ask("test.crash", None, timeout=10)
        assert answer.output == "ok" and answer.peer == good.peer_id_text
        assert [peer for peer, _ in answer.attempts] == [bad.peer_id_text]


async def test_when_the_dht_knows_no_other_provider_the_one_attempt_is_the_error(
    tmp_path: Path,
) -> None:
    async with (
        start_node(tmp_path / "bad", backends=[Flaky()]) as bad,
        start_node(tmp_path / "r", bootstrap=(bad.addrs()[0],)) as requester,
    ):
        await providers_of(requester, "test.crash", 1)
        with pytest.raises(NoCandidatesError) as caught:
            await requester.ask("test.crash", None, timeout=10)
        # The DHT found the same failing peer again; it was not asked twice.
        assert [peer for peer, _ in caught.value.attempts] == [bad.peer_id_text]
        assert requester.status().tasks_sent == {"test.crash:internal": 1}
