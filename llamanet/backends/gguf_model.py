"""A GGUF model file run in-process by llama-cpp-python (``--backend gguf:PATH``).

llama-cpp-python is an optional extra (``pip install 'llamanet[gguf]'``), imported
only when such a backend opens, so the base install stays light.  Its calls block
and a ``Llama`` object is not thread-safe: each generation runs in a worker thread,
one at a time per model (a trio lock), and hands its tokens to the trio side as
they come.  Cancelling the consumer tells the thread to stop at the next token and
waits for it to have stopped before the model is used again.

The model entry comes from the file's GGUF header (family, size, quantization) and
its sha256, computed once and cached by path, modification time and size.

The context is created without embeddings and switched to embeddings for the
length of an ``llm.embed`` task: with embeddings on, llama.cpp runs the output
layer on every prompt token of every generation.  Texts are embedded one per call:
llama-cpp-python 0.3.36 reads the per-token vectors of every text after the first
in a batch from the wrong offset.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio

from llamanet.backends.base import Chunk, Completion, TaskRequest
from llamanet.backends.model_files import DigestCache, read_gguf_info
from llamanet.backends.served_models import (
    EMBED,
    GENERATE,
    MODEL_TASKS,
    family_tag,
    input_field,
    mean_pooled,
)
from llamanet.errors import (
    BackendError,
    BackendRequestError,
    BackendUnavailableError,
    ContextOverflowError,
    ModelFileError,
    ModelNotFoundError,
    SkillInputError,
)
from llamanet.protocol.records import ModelInfo, model_meets

log = logging.getLogger(__name__)

DEFAULT_MAX_CTX: Final = 4096
INSTALL_HINT: Final = "pip install 'llamanet[gguf]'"
_SAMPLING: Final[dict[str, type | tuple[type, ...]]] = {
    "max_tokens": int,
    "temperature": (int, float),
    "top_p": (int, float),
    "top_k": int,
    "seed": int,
    "stop": (str, list),
    "min_p": (int, float),
    "repeat_penalty": (int, float),
    "presence_penalty": (int, float),
    "frequency_penalty": (int, float),
}


@dataclass(frozen=True, slots=True)
class _Failed:
    """An exception raised in the generation thread, carried to the trio side."""

    error: BaseException


_END: Final = object()


class GgufBackend:
    """Serves one GGUF file in-process (call :meth:`open` first)."""

    name = "gguf"

    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        digest_cache: DigestCache | None = None,
    ) -> None:
        self.path = Path(path).expanduser()
        self._n_ctx = n_ctx
        self._n_threads = n_threads or max(1, (os.cpu_count() or 2))
        self._digests = digest_cache or DigestCache(None)
        self._llama: Any = None  # llama_cpp.Llama: untyped upstream
        self._model: ModelInfo | None = None
        self._lock = trio.Lock()
        # llama_cpp functions, bound in open() so the module imports without it.
        self._set_embeddings: Callable[[Any, bool], None] | None = None
        self._counter_list: Callable[[list[Any]], Any] = list

    def __repr__(self) -> str:
        return f"GgufBackend({str(self.path)!r})"

    async def open(self) -> None:
        """Read the header, hash the file (cached) and load the model."""
        try:
            import llama_cpp
        except ImportError as exc:
            raise BackendUnavailableError(
                f"--backend gguf needs llama-cpp-python: {INSTALL_HINT}"
            ) from exc
        info = await trio.to_thread.run_sync(read_gguf_info, self.path)
        digest = await trio.to_thread.run_sync(self._digests.digest, self.path)
        n_ctx = self._n_ctx or min(info.context_length or DEFAULT_MAX_CTX, DEFAULT_MAX_CTX)

        def load() -> Any:
            return llama_cpp.Llama(
                model_path=str(self.path),
                n_ctx=n_ctx,
                n_threads=self._n_threads,
                verbose=False,
            )

        try:
            self._llama = await trio.to_thread.run_sync(load)
        except (ValueError, RuntimeError) as exc:
            raise ModelFileError(f"llama.cpp cannot load {self.path}: {exc}") from exc
        self._set_embeddings = llama_cpp.llama_set_embeddings
        self._counter_list = llama_cpp.LogitsProcessorList
        self._model = ModelInfo(
            name=info.name or self.path.stem,
            digest=digest,
            ctx=n_ctx,
            params=info.params_label,
            quant=info.file_type,
            family=info.architecture,
        )
        log.info(
            "loaded %s (%s, %s) from %s",
            self._model.name,
            info.params_label,
            info.file_type,
            self.path,
        )

    async def aclose(self) -> None:
        async with self._lock:
            llama, self._llama = self._llama, None
            if llama is not None:
                await trio.to_thread.run_sync(llama.close)

    def capabilities(self) -> Sequence[str]:
        if self._model is None:
            return []
        tag = family_tag(self._model)
        return [*MODEL_TASKS, tag] if tag else list(MODEL_TASKS)

    def models(self) -> Sequence[ModelInfo]:
        return (self._model,) if self._model is not None else ()

    # -- tasks ------------------------------------------------------------------------

    async def execute(self, request: TaskRequest) -> AsyncGenerator[Chunk | Completion, None]:
        model = self._model
        if model is None or self._llama is None:
            raise BackendUnavailableError(f"{self.path} is not loaded")
        if request.model and not model_meets(model, request.model):
            raise ModelNotFoundError(f"{model.name} does not match {dict(request.model)}")
        llama = self._llama
        if request.capability == EMBED:
            texts = input_field(request.input, "texts", list)
            if not all(isinstance(t, str) for t in texts):
                raise SkillInputError("texts must be strings")
            async with self._lock:
                vectors, counted = await trio.to_thread.run_sync(self._embed, llama, texts)
            yield Completion(
                output=[mean_pooled(v) for v in vectors],
                usage={"prompt_tokens": counted},
                model_digest=model.digest,
                model=model.name,
            )
            return
        options = _sampling(request.params)
        # Streams carry no usage; this counts what llama.cpp actually evaluates.
        stop = threading.Event()
        counter = _TokenCounter(llama, stop)
        options["logits_processor"] = self._counter_list([counter])
        if request.capability == GENERATE:
            prompt = input_field(request.input, "prompt", str)
            prompt_tokens = len(llama.tokenize(prompt.encode("utf-8")))
            # llama-cpp-python stops a completion after 16 tokens unless told;
            # chat, Ollama and llama-server go on to the end of the text.
            options.setdefault("max_tokens", None)

            def start() -> Iterator[Any]:
                return iter(llama.create_completion(prompt=prompt, stream=True, **options))
        else:  # llm.chat and skills served by a chat model
            messages = input_field(request.input, "messages", list)
            # A lower bound (the template adds tokens) that refuses what plainly
            # cannot fit before the lock is taken; llama-cpp-python checks the rest.
            prompt_tokens = sum(
                len(llama.tokenize(str(m.get("content", "")).encode("utf-8"), add_bos=False))
                for m in messages
                if isinstance(m, dict)
            )

            def start() -> Iterator[Any]:
                return iter(llama.create_chat_completion(messages=messages, stream=True, **options))

        if prompt_tokens >= model.ctx:
            raise ContextOverflowError(
                f"a prompt of {prompt_tokens} tokens exceeds {model.name}'s context window "
                f"of {model.ctx} tokens"
            )
        parts: list[str] = []
        async with self._lock, aclosing(_in_thread(start, stop)) as pieces:
            async for piece in pieces:
                text = _delta_text(piece)
                if text:
                    parts.append(text)
                    yield Chunk(text)
        yield Completion(
            output="".join(parts),
            usage={
                "prompt_tokens": counter.prompt_tokens or prompt_tokens,
                "completion_tokens": counter.sampled,
            },
            model_digest=model.digest,
            model=model.name,
        )

    def _embed(self, llama: Any, texts: list[str]) -> tuple[list[Any], int]:
        """Vectors of ``texts`` and their token count (in a thread, lock held)."""
        assert self._set_embeddings is not None
        self._set_embeddings(llama.ctx, True)
        # Llama.embed refuses unless the context was created for embeddings.
        llama.context_params.embeddings = True
        try:
            vectors, counted = [], 0
            for text in texts:
                vector, count = llama.embed(text, return_count=True)
                vectors.append(vector)
                counted += count
            return vectors, counted
        except (ValueError, RuntimeError) as exc:
            raise _mapped(exc) from exc
        finally:
            llama.context_params.embeddings = False
            self._set_embeddings(llama.ctx, False)


class _TokenCounter:
    """A logits processor that counts (llama-cpp-python calls it once per sampled
    token, after the prompt has been evaluated) and ends the generation once
    ``stop`` is set, by leaving the end-of-text token as the only choice.

    Stopping from here and not only between streamed pieces matters: after a
    token that leaves invalid UTF-8, llama-cpp-python 0.3.36 yields no piece until
    the generation ends, and retries the decoding over every held token on each
    new one (400 tokens of the tiny model take 8 s instead of 0.4 s).
    """

    def __init__(self, llama: Any, stop: threading.Event) -> None:
        self._llama = llama
        self._stop = stop
        self._eos = int(llama.token_eos())
        self.prompt_tokens = 0
        self.sampled = 0
        """Tokens sampled, the end-of-generation token included when there is one."""

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.sampled == 0:
            self.prompt_tokens = int(self._llama.n_tokens)
        self.sampled += 1
        if self._stop.is_set() and 0 <= self._eos < len(scores):
            scores[:] = -math.inf
            scores[self._eos] = 0.0
        return scores


async def _in_thread(
    start: Callable[[], Iterator[Any]], stop: threading.Event
) -> AsyncGenerator[Any, None]:
    """Items of the blocking iterator ``start()`` makes, produced in a thread."""
    send, receive = trio.open_memory_channel[Any](math.inf)
    token = trio.lowlevel.current_trio_token()

    def put(item: Any) -> bool:
        try:
            trio.from_thread.run_sync(send.send_nowait, item, trio_token=token)
        except (trio.BrokenResourceError, trio.RunFinishedError):
            return False  # the consumer stopped listening: tell the thread to stop
        return True

    def work() -> None:
        try:
            items = start()
            try:
                for item in items:
                    if stop.is_set() or not put(item):
                        break
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:  # carried over and raised on the trio side
            put(_Failed(exc))
        put(_END)

    thread = threading.Thread(target=work, name="llamanet-gguf", daemon=True)
    thread.start()
    try:
        async with receive:
            async for item in receive:
                if item is _END:
                    return
                if isinstance(item, _Failed):
                    raise _mapped(item.error)
                yield item
    finally:
        stop.set()
        # The model is not thread-safe: the caller's lock is released only once the
        # thread has let go of it, even when we are being cancelled.
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(thread.join)


def _mapped(error: BaseException) -> BaseException:
    if isinstance(error, BackendError):
        return error
    text = str(error)
    if isinstance(error, ValueError) and "context window" in text:
        return ContextOverflowError(text)
    if isinstance(error, ValueError | TypeError):
        return BackendRequestError(f"llama.cpp refused the request: {text}")
    return BackendError(f"llama.cpp failed: {type(error).__name__}: {text}")


def _sampling(params: Mapping[str, Any]) -> dict[str, Any]:
    options = {}
    for key, value in params.items():
        kind = _SAMPLING.get(key)
        if kind is None:
            raise BackendRequestError(
                f"unknown parameter {key!r} for an in-process model (known: {', '.join(_SAMPLING)})"
            )
        if not isinstance(value, kind) or isinstance(value, bool):
            raise BackendRequestError(f"parameter {key!r} has the wrong type")
        if key == "stop" and isinstance(value, list) and not all(isinstance(s, str) for s in value):
            raise BackendRequestError("parameter 'stop' must be a string or a list of strings")
        options[key] = value
    return options


def _delta_text(piece: Any) -> str:
    choices = piece.get("choices") if isinstance(piece, dict) else None
    if not choices:
        return ""
    choice = choices[0]
    delta = choice.get("delta")
    text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
    return text if isinstance(text, str) else ""
