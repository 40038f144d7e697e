from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llamanet.testing.llama_server import LlamaServer, running_llama_server
from llamanet.testing.tiny_gguf import find_vocab, write_tiny_llama


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Llama-architecture GGUF (random weights, llama.cpp's SentencePiece
    vocabulary, ~9 MB), written once per test run."""
    return write_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama.gguf", find_vocab())


@pytest.fixture(scope="session")
def llama_server(
    tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaServer]:
    """One llama-cpp-python server for the run, serving the tiny model."""
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with running_llama_server(tiny_gguf, log=log) as server:
        yield server
