"""Any OpenAI-compatible server as a backend: llama.cpp's ``llama-server``,
llama-cpp-python's server, vLLM, LM Studio, LocalAI.

Endpoints used: ``GET /v1/models``; ``POST /v1/chat/completions`` (``llm.chat`` and
agents) and ``/v1/completions`` (``llm.generate``), streamed as server-sent events
when the requester asked for streaming; ``POST /v1/embeddings`` (``llm.embed``).
httpx is used directly: it runs under trio, where the official ``openai`` client
needs asyncio.

What ``/v1/models`` does not say is filled in where the server allows it: when a
model id (or llama-server's ``/props`` ``model_path``) names a GGUF file on this
machine, its header gives context window, size, quantization and family, and the
file's sha256 is its digest; llama-server's ``meta`` gives ``n_ctx_train`` and
``n_params``.  Prompts are counted with the server's tokenizer endpoint when it has
one (llama-server ``/tokenize``, llama-cpp-python ``/extras/tokenize/count``), so
a prompt that cannot fit the context window is refused as ``too_large`` before the
server sees it: llama-cpp-python 0.3.36 answers such a prompt with an unrelated
numpy error (or, streaming, an empty 200 body).

The API key (``LLAMANET_OPENAI_API_KEY``, else ``OPENAI_API_KEY``) is sent as a
bearer token and appears in no log, message or repr.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from pathlib import Path
from typing import Any, Final

import httpx
import trio

from llamanet.backends.base import Chunk, Completion, TaskRequest
from llamanet.backends.http_errors import http_error
from llamanet.backends.model_files import (
    DigestCache,
    params_label,
    read_gguf_info,
)
from llamanet.backends.served_models import (
    CHAT,
    EMBED,
    GENERATE,
    ServedModels,
    input_field,
    mean_pooled,
)
from llamanet.errors import (
    BackendError,
    BackendUnavailableError,
    ContextOverflowError,
    ModelFileError,
)
from llamanet.protocol.records import ModelInfo

log = logging.getLogger(__name__)

DEFAULT_URL: Final = "http://127.0.0.1:8080"
KEY_ENVS: Final = ("LLAMANET_OPENAI_API_KEY", "OPENAI_API_KEY")
EMBED_PROBE_TIMEOUT: Final = 5.0
_PASSED_AS_IS: Final = ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop")


class OpenAIBackend(ServedModels):
    """Serves the models of one OpenAI-compatible server (call :meth:`open` first)."""

    name = "openai"

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 300.0,
        digest_cache: DigestCache | None = None,
    ) -> None:
        super().__init__()
        base = url.rstrip("/")
        self.url = base.removesuffix("/v1")
        key = api_key or next((os.environ[k] for k in KEY_ENVS if os.environ.get(k)), None)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=httpx.Timeout(timeout, connect=5.0)
        )
        self._digests = digest_cache or DigestCache(None)
        self._embedding: dict[str, bool] = {}
        """Whether each model answered an embedding probe (asked once per model)."""
        self._tokenize: str | None = None
        """The server's token-counting endpoint, if it has one."""

    def __repr__(self) -> str:
        return f"OpenAIBackend({self.url!r}, {len(self._models)} models)"

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- discovery of models ---------------------------------------------------------

    async def open(self) -> None:
        """Read the server's models; :class:`BackendUnavailableError` if it does not
        answer as an OpenAI-compatible server."""
        listing = await self._json("GET", "/v1/models")
        entries = listing.get("data")
        if not isinstance(entries, list):
            raise BackendUnavailableError(f"{self.url}/v1/models did not list models")
        props = await self._optional_json("GET", "/props")
        served: list[tuple[ModelInfo, set[str]]] = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                continue
            model = await self._describe(entry, props)
            embeds = self._embedding.get(model.name)
            if embeds is None:
                embeds = self._embedding[model.name] = await self._embeds(model.name)
            served.append((model, {CHAT, GENERATE, EMBED} if embeds else {CHAT, GENERATE}))
        self._serve(served)
        self._tokenize = await self._find_tokenizer()
        log.info("OpenAI-compatible server at %s serves %d models", self.url, len(served))

    async def _describe(self, entry: dict[str, Any], props: dict[str, Any]) -> ModelInfo:
        name = entry["id"]
        meta: dict[str, Any] = entry["meta"] if isinstance(entry.get("meta"), dict) else {}
        ctx = _int(meta.get("n_ctx_train")) or _int(
            (props.get("default_generation_settings") or {}).get("n_ctx")
        )
        params = params_label(_int(meta.get("n_params")))
        quant = family = digest = ""
        path = _local_file(name) or _local_file(str(props.get("model_path", "")))
        if path is not None:
            try:
                info = read_gguf_info(path)
                ctx = ctx or info.context_length
                params = params or info.params_label
                quant, family = info.file_type, info.architecture
                # Hashing gigabytes must not stall the node's event loop.
                digest = await trio.to_thread.run_sync(self._digests.digest, path)
            except ModelFileError as exc:
                log.warning("model %s: %s", name, exc)
        return ModelInfo(
            name=name, digest=digest, ctx=ctx, params=params, quant=quant, family=family
        )

    async def _embeds(self, model: str) -> bool:
        """Whether ``model`` answers embeddings: servers only say so by answering."""
        try:
            response = await self._http.post(
                "/v1/embeddings",
                json={"model": model, "input": ["probe"]},
                timeout=EMBED_PROBE_TIMEOUT,
            )
        except httpx.HTTPError:  # a probe: no answer means no embeddings
            return False
        return response.status_code == 200 and bool(_vectors(_safe_json(response)))

    async def _find_tokenizer(self) -> str | None:
        probes = (("/tokenize", {"content": "a"}), ("/extras/tokenize/count", {"input": "a"}))
        for path, body in probes:
            try:
                response = await self._http.post(path, json=body, timeout=EMBED_PROBE_TIMEOUT)
            except httpx.HTTPError:  # a probe: try the next route
                continue
            if response.status_code == 200:
                return path
        return None

    # -- tasks ------------------------------------------------------------------------

    async def execute(self, request: TaskRequest) -> AsyncGenerator[Chunk | Completion, None]:
        model = self._pick(request.capability, request.model)
        if request.capability == EMBED:
            yield await self._embed(model, request)
            return
        body: dict[str, Any] = {"model": model.name}
        if request.capability == GENERATE:
            prompt = input_field(request.input, "prompt", str)
            body["prompt"] = prompt
            path, texts = "/v1/completions", [prompt]
        else:  # llm.chat and skills served by a chat model
            messages = input_field(request.input, "messages", list)
            body["messages"] = messages
            path = "/v1/chat/completions"
            texts = [str(m.get("content", "")) for m in messages if isinstance(m, dict)]
        body.update(_options(request.params))
        await self._check_fits(model, texts, body.get("max_tokens"))
        if not request.stream:
            answer = await self._json("POST", path, body)
            yield _completion(answer, model, path)
            return
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        parts: list[str] = []
        usage: dict[str, float] = {}
        finished = False
        async with aclosing(self._events(path, body)) as events:
            async for event in events:
                if isinstance(event.get("usage"), dict):
                    usage = _usage(event["usage"])
                for choice in event.get("choices") or ():
                    delta = _delta_text(choice)
                    if delta:
                        parts.append(delta)
                        yield Chunk(delta)
                    if choice.get("finish_reason"):
                        finished = True
        if not finished:
            raise BackendError(f"{self.url}{path}: the stream ended before the model finished")
        # Servers that leave usage out of streams (llama-cpp-python) send one delta
        # per generated token, so the deltas are the completion count.
        usage.setdefault("completion_tokens", len(parts))
        yield Completion(
            output="".join(parts), usage=usage, model_digest=model.digest, model=model.name
        )

    async def _check_fits(self, model: ModelInfo, texts: list[str], max_tokens: Any) -> None:
        if not model.ctx or self._tokenize is None:
            return
        # A token is at least one byte: a prompt with fewer bytes than the window
        # has room (a little margin per message for template and special tokens),
        # and the usual short prompt costs no extra round trip to the server.
        budget = max_tokens if isinstance(max_tokens, int) else 0
        if sum(len(t.encode("utf-8")) + 16 for t in texts) + budget <= model.ctx:
            return
        count = 0
        for text in texts:
            count += await self._count_tokens(model, text)
        wanted = count + (max_tokens if isinstance(max_tokens, int) else 0)
        if count >= model.ctx or wanted > model.ctx:
            raise ContextOverflowError(
                f"a prompt of {count} tokens"
                + (f" plus {max_tokens} to generate" if wanted > count else "")
                + f" exceeds {model.name}'s context window of {model.ctx} tokens"
            )

    async def _count_tokens(self, model: ModelInfo, text: str) -> int:
        if self._tokenize == "/tokenize":
            answer = await self._json("POST", "/tokenize", {"content": text})
            return len(answer.get("tokens") or ())
        answer = await self._json(
            "POST", "/extras/tokenize/count", {"model": model.name, "input": text}
        )
        return _int(answer.get("count"))

    async def _embed(self, model: ModelInfo, request: TaskRequest) -> Completion:
        texts = input_field(request.input, "texts", list)
        answer = await self._json("POST", "/v1/embeddings", {"model": model.name, "input": texts})
        vectors = _vectors(answer)
        if vectors is None or len(vectors) != len(texts):
            raise BackendError(f"{self.url}/v1/embeddings answered without one vector per text")
        return Completion(
            output=vectors,
            usage=_usage(answer.get("usage") or {}),
            model_digest=model.digest,
            model=model.name,
        )

    # -- HTTP -------------------------------------------------------------------------

    async def _json(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        try:
            response = await self._http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise BackendUnavailableError(f"{self.url} unreachable: {exc}") from exc
        if response.status_code >= 400:
            raise http_error(path, response.status_code, response.text)
        data = _safe_json(response)
        if data is None:
            raise BackendError(f"{self.url}{path} answered with something not a JSON object")
        return data

    async def _optional_json(self, method: str, path: str) -> dict[str, Any]:
        """``path``'s answer, or ``{}`` where the server does not have it."""
        try:
            response = await self._http.request(method, path, timeout=EMBED_PROBE_TIMEOUT)
        except httpx.HTTPError:  # optional route: its absence is the answer
            return {}
        return (_safe_json(response) or {}) if response.status_code == 200 else {}

    async def _events(self, path: str, body: Any) -> AsyncGenerator[dict[str, Any], None]:
        """The JSON objects of a server-sent event stream, up to ``[DONE]``."""
        try:
            async with self._http.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise http_error(path, response.status_code, response.text)
                done = False
                async for line in response.aiter_lines():
                    if done or not line.startswith("data:"):
                        continue  # read on to the end; comments and blank lines
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        continue
                    try:
                        event = json.loads(data)
                    except ValueError as exc:
                        raise BackendError(
                            f"{self.url}{path} sent an event that is not JSON"
                        ) from exc
                    if isinstance(event, dict) and "error" in event:
                        raise http_error(path, 500, json.dumps(event))
                    if isinstance(event, dict):
                        yield event
        except httpx.ConnectError as exc:
            raise BackendUnavailableError(f"{self.url} unreachable: {exc}") from exc
        except httpx.TransportError as exc:
            raise BackendUnavailableError(
                f"{self.url}{path}: the stream was cut mid-way: {exc}"
            ) from exc


# -- helpers --------------------------------------------------------------------------


def _options(params: Mapping[str, Any]) -> dict[str, Any]:
    # The common params have the OpenAI names already; others go through as the
    # server's own extensions (llama.cpp's min_p, repeat_penalty, ...).
    options = {k: params[k] for k in _PASSED_AS_IS if k in params}
    options.update({k: v for k, v in params.items() if k not in options})
    for reserved in ("model", "messages", "prompt", "stream", "stream_options"):
        options.pop(reserved, None)
    return options


def _completion(answer: dict[str, Any], model: ModelInfo, path: str) -> Completion:
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise BackendError(f"{path}: the answer has no choices")
    choice = choices[0]
    message = choice.get("message")
    text = message.get("content") if isinstance(message, dict) else choice.get("text")
    return Completion(
        output=text if isinstance(text, str) else "",
        usage=_usage(answer.get("usage") or {}),
        model_digest=model.digest,
        model=model.name,
    )


def _delta_text(choice: Any) -> str:
    if not isinstance(choice, dict):
        return ""
    delta = choice.get("delta")
    text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
    return text if isinstance(text, str) else ""


def _usage(raw: Any) -> dict[str, float]:
    if not isinstance(raw, dict):
        return {}
    return {
        k: raw[k]
        for k in ("prompt_tokens", "completion_tokens")
        if isinstance(raw.get(k), int | float) and not isinstance(raw.get(k), bool)
    }


def _vectors(answer: dict[str, Any] | None) -> list[list[float]] | None:
    if not answer or not isinstance(answer.get("data"), list):
        return None
    vectors = []
    for item in answer["data"]:
        vector = item.get("embedding") if isinstance(item, dict) else None
        if not isinstance(vector, list) or not vector:
            return None
        vectors.append(mean_pooled(vector))
    return vectors


def _safe_json(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:  # not JSON: callers treat it as no data
        return None
    return data if isinstance(data, dict) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _local_file(name: str) -> Path | None:
    if not name or len(name) > 4096:
        return None
    path = Path(name).expanduser()
    try:
        return path if path.is_absolute() and path.is_file() else None
    except OSError:  # unreadable path: the name is a model name, not a file
        return None
