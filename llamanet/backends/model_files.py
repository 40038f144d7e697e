"""Facts about a model file on disk: its sha256 digest and its GGUF metadata.

The digest of a multi-gigabyte file takes seconds to compute, so it is cached by
path, modification time and size in a small JSON file; a changed file is hashed
again.  The GGUF reader takes only the header (key/values and tensor shapes), never
the weights, and needs no third-party package.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from llamanet.errors import ModelFileError

log = logging.getLogger(__name__)

GGUF_MAGIC: Final = b"GGUF"
_CHUNK: Final = 1 << 20

# general.file_type values (llama.cpp's llama_ftype) as people write them.
FILE_TYPES: Final[dict[int, str]] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
}

# GGUF value types: struct format of the scalar ones.
_SCALARS: Final[dict[int, str]] = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True, kw_only=True, slots=True)
class GgufInfo:
    """What the header of a GGUF file says about its model."""

    architecture: str
    name: str
    context_length: int
    parameters: int
    file_type: str
    chat_template: str
    metadata: dict[str, Any]
    """Every scalar and string key/value (arrays are left out: the vocabulary alone
    is tens of thousands of entries)."""

    @property
    def params_label(self) -> str:
        return params_label(self.parameters)


def params_label(count: int) -> str:
    """``7615616512`` -> ``7.6B``, the way model servers print parameter counts."""
    if count <= 0:
        return ""
    for divisor, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= divisor:
            value = count / divisor
            return f"{value:.1f}{suffix}" if value < 100 else f"{value:.0f}{suffix}"
    return str(count)


def read_gguf_info(path: Path) -> GgufInfo:
    """Parse the header of the GGUF file at ``path``."""
    try:
        with path.open("rb") as file:
            return _parse(file, path)
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
    except (struct.error, UnicodeDecodeError, MemoryError) as exc:
        raise ModelFileError(f"{path} is not a valid GGUF file: {exc}") from exc


def _parse(file: IO[bytes], path: Path) -> GgufInfo:
    def read(n: int) -> bytes:
        data = file.read(n)
        if len(data) != n:
            raise ModelFileError(f"{path} is truncated")
        return data

    def scalar(fmt: str) -> Any:
        return struct.unpack(fmt, read(struct.calcsize(fmt)))[0]

    def string() -> str:
        length = scalar("<Q")
        if length > 1 << 24:
            raise ModelFileError(f"{path}: a string of {length} bytes in the header")
        return read(length).decode("utf-8")

    def value(kind: int) -> Any:
        if kind in _SCALARS:
            return scalar(_SCALARS[kind])
        if kind == _STRING:
            return string()
        if kind == _ARRAY:
            item_kind, count = scalar("<I"), scalar("<Q")
            if item_kind in _SCALARS:
                file.seek(count * struct.calcsize(_SCALARS[item_kind]), os.SEEK_CUR)
            else:
                for _ in range(count):
                    value(item_kind)
            return None
        raise ModelFileError(f"{path}: unknown GGUF value type {kind}")

    if read(4) != GGUF_MAGIC:
        raise ModelFileError(f"{path} is not a GGUF file (bad magic)")
    version = scalar("<I")
    if version < 2:
        raise ModelFileError(f"{path}: GGUF version {version} is too old")
    tensor_count, kv_count = scalar("<Q"), scalar("<Q")
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = string()
        found = value(scalar("<I"))
        if found is not None:
            metadata[key] = found
    parameters = 0
    for _ in range(tensor_count):
        string()  # tensor name
        n_dims = scalar("<I")
        dims = [scalar("<Q") for _ in range(n_dims)]
        scalar("<I")  # element type
        scalar("<Q")  # offset
        parameters += math.prod(dims)
    arch = str(metadata.get("general.architecture", ""))
    file_type = metadata.get("general.file_type")
    return GgufInfo(
        architecture=arch,
        name=str(metadata.get("general.name", "")),
        context_length=int(metadata.get(f"{arch}.context_length", 0) or 0),
        parameters=parameters,
        file_type=FILE_TYPES.get(file_type, str(file_type)) if file_type is not None else "",
        chat_template=str(metadata.get("tokenizer.chat_template", "")),
        metadata=metadata,
    )


class DigestCache:
    """sha256 digests of model files, kept in a JSON file keyed by path, mtime and size."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._entries: dict[str, dict[str, Any]] = {}
        if path is not None and path.is_file():
            try:
                loaded = json.loads(path.read_text())
                if isinstance(loaded, dict):
                    self._entries = {k: v for k, v in loaded.items() if isinstance(v, dict)}
            except (OSError, ValueError):
                log.warning("ignoring unreadable digest cache %s", path)
        self.hashed = 0
        """Files hashed (not answered from the cache) since this cache was opened."""

    def digest(self, model: Path, *, hasher: Callable[[Path], str] | None = None) -> str:
        """``sha256:<hex>`` of ``model``, from the cache when the file is unchanged."""
        try:
            stat = model.stat()
        except OSError as exc:
            raise ModelFileError(f"cannot read model file {model}: {exc.strerror}") from exc
        key = str(model.resolve())
        entry = self._entries.get(key)
        unchanged = {"mtime_ns": stat.st_mtime_ns, "size": stat.st_size}
        if entry and all(entry.get(k) == v for k, v in unchanged.items()):
            return str(entry["digest"])
        digest = (hasher or sha256_file)(model)
        self.hashed += 1
        self._entries[key] = {"mtime_ns": stat.st_mtime_ns, "size": stat.st_size, "digest": digest}
        self._save()
        return digest

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(self._entries, indent=1, sort_keys=True))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("could not save digest cache %s: %s", self.path, exc)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as file:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc.strerror}") from exc
    return f"sha256:{digest.hexdigest()}"
