"""The worker's admission decisions, its slots, and running an admitted task."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import pytest
import trio
import trio.testing

from llamanet.backends.base import Chunk, Completion, TaskRequest
from llamanet.backends.builtin import BuiltinBackend
from llamanet.errors import SkillInputError
from llamanet.node.worker import Worker, WorkerLimits
from llamanet.protocol.messages import TaskOffer, TaskRejected
from llamanet.protocol.records import ModelInfo
from llamanet.trust.keys import Identity

ALICE = Identity(b"\x31" * 32).peer_id
BOB = Identity(b"\x32" * 32).peer_id
DEADLINE_MS = 1_800_000_000_000

QWEN = ModelInfo(name="qwen2.5:7b", family="qwen2", digest="sha256:aa", ctx=32768)
LLAMA = ModelInfo(name="llama3:8b", family="llama", digest="sha256:bb", ctx=8192)


class ModelBackendDouble:
    """TEST DOUBLE: a model server serving ``chat.general`` with two models; streams
    the model constraints it was given, then answers with the input reversed."""

    name = "model-double"

    def capabilities(self) -> Sequence[str]:
        return ("chat.general", "text.echo")

    def models(self) -> Sequence[ModelInfo]:
        return (QWEN, LLAMA)

    async def execute(self, request: TaskRequest) -> AsyncGenerator[Chunk | Completion, None]:
        yield Chunk(dict(request.model or {}))
        yield Completion(output=str(request.input)[::-1], model_digest=QWEN.digest)


def offer(cap: str, input: Any = "hello", **fields: Any) -> TaskOffer:
    return TaskOffer(id=os.urandom(16), cap=cap, input=input, deadline=DEADLINE_MS, **fields)


def admitted(worker: Worker, task: TaskOffer, peer: bytes = ALICE) -> Any:
    decision = worker.admit(task, peer)
    assert not isinstance(decision, TaskRejected), decision
    return decision


def rejected(worker: Worker, task: TaskOffer, peer: bytes = ALICE) -> TaskRejected:
    decision = worker.admit(task, peer)
    assert isinstance(decision, TaskRejected), decision
    return decision


async def collect(admission: Any) -> list[Chunk | Completion]:
    return [item async for item in admission.run()]


# --- what runs where ----------------------------------------------------------------


def test_an_exact_capability_is_admitted_as_a_request() -> None:
    worker = Worker([BuiltinBackend()])
    task = offer("math.eval", "1+1", params={"x": 1}, session="s1", stream=True, depth=2)
    request = admitted(worker, task).request
    assert request == TaskRequest(
        id=task.id,
        capability="math.eval",
        requested="math.eval",
        input="1+1",
        params={"x": 1},
        model=None,
        session="s1",
        deadline=DEADLINE_MS / 1000,
        stream=True,
        depth=2,
        requester=Identity(b"\x31" * 32).peer_id_text,
    )


def test_a_prefix_runs_as_the_least_specific_capability_under_it() -> None:
    # Built-in skills under "text" are text.echo and text.stats; ties go by name.
    worker = Worker([BuiltinBackend()])
    request = admitted(worker, offer("text")).request
    assert (request.capability, request.requested) == ("text.echo", "text")


def test_an_unsupported_capability_lists_what_is_offered() -> None:
    worker = Worker([BuiltinBackend(["math.eval", "text.echo"])])
    reply = rejected(worker, offer("code_generation"))
    assert reply.code == "unsupported"
    assert reply.msg == "no capability 'code_generation' here (offered: math.eval, text.echo)"
    assert reply.retry_after_ms is None


def test_a_worker_with_no_backends_offers_none() -> None:
    reply = rejected(Worker([]), offer("text.echo"))
    assert reply.code == "unsupported"
    assert "(offered: none)" in reply.msg


def test_a_partial_segment_is_not_a_prefix() -> None:
    reply = rejected(Worker([BuiltinBackend()]), offer("tex"))
    assert reply.code == "unsupported"


def test_capabilities_and_models_are_the_union_of_the_backends() -> None:
    worker = Worker([BuiltinBackend(["text.echo"]), ModelBackendDouble()])
    assert worker.capabilities() == ["text.echo", "chat.general"]
    assert worker.models() == [QWEN, LLAMA]


async def test_the_first_backend_offering_a_capability_runs_it() -> None:
    worker = Worker([ModelBackendDouble(), BuiltinBackend()])
    items = await collect(admitted(worker, offer("text.echo", "hello")))
    assert items[-1] == Completion(output="olleh", model_digest="sha256:aa")


# --- model constraints ---------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        {"name": "qwen2.5:7b"},
        {"family": "llama"},
        {"digest": "sha256:bb"},
        {"min_ctx": 32768},
        {"family": "qwen2", "min_ctx": 4096, "digest": "sha256:aa"},
    ],
)
async def test_a_model_constraint_one_of_the_models_meets_is_admitted(
    model: dict[str, Any],
) -> None:
    worker = Worker([ModelBackendDouble()])
    admission = admitted(worker, offer("chat.general", model=model))
    assert admission.request.model == model
    items = await collect(admission)
    assert items == [Chunk(model), Completion(output="olleh", model_digest="sha256:aa")]


@pytest.mark.parametrize(
    "model",
    [
        {"name": "mistral:7b"},
        {"family": "gemma"},
        {"digest": "sha256:cc"},
        {"min_ctx": 65536},
        # Each part is met by some model, but no single model meets them all.
        {"family": "llama", "min_ctx": 32768},
    ],
)
def test_a_model_constraint_no_model_meets_is_unsupported(model: dict[str, Any]) -> None:
    worker = Worker([ModelBackendDouble()])
    reply = rejected(worker, offer("chat.general", model=model))
    assert reply.code == "unsupported"
    assert reply.msg == f"no model here matches {model}"


def test_a_model_constraint_on_a_backend_without_models_is_unsupported() -> None:
    reply = rejected(Worker([BuiltinBackend()]), offer("text.echo", model={"family": "qwen2"}))
    assert reply.code == "unsupported"


# --- limits ----------------------------------------------------------------------------


def test_depth_beyond_the_limit_is_refused() -> None:
    worker = Worker([BuiltinBackend()], WorkerLimits(max_depth=2))
    admitted(worker, offer("text.echo", depth=2)).release()
    reply = rejected(worker, offer("text.echo", depth=3))
    assert reply.code == "depth_exceeded"
    assert reply.msg == "task was delegated 3 times; the limit is 2"


def test_input_over_the_limit_is_too_large() -> None:
    worker = Worker([BuiltinBackend()], WorkerLimits(max_input_bytes=100))
    # msgpack of a str of n < 256 characters is 2 + n bytes.
    admitted(worker, offer("text.echo", "x" * 98)).release()
    reply = rejected(worker, offer("text.echo", "x" * 99))
    assert reply.code == "too_large"
    assert reply.msg == "input of 101 bytes exceeds 100"
    assert worker.in_flight == 0


def test_input_that_cannot_be_encoded_is_a_bad_request() -> None:
    # Offers built in-process (not decoded from the wire) can hold anything.
    worker = Worker([BuiltinBackend()])
    reply = rejected(worker, offer("text.echo", 1 << 64))
    assert reply.code == "bad_request"
    assert "cannot be encoded as msgpack" in reply.msg
    assert worker.in_flight == 0


def test_all_slots_busy_is_overloaded_with_a_retry_hint() -> None:
    worker = Worker([BuiltinBackend()], WorkerLimits(max_concurrency=2, max_tasks_per_peer=2))
    admitted(worker, offer("text.echo"), ALICE)
    admitted(worker, offer("text.echo"), BOB)
    reply = rejected(worker, offer("text.echo"), Identity(b"\x33" * 32).peer_id)
    assert reply.code == "overloaded"
    assert reply.msg == "all task slots are busy"
    assert reply.retry_after_ms == 100
    assert worker.in_flight == 2


def test_one_peer_cannot_take_every_slot() -> None:
    worker = Worker([BuiltinBackend()], WorkerLimits(max_concurrency=4, max_tasks_per_peer=2))
    admitted(worker, offer("text.echo"), ALICE)
    admitted(worker, offer("text.echo"), ALICE)
    reply = rejected(worker, offer("text.echo"), ALICE)
    assert reply.code == "overloaded"
    assert reply.msg == "at most 2 tasks per requester at once"
    assert reply.retry_after_ms == 100
    # Another requester still gets in.
    admitted(worker, offer("text.echo"), BOB)
    assert worker.in_flight == 3


def test_release_frees_the_slot_once() -> None:
    worker = Worker([BuiltinBackend()], WorkerLimits(max_concurrency=2, max_tasks_per_peer=1))
    first = admitted(worker, offer("text.echo"), ALICE)
    admitted(worker, offer("text.echo"), BOB)
    assert rejected(worker, offer("text.echo"), ALICE).code == "overloaded"
    first.release()
    first.release()  # idempotent: must not free BOB's slot too
    assert worker.in_flight == 1
    admitted(worker, offer("text.echo"), ALICE)
    assert worker.in_flight == 2
    assert rejected(worker, offer("text.echo"), BOB).code == "overloaded"


def test_load_is_the_share_of_busy_slots() -> None:
    worker = Worker([BuiltinBackend()], WorkerLimits(max_concurrency=4, max_tasks_per_peer=4))
    assert worker.load == 0.0
    held = [admitted(worker, offer("text.echo")) for _ in range(3)]
    assert worker.load == 0.75
    for admission in held:
        admission.release()
    assert worker.load == 0.0


def test_rejections_are_counted_by_code() -> None:
    worker = Worker([BuiltinBackend()], WorkerLimits(max_concurrency=1, max_depth=0))
    rejected(worker, offer("nope"))
    rejected(worker, offer("nope.at_all"))
    rejected(worker, offer("text.echo", depth=1))
    admitted(worker, offer("text.echo"))
    rejected(worker, offer("text.echo"))
    assert worker.rejections == {"unsupported": 2, "depth_exceeded": 1, "overloaded": 1}


@pytest.mark.parametrize(
    "limits",
    [
        {"max_concurrency": 0},
        {"max_tasks_per_peer": 0},
        {"max_input_bytes": -1},
        {"max_depth": -1},
    ],
)
def test_invalid_limits(limits: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be"):
        WorkerLimits(**limits)


# --- running ------------------------------------------------------------------------------


async def test_run_yields_the_backends_chunks_and_completion() -> None:
    worker = Worker([BuiltinBackend()])
    text = "the quick brown fox jumps over the lazy dog"
    admission = admitted(worker, offer("text.echo", text, stream=True))
    items = await collect(admission)
    chunks = [i for i in items if isinstance(i, Chunk)]
    assert len(chunks) > 1
    assert "".join(c.data for c in chunks) == text
    assert items[-1] == Completion(
        output=text,
        usage={"input_chars": len(text), "output_chars": len(text), "chunks": len(chunks)},
    )
    assert worker.outcomes == {("text.echo", "ok"): 1}
    # Running does not release the slot: whoever admitted the task does that.
    assert worker.in_flight == 1
    admission.release()
    assert worker.in_flight == 0


async def test_a_failing_backend_is_counted_as_failed() -> None:
    worker = Worker([BuiltinBackend()])
    admission = admitted(worker, offer("math.eval", ["not", "an", "expression"]))
    with pytest.raises(SkillInputError):
        await collect(admission)
    assert worker.outcomes == {("math.eval", "failed"): 1}


async def test_p50_is_measured_from_completed_tasks(autojump_clock: trio.testing.MockClock) -> None:
    class SlowDouble(ModelBackendDouble):
        """TEST DOUBLE: answers after 0.2 s of (virtual) work."""

        async def execute(self, request: TaskRequest) -> AsyncGenerator[Chunk | Completion, None]:
            await trio.sleep(0.2)
            yield Completion(output="done")

    worker = Worker([SlowDouble()])
    assert worker.p50_ms() == 0.0
    for _ in range(3):
        await collect(admitted(worker, offer("chat.general")))
    assert worker.p50_ms() == pytest.approx(200.0)
