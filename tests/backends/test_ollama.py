"""The Ollama backend against a real HTTP server that replays Ollama's API (a test
double: Ollama itself cannot be installed here)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from llamanet.backends.base import Chunk, Completion, TaskRequest
from llamanet.backends.ollama import OllamaBackend
from llamanet.backends.selection import HINT, build_backends, check_backend_spec, close_backends
from llamanet.errors import BackendError, BackendUnavailableError, ConfigError, SkillInputError

from ..nodes import start_node
from ..ollama_double import REPLY, running_ollama_double


def request(cap: str, input: object, **kw: object) -> TaskRequest:
    return TaskRequest(id=os.urandom(16), capability=cap, requested=cap, input=input, **kw)  # type: ignore[arg-type]


async def run(backend: OllamaBackend, req: TaskRequest) -> list[Chunk | Completion]:
    return [item async for item in backend.execute(req)]


async def test_models_digests_and_capabilities() -> None:
    async with running_ollama_double() as double:
        backend = OllamaBackend(double.url)
        await backend.open()
        models = {m.name: m for m in backend.models()}
        assert set(models) == {"qwen2.5:0.5b", "nomic-embed-text:latest"}
        qwen = models["qwen2.5:0.5b"]
        assert (qwen.digest, qwen.ctx, qwen.params, qwen.quant, qwen.family) == (
            "sha256:a8b0c5157701",
            32768,
            "494.03M",
            "Q4_K_M",
            "qwen2",
        )
        caps = backend.capabilities()
        assert {"llm.chat", "llm.generate", "llm.embed", "model.qwen2", "model.nomic_bert"} <= set(
            caps
        )
        await backend.aclose()


async def test_chat_streams_deltas_in_order_with_usage() -> None:
    async with running_ollama_double() as double:
        backend = OllamaBackend(double.url)
        await backend.open()
        hi = {"messages": [{"role": "user", "content": "hi"}]}
        items = await run(backend, request("llm.chat", hi, params={"temperature": 0}))
        chunks = [i.data for i in items if isinstance(i, Chunk)]
        assert chunks == REPLY
        done = items[-1]
        assert isinstance(done, Completion)
        assert done.output == "".join(REPLY)
        assert done.usage == {"prompt_tokens": 7, "completion_tokens": len(REPLY)}
        assert done.model_digest == "sha256:a8b0c5157701"
        path, body = double.requests[-1]
        assert path == "/api/chat" and body["options"] == {"temperature": 0} and body["stream"]
        await backend.aclose()


async def test_generate_and_embed() -> None:
    async with running_ollama_double() as double:
        backend = OllamaBackend(double.url)
        await backend.open()
        items = await run(backend, request("llm.generate", {"prompt": "say hello"}))
        assert items[-1] == Completion(
            output="".join(REPLY), usage={"prompt_tokens": 7, "completion_tokens": 5},
            model_digest="sha256:a8b0c5157701", model="qwen2.5:0.5b",
        )  # fmt: skip
        (embedded,) = await run(backend, request("llm.embed", {"texts": ["ab", "abcd"]}))
        assert isinstance(embedded, Completion)
        assert embedded.output == [[2.0, 0.5], [4.0, 0.5]]
        assert double.requests[-1][1]["model"] == "nomic-embed-text:latest"
        await backend.aclose()


async def test_model_constraints_choose_or_refuse() -> None:
    async with running_ollama_double() as double:
        backend = OllamaBackend(double.url)
        await backend.open()
        await run(backend, request("llm.chat", {"messages": []}, model={"family": "qwen2"}))
        with pytest.raises(BackendError) as info:
            await run(backend, request("llm.chat", {"messages": []}, model={"min_ctx": 100000}))
        assert info.value.code == "unsupported"
        with pytest.raises(SkillInputError):
            await run(backend, request("llm.chat", {"prompt": "not messages"}))
        await backend.aclose()


@pytest.mark.parametrize(
    ("status", "message", "code"),
    [
        (404, "model 'x' not found", "unsupported"),
        (500, "input length exceeds the context length", "too_large"),
        (400, "invalid options", "bad_request"),
        (500, "CUDA error: out of memory", "backend_error"),
    ],
)
async def test_server_errors_become_typed_task_errors(status: int, message: str, code: str) -> None:
    async with running_ollama_double() as double:
        backend = OllamaBackend(double.url)
        await backend.open()
        double.fail_with = (status, message)
        with pytest.raises(BackendError) as info:
            await run(backend, request("llm.chat", {"messages": []}))
        assert info.value.code == code
        assert message in str(info.value)
        await backend.aclose()


async def test_a_stream_cut_midway_is_an_error_not_a_hang() -> None:
    async with running_ollama_double() as double:
        backend = OllamaBackend(double.url, timeout=5)
        await backend.open()
        double.cut_stream = True
        with pytest.raises(BackendError):
            await run(backend, request("llm.chat", {"messages": []}))
        await backend.aclose()


async def test_server_down_is_unavailable() -> None:
    backend = OllamaBackend("http://127.0.0.1:9")
    with pytest.raises(BackendUnavailableError):
        await backend.open()
    await backend.aclose()


async def test_a_peer_streams_tokens_from_a_nodes_ollama(tmp_path: Path) -> None:
    async with running_ollama_double() as double:
        backend = OllamaBackend(double.url)
        await backend.open()
        async with (
            start_node(tmp_path / "a", backends=[backend]) as a,
            start_node(tmp_path / "b", bootstrap=(a.addrs()[0],)) as b,
        ):
            tokens: list[str] = []

            async def on_chunk(data: object) -> None:
                tokens.append(str(data))

            answer = await b.ask("llm.chat", {"messages": [{"role": "user", "content": "hi"}]},
                                 stream=True, on_chunk=on_chunk)  # fmt: skip
            assert answer.peer == a.peer_id_text
            assert tokens == REPLY
            assert answer.output == "".join(REPLY)
            assert answer.model_digest == "sha256:a8b0c5157701"
            record = (await b.find("llm.chat"))[0].record
            assert {m.name for m in record.models} == {"qwen2.5:0.5b", "nomic-embed-text:latest"}
        await backend.aclose()


async def test_backend_selection(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with running_ollama_double() as double:
        found = await build_backends(
            ("auto",), None, ollama_url=double.url, openai_url="http://127.0.0.1:9"
        )
        assert [b.name for b in found] == ["ollama", "builtin"]
        explicit = await build_backends((f"ollama:{double.url}",), ("math.eval",))
        assert [b.name for b in explicit] == ["ollama"]
        await close_backends([*found, *explicit])
    nothing = await build_backends(
        ("auto",), None, ollama_url="http://127.0.0.1:9", openai_url="http://127.0.0.1:9"
    )
    assert [b.name for b in nothing] == ["builtin"]
    assert HINT in caplog.text
    with pytest.raises(ConfigError, match="unreachable"):
        await build_backends(("ollama:http://127.0.0.1:9",), None)
    with pytest.raises(ConfigError, match="unknown backend"):
        check_backend_spec("gpt4all")
