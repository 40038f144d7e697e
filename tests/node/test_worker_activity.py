"""What the worker records in the node's activity about the tasks it serves."""

from __future__ import annotations

import time
from contextlib import aclosing

import pytest
import trio

from llamanet.backends.base import Backend
from llamanet.backends.builtin import BuiltinBackend
from llamanet.errors import SkillInputError
from llamanet.node.activity import Activity
from llamanet.node.worker import Worker
from llamanet.protocol.peer_ids import peer_id_to_text

from ..doubles import CrashingSkillDouble, SlowSkillDouble
from .test_worker import ALICE, admitted, collect, offer


def recording_worker() -> tuple[Worker, Activity]:
    activity = Activity(clock=time.time)
    backends: list[Backend] = [BuiltinBackend(), SlowSkillDouble(), CrashingSkillDouble()]
    return Worker(backends, activity=activity), activity


async def test_a_served_task_is_recorded_under_the_id_it_was_sent_with() -> None:
    worker, activity = recording_worker()
    task = offer("math", "6*7", parent=b"\x01" * 16, session="s1")
    async with aclosing(admitted(worker, task).run()) as items:
        await anext(items)
        (running,) = activity.in_flight()
        assert (running.kind, running.state) == ("served", "running")
        async for _ in items:
            pass
    (served,) = activity.recent()
    assert (served.id, served.kind, served.capability) == (task.id.hex(), "served", "math.eval")
    assert served.state == "ok"
    assert served.peer == peer_id_to_text(ALICE)
    assert served.label == "asked as math, session s1"
    assert served.parent == "01" * 16  # the requester's task, as a reference


async def test_a_failed_task_keeps_the_backends_message() -> None:
    worker, activity = recording_worker()
    with pytest.raises(SkillInputError):
        await collect(admitted(worker, offer("math.eval", "2+")))
    await collect(admitted(worker, offer("test.noresult")))
    no_result, bad_input = activity.recent()
    assert (bad_input.state, no_result.state) == ("failed", "failed")
    assert bad_input.error
    assert no_result.error == "ended without a result"


async def test_a_cancelled_task_is_cancelled() -> None:
    worker, activity = recording_worker()
    with trio.move_on_after(0.05):
        await collect(admitted(worker, offer("test.slow")))
    (served,) = activity.recent()
    assert (served.state, served.error) == ("cancelled", "")


async def test_a_worker_without_an_activity_records_nothing() -> None:
    worker = Worker([BuiltinBackend()])
    assert worker.record_start(admitted(worker, offer("math.eval", "1")).request) is None
