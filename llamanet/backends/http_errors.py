"""How a model server's HTTP error becomes a typed backend error, for every backend
that talks HTTP (Ollama, OpenAI-compatible servers): one classifier, so the task
error a requester sees for the same failure does not depend on the server kind."""

from __future__ import annotations

import json
from typing import Final

from llamanet.errors import (
    BackendError,
    BackendRequestError,
    ContextOverflowError,
    ModelNotFoundError,
)

OVERFLOW_WORDS: Final = (
    "context window",
    "context length",
    "context size",
    "maximum context",
    "n_ctx",
    "exceed_context_size",
    "could not broadcast input array",
)
"""How servers word a prompt that does not fit (Ollama, llama-server,
llama-cpp-python, vLLM), and llama-cpp-python 0.3.36's accidental wording of the
same (a numpy broadcast error)."""
MAX_MESSAGE: Final = 500


def error_message(status: int, text: str) -> str:
    """The server's own words: ``{"error": "..."}`` (Ollama), ``{"error": {"message":
    ...}}`` (OpenAI and the servers that copy it), or the body as it is."""
    try:
        error = json.loads(text).get("error", text)
        message = str(error.get("message", error) if isinstance(error, dict) else error)
    except (ValueError, AttributeError):  # not JSON, or JSON that is not a map
        message = text
    return message[:MAX_MESSAGE] or f"HTTP {status}"


def http_error(path: str, status: int, text: str) -> BackendError:
    """The typed error for an HTTP ``status`` with body ``text`` from ``path``."""
    message = error_message(status, text)
    lowered = message.lower()
    if any(words in lowered for words in OVERFLOW_WORDS):
        return ContextOverflowError(f"{path}: {message}")
    if status == 404 or ("model" in lowered and "not found" in lowered):
        return ModelNotFoundError(f"{path}: {message}")
    if status in (400, 422):
        return BackendRequestError(f"{path}: {message}")
    if status in (401, 403):
        return BackendError(f"{path}: HTTP {status}: the server refused our API key: {message}")
    return BackendError(f"{path}: HTTP {status}: {message}")
