"""One classifier for model servers' HTTP errors, whichever server said it."""

from __future__ import annotations

import json

import pytest

from llamanet.backends.http_errors import MAX_MESSAGE, http_error
from llamanet.errors import (
    BackendError,
    BackendRequestError,
    ContextOverflowError,
    ModelNotFoundError,
)


def OLLAMA(body: dict[str, str]) -> str:
    return json.dumps(body)


def OPENAI(message: str) -> str:
    return json.dumps({"error": {"message": message, "type": "x"}})


@pytest.mark.parametrize(
    ("status", "body", "kind", "code"),
    [
        (404, OLLAMA({"error": "model 'x' not found"}), ModelNotFoundError, "unsupported"),
        (404, OPENAI("The model `x` does not exist"), ModelNotFoundError, "unsupported"),
        (500, OLLAMA({"error": "input length exceeds the context length"}),
         ContextOverflowError, "too_large"),
        (400, OPENAI("requested tokens exceed context window of 512"),
         ContextOverflowError, "too_large"),
        (400, OLLAMA({"error": "invalid options"}), BackendRequestError, "bad_request"),
        (422, OPENAI("temperature must be a number"), BackendRequestError, "bad_request"),
        (500, OLLAMA({"error": "CUDA error: out of memory"}), BackendError, "backend_error"),
        (401, OPENAI("bad key"), BackendError, "backend_error"),
        (502, "<html>bad gateway</html>", BackendError, "backend_error"),
    ],
)  # fmt: skip
def test_both_servers_errors_get_the_same_types(
    status: int, body: str, kind: type[BackendError], code: str
) -> None:
    error = http_error("/api/chat", status, body)
    assert type(error) is kind and error.code == code
    assert str(error).startswith("/api/chat: ")


def test_the_servers_own_words_are_kept_and_bounded() -> None:
    assert "refused our API key: bad key" in str(http_error("/v1", 403, OPENAI("bad key")))
    assert str(http_error("/v1", 500, "")) == "/v1: HTTP 500: HTTP 500"
    long = str(http_error("/v1", 500, "x" * 10_000))
    assert long.count("x") == MAX_MESSAGE
