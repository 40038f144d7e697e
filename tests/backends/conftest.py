from __future__ import annotations

from pathlib import Path

import pytest

from llamanet.testing.tiny_gguf import find_vocab, write_tiny_llama


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Llama-architecture GGUF (random weights, llama.cpp's SentencePiece
    vocabulary, ~9 MB), written once per test run."""
    return write_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama.gguf", find_vocab())
