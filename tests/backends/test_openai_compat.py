"""The node's OpenAI-compatible API, driven by the official ``openai`` client: a
requester node whose peer serves the tiny test model in-process."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import pytest
import trio

from llamanet.api.server import serve_api
from llamanet.backends.gguf_model import GgufBackend
from llamanet.backends.model_files import DigestCache
from llamanet.node.node import Node

from ..nodes import providers_of, start_node

pytestmark = pytest.mark.llm
T = TypeVar("T")


async def off_loop(call: Callable[[], T]) -> T:
    # The official client is synchronous (or asyncio): it runs in a thread here.
    return await trio.to_thread.run_sync(call)


@asynccontextmanager
async def swarm(tiny_gguf: Path, tmp_path: Path) -> AsyncIterator[tuple[Node, str, str, str]]:
    """(requester, API url, token, model name), the model served by a peer."""
    backend = GgufBackend(tiny_gguf, digest_cache=DigestCache(tmp_path / "digests.json"))
    await backend.open()
    try:
        async with (
            start_node(tmp_path / "worker", backends=[backend], warmup=False) as worker,
            start_node(tmp_path / "requester", bootstrap=(worker.addrs()[0],)) as requester,
            trio.open_nursery() as nursery,
        ):
            url = await nursery.start(serve_api, requester)
            token = json.loads(requester.config.api_file.read_text())["token"]
            await providers_of(requester, "llm.chat", 1)
            yield requester, url, token, backend.models()[0].name
            nursery.cancel_scope.cancel()
    finally:
        await backend.aclose()


async def test_the_official_openai_client_gets_the_swarms_model(
    tiny_gguf: Path, tmp_path: Path
) -> None:
    async with swarm(tiny_gguf, tmp_path) as (requester, url, token, name):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0, timeout=60)
        try:
            listed = await off_loop(client.models.list)
            (model,) = [m for m in listed.data if m.id == name]
            extra: dict[str, Any] = model.model_extra or {}
            assert extra["llamanet"]["peers"] != ["local"]  # served by the peer

            ask: dict[str, Any] = {
                "model": name,
                "messages": [{"role": "user", "content": "Say something."}],
                "max_tokens": 6,
                "temperature": 0,
                "seed": 1,
            }
            chat = await off_loop(lambda: client.chat.completions.create(**ask))
            text = chat.choices[0].message.content
            assert isinstance(text, str) and text
            assert chat.usage is not None and chat.usage.completion_tokens == 6

            def streamed() -> list[str]:
                chunks = client.chat.completions.create(**ask, stream=True)
                return [c.choices[0].delta.content or "" for c in chunks if c.choices]

            pieces = await off_loop(streamed)
            assert len([p for p in pieces if p]) > 1
            assert "".join(pieces) == text  # greedy, same seed: the same answer

            completion = await off_loop(
                lambda: client.completions.create(
                    model=name, prompt="Once upon a time", max_tokens=4, temperature=0
                )
            )
            assert isinstance(completion.choices[0].text, str)

            vectors = await off_loop(
                lambda: client.embeddings.create(model=name, input=["one", "two"])
            )
            assert [len(v.embedding) > 0 for v in vectors.data] == [True, True]

            # The family works as a model name too; an unknown model is a 404.
            family = extra["llamanet"]["family"]
            again = await off_loop(
                lambda: client.chat.completions.create(**{**ask, "model": family})
            )
            assert again.choices[0].message.content == text
            with pytest.raises(openai.NotFoundError, match="no model or family"):
                await off_loop(lambda: client.chat.completions.create(**{**ask, "model": "gpt-9"}))
        finally:
            client.close()

        wrong = openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0)
        try:
            with pytest.raises(openai.AuthenticationError):
                await off_loop(wrong.models.list)
        finally:
            wrong.close()
        # Bad bodies are 400s, and the node keeps serving.
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}
        ) as raw:
            bad = await raw.post("/v1/chat/completions", json={"messages": "hi"})
            assert bad.status_code == 400 and "messages" in bad.json()["error"]["message"]
        assert await requester.ask("llm.generate", {"prompt": "x"}, params={"max_tokens": 2})
