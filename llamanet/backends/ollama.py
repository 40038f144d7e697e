"""Ollama's native API as a backend: ``llm.chat``, ``llm.generate``, ``llm.embed``.

Endpoints used: ``GET /api/tags`` (models and digests), ``POST /api/show`` (family,
parameter size, quantization, context window, capabilities), ``POST /api/chat`` and
``POST /api/generate`` (streamed as newline-delimited JSON, one delta per line, the
last line ``done: true`` with token counts) and ``POST /api/embed``.  httpx is used
directly: it runs under trio, where the official ``ollama`` client's async mode
needs asyncio.

Failures map onto task error codes: server unreachable -> ``backend_error``
(:class:`BackendUnavailableError`), unknown model -> ``unsupported``, a prompt over
the context window -> ``too_large``, any other 4xx/5xx or a stream that ends
without its ``done`` line -> ``backend_error``, each with the server's message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, Final

import httpx

from llamanet.backends.base import Chunk, Completion, TaskRequest
from llamanet.backends.http_errors import http_error
from llamanet.backends.served_models import (
    CHAT,
    EMBED,
    GENERATE,
    ServedModels,
    input_field,
)
from llamanet.errors import (
    BackendError,
    BackendUnavailableError,
)
from llamanet.protocol.records import ModelInfo

log = logging.getLogger(__name__)

DEFAULT_URL: Final = "http://127.0.0.1:11434"


class OllamaBackend(ServedModels):
    """Serves the models of one Ollama server (call :meth:`open` first)."""

    name = "ollama"

    def __init__(self, url: str = DEFAULT_URL, *, timeout: float = 300.0) -> None:
        super().__init__()
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.url, timeout=httpx.Timeout(timeout, connect=5.0)
        )

    def __repr__(self) -> str:
        return f"OllamaBackend({self.url!r}, {len(self._models)} models)"

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- discovery of models ---------------------------------------------------------

    async def open(self) -> None:
        """Read the server's models; raises :class:`BackendUnavailableError` if it
        does not answer."""
        tags = await self._json("GET", "/api/tags")
        served: list[tuple[ModelInfo, set[str]]] = []
        for entry in tags.get("models", []):
            name = entry.get("name") or entry.get("model")
            if not isinstance(name, str):
                continue
            show = await self._json("POST", "/api/show", {"model": name})
            details = show.get("details") or entry.get("details") or {}
            info = show.get("model_info") or {}
            ctx = next((v for k, v in info.items() if k.endswith(".context_length")), 0)
            digest = str(entry.get("digest", ""))
            model = ModelInfo(
                name=name,
                digest=f"sha256:{digest}" if digest and ":" not in digest else digest,
                ctx=int(ctx) if isinstance(ctx, int) else 0,
                params=str(details.get("parameter_size", "")),
                quant=str(details.get("quantization_level", "")),
                family=str(details.get("family", "")),
            )
            abilities = set(show.get("capabilities") or ["completion"])
            model_caps = set()
            if "completion" in abilities:
                model_caps |= {CHAT, GENERATE}
            if "embedding" in abilities:
                model_caps.add(EMBED)
            served.append((model, model_caps))
        self._serve(served)
        log.info("ollama at %s serves %d models", self.url, len(served))

    # -- tasks ------------------------------------------------------------------------

    async def execute(self, request: TaskRequest) -> AsyncGenerator[Chunk | Completion, None]:
        model = self._pick(request.capability, request.model)
        if request.capability == EMBED:
            yield await self._embed(model, request)
            return
        if request.capability == GENERATE:
            prompt = input_field(request.input, "prompt", str)
            body: dict[str, Any] = {"model": model.name, "prompt": prompt, "stream": True}
            key = "response"
            path = "/api/generate"
        else:  # llm.chat and skills served by a chat model
            messages = input_field(request.input, "messages", list)
            body = {"model": model.name, "messages": messages, "stream": True}
            key = "message"
            path = "/api/chat"
        if request.params:
            options = dict(request.params)
            if "max_tokens" in options:
                options["num_predict"] = options.pop("max_tokens")
            body["options"] = options
        parts: list[str] = []
        final: dict[str, Any] | None = None
        async with aclosing(self._stream(path, body)) as lines:
            async for line in lines:
                delta = line.get(key, "")
                if isinstance(delta, dict):
                    delta = delta.get("content", "")
                if isinstance(delta, str) and delta:
                    parts.append(delta)
                    yield Chunk(delta)
                if line.get("done"):
                    # Read on to the end of the body: leaving httpx's line iterator
                    # early leaves its async generators to the garbage collector.
                    final = line
        if final is None:
            raise BackendError(f"{self.url}{path}: the stream ended before the model finished")
        yield Completion(
            output="".join(parts),
            usage={
                "prompt_tokens": int(final.get("prompt_eval_count", 0) or 0),
                "completion_tokens": int(final.get("eval_count", 0) or 0),
            },
            model_digest=model.digest,
            model=model.name,
        )

    async def _embed(self, model: ModelInfo, request: TaskRequest) -> Completion:
        texts = input_field(request.input, "texts", list)
        answer = await self._json("POST", "/api/embed", {"model": model.name, "input": texts})
        embeddings = answer.get("embeddings")
        if not isinstance(embeddings, list):
            raise BackendError(f"{self.url}/api/embed answered without embeddings")
        return Completion(
            output=embeddings,
            usage={"prompt_tokens": int(answer.get("prompt_eval_count", 0) or 0)},
            model_digest=model.digest,
            model=model.name,
        )

    # -- HTTP -------------------------------------------------------------------------

    async def _json(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        try:
            response = await self._http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise BackendUnavailableError(f"ollama at {self.url} unreachable: {exc}") from exc
        if response.status_code >= 400:
            raise http_error(path, response.status_code, response.text)
        try:
            data = response.json()
        except ValueError as exc:
            raise BackendError(f"{self.url}{path} answered with invalid JSON") from exc
        if not isinstance(data, dict):
            raise BackendError(
                f"{self.url}{path} answered with {type(data).__name__}, not an object"
            )
        return data

    async def _stream(self, path: str, body: Any) -> AsyncGenerator[dict[str, Any], None]:
        try:
            async with self._http.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise http_error(path, response.status_code, response.text)
                async for raw in response.aiter_lines():
                    if not raw.strip():
                        continue
                    try:
                        line = json.loads(raw)
                    except ValueError as exc:
                        raise BackendError(
                            f"{self.url}{path} sent a line that is not JSON"
                        ) from exc
                    if isinstance(line, dict) and "error" in line:
                        raise http_error(path, 500, json.dumps(line))
                    if isinstance(line, dict):
                        yield line
        except httpx.TransportError as exc:
            raise BackendUnavailableError(f"ollama at {self.url} failed mid-stream: {exc}") from exc
