"""Measured speed: time to first token and decode rate per model, the warm-up
probe, and republishing when the figures drift."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from llamanet.backends.base import Chunk, Completion, TaskRequest
from llamanet.backends.ollama import OllamaBackend
from llamanet.errors import ModelNotFoundError
from llamanet.node.perf import ModelSpeed, SpeedBook, drifted
from llamanet.node.worker import Worker
from llamanet.protocol.records import ModelInfo

from ..nodes import eventually, start_node
from ..ollama_double import running_ollama_double


class ScriptedModel:
    """TEST DOUBLE: a model backend that takes ``ttft`` seconds to its first token,
    then ``gap`` seconds per further token (in trio time, so virtual under MockClock)."""

    name = "scripted"

    def __init__(self, *, ttft: float = 0.2, gap: float = 0.1, tokens: int = 10) -> None:
        self.ttft, self.gap, self.tokens = ttft, gap, tokens
        self.requests: list[TaskRequest] = []

    def capabilities(self) -> Sequence[str]:
        return ["llm.chat", "llm.generate", "llm.embed"]

    def models(self) -> Sequence[ModelInfo]:
        return (
            ModelInfo(name="talker", digest="sha256:aa"),
            ModelInfo(name="embedder", digest="sha256:bb"),
        )

    async def execute(self, request: TaskRequest) -> AsyncGenerator[Chunk | Completion, None]:
        self.requests.append(request)
        if request.model and request.model.get("name") == "embedder":
            raise ModelNotFoundError("embedder only embeds")
        await trio.sleep(self.ttft)
        yield Chunk("t")
        for _ in range(self.tokens - 1):
            await trio.sleep(self.gap)
            yield Chunk("t")
        yield Completion(
            output="t" * self.tokens,
            usage={"prompt_tokens": 3, "completion_tokens": self.tokens},
            model_digest="sha256:aa",
            model="talker",
        )


def test_decode_rate_leaves_out_the_first_token() -> None:
    speed = ModelSpeed()
    speed.observe(ttft=0.5, tokens=11, started=10.0, ended=11.5)
    assert speed.ttft_ms() == 500.0
    assert speed.tokens_per_s() == 10.0  # 10 tokens after the first, in 1 s
    unstreamed = ModelSpeed()
    unstreamed.observe(ttft=None, tokens=20, started=0.0, ended=2.0)
    assert unstreamed.ttft_ms() == 0.0 and unstreamed.tokens_per_s() == 10.0


def test_the_node_summary_is_the_median_over_models() -> None:
    book = SpeedBook()
    for ttft in (0.1, 0.2, 0.3):
        book.observe("a", ttft=ttft, tokens=2, started=0.0, ended=ttft + 1.0)
    assert book.summary() == {"ttft_ms": 200.0, "tokens_per_s": 1.0}
    assert SpeedBook().summary() == {}


@pytest.mark.parametrize(
    ("published", "current", "moved"),
    [
        ({"ttft_ms": 100.0}, {"ttft_ms": 120.0}, []),
        ({"ttft_ms": 100.0}, {"ttft_ms": 130.0}, ["ttft_ms"]),
        ({"tokens_per_s": 50.0}, {"tokens_per_s": 30.0}, ["tokens_per_s"]),
        ({}, {"tokens_per_s": 30.0}, ["tokens_per_s"]),
        ({"tokens_per_s": 30.0}, {}, ["tokens_per_s"]),
        ({"load": 0.1}, {"load": 0.3}, []),
        ({"load": 0.1}, {"load": 0.5}, ["load"]),
    ],
)
def test_drift(published: dict[str, float], current: dict[str, float], moved: list[str]) -> None:
    assert drifted(published, current) == moved


async def test_the_worker_measures_each_model_on_real_tasks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = Worker([ScriptedModel(ttft=0.2, gap=0.1, tokens=10)])
    assert worker.models()[0].tokens_per_s == 0.0 and worker.perf() == {}
    request = TaskRequest(
        id=b"x" * 16, capability="llm.chat", requested="llm.chat", input={"messages": []}
    )
    async for _ in worker.measured(worker.backends[0], request):
        pass
    talker, embedder = worker.models()
    assert (talker.ttft_ms, talker.tokens_per_s) == (200.0, 10.0)
    assert (embedder.ttft_ms, embedder.tokens_per_s) == (0.0, 0.0)
    assert worker.perf() == {"ttft_ms": 200.0, "tokens_per_s": 10.0}


async def test_warm_up_probes_every_generating_model(
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = ScriptedModel(ttft=0.05, gap=0.01, tokens=8)
    worker = Worker([model])
    assert await worker.warm_up() == 1  # the embedder says it does not generate
    probe = model.requests[0]
    assert probe.capability == "llm.generate" and probe.params == {"max_tokens": 8}
    assert probe.model == {"name": "talker"}
    assert worker.models()[0].ttft_ms == 50.0
    assert worker.outcomes == {}, "a probe is not a task"


async def test_a_failing_warm_up_is_logged_and_the_node_goes_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(ScriptedModel):
        async def execute(self, request: TaskRequest) -> AsyncGenerator[Chunk | Completion, None]:
            await trio.sleep(1000)  # never answers
            yield Chunk("")

    with caplog.at_level(logging.WARNING):
        assert await Worker([Broken()]).warm_up() == 0
    assert "warm-up of talker failed" in caplog.text


async def test_the_record_carries_measured_speed_after_warm_up(tmp_path: Path) -> None:
    async with running_ollama_double() as double:
        backend = OllamaBackend(double.url)
        await backend.open()
        async with start_node(tmp_path / "a", backends=[backend]) as a:

            def measured() -> bool:
                models = {m.name: m for m in a.record.record.models}
                return models["qwen2.5:0.5b"].tokens_per_s > 0

            await eventually(measured)
            record = a.record.record
            assert record.perf["tokens_per_s"] > 0 and record.perf["ttft_ms"] > 0
            assert {m.name: m.tokens_per_s for m in record.models}["nomic-embed-text:latest"] == 0
            generate = [body for path, body in double.requests if path == "/api/generate"]
            assert generate[0]["options"] == {"num_predict": 8}
        await backend.aclose()


async def test_drift_republishes_at_most_once_per_interval(tmp_path: Path) -> None:
    async with running_ollama_double() as double:
        backend = OllamaBackend(double.url)
        await backend.open()
        options: dict[str, Any] = {
            "backends": [backend],
            "warmup": False,
            "perf_check_interval": 0.05,
        }
        async with (
            start_node(tmp_path / "slow", perf_republish_interval=3600, **options) as slow,
            start_node(tmp_path / "quick", perf_republish_interval=0.2, **options) as quick,
            start_node(
                tmp_path / "requester", bootstrap=(slow.addrs()[0], quick.addrs()[0])
            ) as requester,
        ):
            chat = {"messages": [{"role": "user", "content": "hi"}]}
            seqs = (slow.record.seq, quick.record.seq)
            for node in (slow, quick):
                await requester.ask("llm.chat", chat, peer=node.peer_id_text)
            # The first measurement is a drift from "not measured".
            await eventually(lambda: quick.publisher.drift_republishes >= 1)
            await eventually(lambda: quick.record.seq > seqs[1])
            assert quick.record.record.perf["tokens_per_s"] > 0
            # The other node saw the same drift but published less than an
            # interval ago (at start): it waits.
            await trio.sleep(0.3)
            assert slow.publisher.drift_republishes == 0 and slow.record.seq == seqs[0]
        await backend.aclose()


async def test_models_removed_or_a_server_gone_leave_the_record_and_come_back(
    tmp_path: Path,
) -> None:
    async with running_ollama_double() as double:
        backend = OllamaBackend(double.url)
        await backend.open()
        async with start_node(
            tmp_path / "a", backends=[backend], warmup=False, model_refresh_interval=0.1
        ) as a:

            def served() -> set[str]:
                return {m.name for m in a.record.record.models}

            assert served() == {"qwen2.5:0.5b", "nomic-embed-text:latest"}
            double.hidden = {"nomic-embed-text:latest"}  # ollama rm
            await eventually(lambda: served() == {"qwen2.5:0.5b"})
            assert "llm.embed" not in a.record.record.caps
            double.down = True
            await eventually(lambda: served() == set())
            assert "llm.chat" not in a.record.record.caps
            double.down, double.hidden = False, set()
            await eventually(lambda: len(served()) == 2)
            assert {"llm.chat", "llm.embed"} <= set(a.record.record.caps)
        await backend.aclose()
