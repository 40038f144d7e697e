"""A tiny Llama-architecture GGUF model with random weights, for tests and benchmarks.

llama.cpp loads and runs it like any real model; its output is gibberish, which is
all the plumbing (listing, digests, streaming, usage, cancellation) needs.  The
vocabulary comes from a vocab-only GGUF that llama.cpp ships
(``models/ggml-vocab-llama-spm.gguf``, 32000 SentencePiece tokens; ``make test``
extracts it from the llama-cpp-python sdist).  Weights are seeded, so the same
arguments always write the same bytes and the same digest.

Needs the ``gguf`` and ``numpy`` packages (the ``test`` extra).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

VOCAB_ENV: Final = "LLAMANET_TEST_VOCAB"
VOCAB_NAME: Final = "ggml-vocab-llama-spm.gguf"
# ChatML, which llama.cpp and llama-cpp-python both apply from the file's metadata.
CHAT_TEMPLATE: Final = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True, kw_only=True, slots=True)
class TinyLlama:
    """Shape of the model: small enough to write in well under a second."""

    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 128
    n_ctx: int = 512
    seed: int = 1
    name: str = "tiny-llama"


def find_vocab() -> Path:
    """The vocab GGUF: ``$LLAMANET_TEST_VOCAB``, else where ``make test`` puts it."""
    candidates = []
    if os.environ.get(VOCAB_ENV):
        candidates.append(Path(os.environ[VOCAB_ENV]))
    root = Path(__file__).resolve().parents[2]
    candidates.append(root / ".venv" / "share" / "llamanet" / VOCAB_NAME)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{VOCAB_NAME} not found (looked in {', '.join(map(str, candidates))}); "
        f"`make test` extracts it from the llama-cpp-python sdist, or set {VOCAB_ENV}"
    )


def write_tiny_llama(path: Path, vocab: Path, shape: TinyLlama | None = None) -> Path:
    """Write a random-weight Llama model with ``vocab``'s tokenizer to ``path``."""
    import gguf
    import numpy as np

    shape = shape or TinyLlama()
    reader = gguf.GGUFReader(str(vocab))
    tokens = _field(reader, "tokenizer.ggml.tokens")
    n_vocab = len(tokens)
    rng = np.random.default_rng(shape.seed)
    head_dim = shape.n_embd // shape.n_head
    n_embd_kv = head_dim * shape.n_head_kv

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(shape.name)
    writer.add_context_length(shape.n_ctx)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_vocab_size(n_vocab)
    _copy_tokenizer(reader, writer)
    writer.add_chat_template(CHAT_TEMPLATE)

    def weight(*dims: int) -> Any:
        return (rng.standard_normal(dims) * 0.02).astype(np.float16)

    def norm() -> Any:
        return np.ones(shape.n_embd, dtype=np.float32)

    writer.add_tensor("token_embd.weight", weight(n_vocab, shape.n_embd))
    for i in range(shape.n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", norm())
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(shape.n_embd, shape.n_embd))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(n_embd_kv, shape.n_embd))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(n_embd_kv, shape.n_embd))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(shape.n_embd, shape.n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", norm())
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(shape.n_ff, shape.n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(shape.n_ff, shape.n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(shape.n_embd, shape.n_ff))
    writer.add_tensor("output_norm.weight", norm())
    writer.add_tensor("output.weight", weight(n_vocab, shape.n_embd))

    tmp = path.with_name(path.name + ".part")
    writer.path = tmp
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, path)
    return path


def _field(reader: Any, name: str) -> Any:
    field = reader.fields.get(name)
    if field is None:
        raise ValueError(f"vocab file lacks {name}")
    return field.contents()


def _copy_tokenizer(reader: Any, writer: Any) -> None:
    import gguf

    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        value = field.contents()
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_array(name, value)
        elif kind == gguf.GGUFValueType.STRING:
            writer.add_string(name, value)
        else:
            writer.add_key_value(name, value, kind)
