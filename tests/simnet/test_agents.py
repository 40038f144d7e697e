"""Simulated agents: checkable questions, seeded accuracy, behaviours, timing in
virtual time."""

from __future__ import annotations

import trio
import trio.testing

from llamanet.backends.base import Chunk, Completion, TaskRequest
from simnet.agents import SimulatedAgent, is_correct, make_question, true_answer
from simnet.scenario import Group, Profile


def request(question: dict[str, object]) -> TaskRequest:
    return TaskRequest(id=b"t" * 16, capability="sim.math", requested="sim.math", input=question)


async def answer(agent: SimulatedAgent, question: dict[str, object]) -> Completion:
    items = [item async for item in agent.execute(request(question))]
    assert isinstance(items[0], Chunk)
    done = items[-1]
    assert isinstance(done, Completion)
    return done


def agent(accuracy: float = 1.0, behaviour: str = "honest", **profile: object) -> SimulatedAgent:
    group = Group(name="g", count=1, profile="p", capabilities=("sim.math",), behaviour=behaviour)
    return SimulatedAgent(
        seed=3,
        index=1,
        group=group,
        profile=Profile(accuracy=accuracy, **profile),  # type: ignore[arg-type]
    )


def test_questions_are_seeded_and_answers_known() -> None:
    q = make_question(1, 5, "sim.math")
    assert q == make_question(1, 5, "sim.math") != make_question(2, 5, "sim.math")
    a, b, c = q["args"]
    assert true_answer(q) == a * b + c
    composite = make_question(1, 5, "sim.composite")
    assert [p["domain"] for p in composite["parts"]] == ["code", "math", "reason"]
    assert is_correct(composite, true_answer(composite))


async def test_a_perfect_agent_is_always_right_and_takes_its_profile_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    perfect = agent(1.0, ttft_ms=500, tokens_per_s=10, answer_tokens=20)
    for n in range(5):
        q = make_question(1, n, "sim.math")
        started = trio.current_time()
        done = await answer(perfect, q)
        took = trio.current_time() - started
        assert is_correct(q, done.output)
        assert 0.9 * 2.5 <= took <= 1.1 * 2.5  # 0.5 s + 20 tokens at 10/s, ±10%
        assert abs(done.usage["exec_ms"] / 1000 - took) < 1e-3


async def test_accuracy_is_drawn_from_the_seed(autojump_clock: trio.testing.MockClock) -> None:
    coin = agent(0.5)
    first = [is_correct(q, (await answer(coin, q)).output) for q in
             (make_question(1, n, "sim.math") for n in range(200))]  # fmt: skip
    again = [is_correct(q, (await answer(coin, q)).output) for q in
             (make_question(1, n, "sim.math") for n in range(200))]  # fmt: skip
    assert first == again
    assert 70 < sum(first) < 130


async def test_behaviours(autojump_clock: trio.testing.MockClock) -> None:
    q = make_question(1, 0, "sim.math")
    assert not is_correct(q, (await answer(agent(1.0, "wrong"), q)).output)
    started = trio.current_time()
    await answer(agent(1.0, "slow", ttft_ms=100, tokens_per_s=100, answer_tokens=10), q)
    assert trio.current_time() - started > 10 * 0.9 * 0.2
    with trio.move_on_after(3600) as scope:
        await answer(agent(1.0, "drop"), q)
    assert scope.cancelled_caught  # never answers


async def test_a_single_slot_agent_answers_one_at_a_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    monolith = agent(1.0, ttft_ms=0, tokens_per_s=10, answer_tokens=10, concurrency=1)
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for n in range(3):
            nursery.start_soon(answer, monolith, make_question(1, n, "sim.math"))
    assert trio.current_time() - started >= 3 * 0.9
