"""The in-process GGUF backend (llama-cpp-python) with the tiny random-weight model."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest
import trio

from llamanet.backends.base import Chunk, Completion, TaskRequest
from llamanet.backends.gguf_model import GgufBackend
from llamanet.backends.model_files import DigestCache
from llamanet.errors import (
    BackendRequestError,
    ContextOverflowError,
    ModelFileError,
    ModelNotFoundError,
)

from ..nodes import start_node

pytestmark = pytest.mark.llm


def request(cap: str, input: object, **kw: object) -> TaskRequest:
    fields: dict[str, object] = {"params": {"max_tokens": 8}, "stream": True, **kw}
    return TaskRequest(id=b"t" * 16, capability=cap, requested=cap, input=input, **fields)  # type: ignore[arg-type]


def chat(text: str, **kw: object) -> TaskRequest:
    return request("llm.chat", {"messages": [{"role": "user", "content": text}]}, **kw)


async def run(backend: GgufBackend, req: TaskRequest) -> list[Chunk | Completion]:
    with trio.fail_after(60):
        return [item async for item in backend.execute(req)]


@pytest.fixture
async def model(tiny_gguf: Path, tmp_path: Path) -> AsyncIterator[GgufBackend]:
    backend = GgufBackend(tiny_gguf, digest_cache=DigestCache(tmp_path / "digests.json"))
    await backend.open()
    yield backend
    await backend.aclose()


def generation_threads() -> int:
    return sum(t.name == "llamanet-gguf" for t in threading.enumerate())


async def test_model_entry_and_capabilities(model: GgufBackend, tiny_gguf: Path) -> None:
    (entry,) = model.models()
    digest = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()  # noqa: ASYNC240 (9 MB, once)
    assert entry.digest == f"sha256:{digest}"
    assert (entry.name, entry.ctx, entry.params, entry.quant, entry.family) == (
        "tiny-llama",
        512,
        "4.2M",
        "F16",
        "llama",
    )
    assert list(model.capabilities()) == ["llm.chat", "llm.generate", "llm.embed", "model.llama"]


async def test_the_digest_is_computed_once_per_file_version(
    tiny_gguf: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(tiny_gguf.read_bytes())  # noqa: ASYNC240
    cache_file = tmp_path / "digests.json"
    first = DigestCache(cache_file)
    digest = first.digest(copy)
    assert first.hashed == 1
    second = DigestCache(cache_file)  # a later start of the node
    assert second.digest(copy) == digest and second.hashed == 0
    with copy.open("r+b") as file:
        file.seek(-1, os.SEEK_END)
        last = file.read(1)
        file.seek(-1, os.SEEK_END)
        file.write(bytes([last[0] ^ 1]))
    assert second.digest(copy) != digest and second.hashed == 1


async def test_chat_and_generate_stream_tokens_in_order(model: GgufBackend) -> None:
    *chunks, done = await run(model, chat("hello", params={"max_tokens": 10}))
    assert isinstance(done, Completion) and len(chunks) == 10
    assert done.output == "".join(str(c.data) for c in chunks if isinstance(c, Chunk))
    assert done.usage["completion_tokens"] == 10 and done.usage["prompt_tokens"] > 0
    assert done.model_digest == model.models()[0].digest and done.model == "tiny-llama"
    *chunks, done = await run(model, request("llm.generate", {"prompt": "Once"}))
    assert isinstance(done, Completion) and len(chunks) == 8
    # Seeded sampling is repeatable: the plumbing passes params through.
    seeded = chat("same", params={"max_tokens": 6, "seed": 7, "temperature": 0.8})
    assert (await run(model, seeded))[-1] == (await run(model, seeded))[-1]


async def test_embeddings(model: GgufBackend) -> None:
    (done,) = await run(model, request("llm.embed", {"texts": ["a", "b c"]}))
    assert isinstance(done, Completion)
    assert [len(v) for v in done.output] == [64, 64] and done.output[0] != done.output[1]
    # Each text's vector does not depend on the texts embedded with it.
    (alone,) = await run(model, request("llm.embed", {"texts": ["b c"]}))
    assert isinstance(alone, Completion) and alone.output[0] == done.output[1]
    assert done.usage == {"prompt_tokens": 2 + 3}  # BOS included, as llama.cpp counts
    # Embedding leaves the context as it was: generation still works.
    assert isinstance((await run(model, chat("after")))[-1], Completion)


async def test_usage_counts_what_the_model_evaluated(model: GgufBackend) -> None:
    hello = [{"role": "user", "content": "hello there"}]
    *_, done = await run(model, chat("hello there", params={"max_tokens": 9}))
    assert isinstance(done, Completion)
    # llama-cpp-python reports usage when not streaming: the same numbers.
    reference = await trio.to_thread.run_sync(
        lambda: model._llama.create_chat_completion(messages=hello, max_tokens=9)
    )
    assert done.usage == {
        "prompt_tokens": reference["usage"]["prompt_tokens"],  # chat template included
        "completion_tokens": 9,
    }


async def test_generate_without_max_tokens_is_not_cut_at_16(model: GgufBackend) -> None:
    seen = 0
    endless = request("llm.generate", {"prompt": "Once"}, params={})
    async with aclosing(model.execute(endless)) as items:
        async for _ in items:
            seen += 1
            if seen == 20:
                break
    assert seen == 20


async def test_cancelling_while_llama_cpp_holds_back_pieces(model: GgufBackend) -> None:
    # With this seed the random model emits a token of invalid UTF-8 near token
    # 130: llama-cpp-python streams nothing more until the generation ends, and
    # the rest of 400 tokens takes it about 8 s.
    stalled = request("llm.generate", {"prompt": "Once"}, params={"max_tokens": 400, "seed": 3})
    started = trio.current_time()
    with trio.move_on_after(1.0):
        await run(model, stalled)
    assert trio.current_time() - started < 2.0 and generation_threads() == 0
    *chunks, done = await run(model, chat("next", params={"max_tokens": 4}))
    assert isinstance(done, Completion) and len(chunks) == 4


async def test_bad_requests_are_typed_errors(model: GgufBackend) -> None:
    with pytest.raises(ContextOverflowError, match="context window of 512"):
        await run(model, chat("word " * 600))
    with pytest.raises(ModelNotFoundError):
        await run(model, chat("hi", model={"name": "other"}))
    with pytest.raises(BackendRequestError, match="unknown parameter"):
        await run(model, chat("hi", params={"mirostat_bogus": 1}))
    with pytest.raises(BackendRequestError, match="wrong type"):
        await run(model, chat("hi", params={"max_tokens": "many"}))
    with pytest.raises(BackendRequestError, match="stop"):
        await run(model, chat("hi", params={"stop": ["ok", 3]}))
    assert isinstance((await run(model, chat("still fine")))[-1], Completion)


async def test_cancelling_mid_stream_stops_the_thread_and_frees_the_model(
    model: GgufBackend,
) -> None:
    seen = 0
    async with aclosing(model.execute(chat("go", params={"max_tokens": 400}))) as items:
        async for _ in items:
            seen += 1
            if seen == 3:
                break
    assert generation_threads() == 0
    # Cancelled from outside (a deadline), too.
    with trio.move_on_after(0.05):
        await run(model, chat("go", params={"max_tokens": 400}))
    assert generation_threads() == 0
    *chunks, done = await run(model, chat("next", params={"max_tokens": 4}))
    assert isinstance(done, Completion) and len(chunks) == 4


async def test_concurrent_tasks_take_turns_on_the_model(model: GgufBackend) -> None:
    results: list[list[Chunk | Completion]] = []

    async def one(text: str) -> None:
        results.append(await run(model, chat(text, params={"max_tokens": 20})))

    async with trio.open_nursery() as nursery:
        for text in ("one", "two", "three"):
            nursery.start_soon(one, text)
    assert [len(r) for r in results] == [21, 21, 21]


async def test_missing_or_foreign_files_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "absent.gguf"
    with pytest.raises(ModelFileError, match=str(missing)):
        await GgufBackend(missing).open()
    foreign = tmp_path / "notes.gguf"
    foreign.write_text("not a model")
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        await GgufBackend(foreign).open()


async def test_a_peer_streams_tokens_from_a_nodes_in_process_model(
    model: GgufBackend, tmp_path: Path
) -> None:
    async with (
        start_node(tmp_path / "a", backends=[model]) as a,
        start_node(tmp_path / "b", bootstrap=(a.addrs()[0],)) as b,
    ):
        tokens: list[str] = []

        async def on_chunk(data: object) -> None:
            tokens.append(str(data))

        hello = {"messages": [{"role": "user", "content": "hello"}]}
        answer = await b.ask(
            "llm.chat", hello, params={"max_tokens": 6}, stream=True, on_chunk=on_chunk
        )
        assert answer.peer == a.peer_id_text and "".join(tokens) == answer.output
        assert len(tokens) == 6
        (record,) = await b.find("model.llama")
        assert record.record.models[0].digest == model.models()[0].digest
