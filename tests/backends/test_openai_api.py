"""The OpenAI-compatible backend against a real server process (llama-cpp-python's
server) running a real Llama-architecture model with random weights."""

from __future__ import annotations

import hashlib
import logging
from contextlib import aclosing
from pathlib import Path

import pytest
import trio

from llamanet.backends.base import Chunk, Completion, TaskRequest
from llamanet.backends.model_files import DigestCache
from llamanet.backends.openai_api import OpenAIBackend
from llamanet.backends.selection import build_backends, check_backend_spec, close_backends
from llamanet.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigError,
    ContextOverflowError,
    ModelNotFoundError,
)
from llamanet.testing.llama_server import LlamaServer, running_llama_server

from ..nodes import start_node

pytestmark = pytest.mark.llm

CLOSED = "http://127.0.0.1:9"


def chat(text: str, **kw: object) -> TaskRequest:
    return request("llm.chat", {"messages": [{"role": "user", "content": text}]}, **kw)


def request(cap: str, input: object, **kw: object) -> TaskRequest:
    fields: dict[str, object] = {"params": {"max_tokens": 8}, "stream": True, **kw}
    return TaskRequest(id=b"t" * 16, capability=cap, requested=cap, input=input, **fields)  # type: ignore[arg-type]


async def run(backend: OpenAIBackend, req: TaskRequest) -> list[Chunk | Completion]:
    with trio.fail_after(30):
        return [item async for item in backend.execute(req)]


async def opened(url: str, **kw: object) -> OpenAIBackend:
    backend = OpenAIBackend(url, **kw)  # type: ignore[arg-type]
    try:
        await backend.open()
    except BaseException:
        await backend.aclose()
        raise
    return backend


async def test_models_with_digest_and_header_facts(
    llama_server: LlamaServer, tiny_gguf: Path, tmp_path: Path
) -> None:
    cache = DigestCache(tmp_path / "digests.json")
    backend = await opened(f"{llama_server.url}/v1", digest_cache=cache)
    (model,) = backend.models()
    assert model.name == str(tiny_gguf)
    digest = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()  # noqa: ASYNC240 (9 MB, once)
    assert model.digest == f"sha256:{digest}"
    assert (model.ctx, model.params, model.quant, model.family) == (512, "4.2M", "F16", "llama")
    assert set(backend.capabilities()) == {"llm.chat", "llm.generate", "llm.embed", "model.llama"}
    again = await opened(llama_server.url, digest_cache=DigestCache(tmp_path / "digests.json"))
    assert again.models() == backend.models()
    await backend.aclose()
    await again.aclose()


async def test_chat_streams_tokens_in_order_with_usage(llama_server: LlamaServer) -> None:
    backend = await opened(llama_server.url)
    items = await run(backend, chat("hello", params={"max_tokens": 12}))
    *chunks, done = items
    assert all(isinstance(c, Chunk) for c in chunks) and isinstance(done, Completion)
    assert len(chunks) == 12
    assert done.output == "".join(str(c.data) for c in chunks if isinstance(c, Chunk))
    assert done.usage["completion_tokens"] == 12
    assert done.model_digest == backend.models()[0].digest
    # Without streaming the server reports the prompt too.
    (whole,) = await run(backend, chat("hello", stream=False))
    assert isinstance(whole, Completion) and whole.output
    assert whole.usage["completion_tokens"] == 8 and whole.usage["prompt_tokens"] > 0
    await backend.aclose()


async def test_generate_and_embed(llama_server: LlamaServer) -> None:
    backend = await opened(llama_server.url)
    *chunks, done = await run(backend, request("llm.generate", {"prompt": "Once upon"}))
    assert isinstance(done, Completion) and len(chunks) == 8
    assert done.output == "".join(str(c.data) for c in chunks if isinstance(c, Chunk))
    (embedded,) = await run(backend, request("llm.embed", {"texts": ["one", "two words"]}))
    assert isinstance(embedded, Completion)
    assert [len(v) for v in embedded.output] == [64, 64]
    assert embedded.output[0] != embedded.output[1]
    await backend.aclose()


async def test_constraints_and_context_overflow_are_typed_errors(
    llama_server: LlamaServer,
) -> None:
    backend = await opened(llama_server.url)
    with pytest.raises(ModelNotFoundError, match="qwen2"):
        await run(backend, chat("hi", model={"family": "qwen2"}))
    with pytest.raises(ModelNotFoundError):
        await run(backend, chat("hi", model={"min_ctx": 100_000}))
    with pytest.raises(ContextOverflowError, match="context window of 512"):
        await run(backend, chat("word " * 700))
    # The server is still fine.
    assert isinstance((await run(backend, chat("hi")))[-1], Completion)
    await backend.aclose()


async def test_cancelling_mid_stream_leaves_the_server_usable(llama_server: LlamaServer) -> None:
    backend = await opened(llama_server.url)
    seen = 0
    with trio.fail_after(30):
        async with aclosing(backend.execute(chat("go on", params={"max_tokens": 300}))) as items:
            async for _ in items:
                seen += 1
                if seen == 3:
                    break
    assert seen == 3
    # The server notices the closed connection and stops generating; the next
    # request is served whole.
    *chunks, done = await run(backend, chat("again", params={"max_tokens": 5}))
    assert isinstance(done, Completion) and len(chunks) == 5
    await backend.aclose()


async def test_a_keyed_server_then_its_crash_mid_stream(
    tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-test-5ecret-value"
    caplog.set_level(logging.DEBUG)
    with running_llama_server(tiny_gguf, api_key=secret) as server:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        monkeypatch.delenv("LLAMANET_OPENAI_API_KEY", raising=False)
        with pytest.raises(BackendError, match="401") as refused:
            await opened(server.url)
        monkeypatch.setenv("LLAMANET_OPENAI_API_KEY", secret)
        backend = await opened(server.url)
        assert secret not in repr(backend) and secret not in str(refused.value)

        got: list[object] = []

        async def consume() -> None:
            async for item in backend.execute(chat("tell me", params={"max_tokens": 400})):
                got.append(item)
                if len(got) == 2:
                    server.kill()

        with pytest.raises(BackendError) as cut, trio.fail_after(30):
            await consume()
        assert isinstance(cut.value, BackendUnavailableError) or "ended" in str(cut.value)
        assert 2 <= len(got) < 400
        with pytest.raises(BackendUnavailableError, match="unreachable"):
            await run(backend, chat("anyone?"))
        await backend.aclose()
    assert secret not in caplog.text


async def test_selection_finds_the_server_on_auto_and_refuses_what_does_not_work(
    llama_server: LlamaServer, tmp_path: Path
) -> None:
    found = await build_backends(("auto",), None, ollama_url=CLOSED, openai_url=llama_server.url)
    assert [b.name for b in found] == ["openai", "builtin"]
    explicit = await build_backends((f"openai:{llama_server.url}/v1",), None)
    assert [b.name for b in explicit] == ["openai"]
    await close_backends([*found, *explicit])
    with pytest.raises(ConfigError, match="unreachable"):
        await build_backends((f"openai:{CLOSED}",), None)
    missing = tmp_path / "absent.gguf"
    with pytest.raises(ConfigError, match=str(missing)):
        await build_backends((f"gguf:{missing}",), None)
    with pytest.raises(ConfigError, match="needs the model file"):
        check_backend_spec("gguf")


async def test_a_peer_streams_tokens_from_a_nodes_model_server_and_keeps_a_session(
    llama_server: LlamaServer, tmp_path: Path
) -> None:
    backend = await opened(llama_server.url)
    async with (
        start_node(tmp_path / "a", backends=[backend]) as a,
        start_node(tmp_path / "b", bootstrap=(a.addrs()[0],)) as b,
    ):
        tokens: list[str] = []

        async def on_chunk(data: object) -> None:
            tokens.append(str(data))

        hello = {"messages": [{"role": "user", "content": "hello"}]}
        answer = await b.ask(
            "llm.chat", hello, params={"max_tokens": 6}, stream=True, on_chunk=on_chunk
        )
        assert answer.peer == a.peer_id_text
        assert len(tokens) == 6 and "".join(tokens) == answer.output
        assert answer.model_digest == backend.models()[0].digest
        (record,) = await b.find("llm.chat")
        assert [(m.name, m.digest) for m in record.record.models] == [
            (m.name, m.digest) for m in backend.models()
        ]

        # A session: the second turn carries only itself, the model sees both.
        turn = {"messages": [{"role": "user", "content": "a first question"}]}
        first = await b.ask("llm.chat", turn, params={"max_tokens": 4}, session="s")
        follow = {"messages": [{"role": "user", "content": "and a second one"}]}
        second = await b.ask("llm.chat", follow, params={"max_tokens": 4}, session="s")
        assert second.usage["prompt_tokens"] > first.usage["prompt_tokens"] + 5
    await backend.aclose()
