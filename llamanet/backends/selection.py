"""Which backends a node runs, from ``--backend`` specs.

* ``builtin`` — the built-in skills (always cheap, always there);
* ``ollama`` or ``ollama:URL`` — an Ollama server (default http://127.0.0.1:11434);
* ``openai:URL`` — any OpenAI-compatible server (llama.cpp's ``llama-server``,
  vLLM, LM Studio, LocalAI); ``openai`` alone means http://127.0.0.1:8080.  The API
  key, if the server wants one, comes from ``LLAMANET_OPENAI_API_KEY`` or
  ``OPENAI_API_KEY``;
* ``gguf:PATH`` — a GGUF model file run in-process by llama-cpp-python (the
  ``llamanet[gguf]`` extra);
* ``auto`` (the default) — whichever of an Ollama server on its default port and an
  OpenAI-compatible server on 127.0.0.1:8080 answers, plus the built-in skills; with
  neither, the built-in skills and a one-line hint.

An explicitly named server or file that does not work is an error; ``auto`` never is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Protocol

import trio

from llamanet.backends.base import Backend
from llamanet.backends.builtin import BuiltinBackend
from llamanet.backends.gguf_model import GgufBackend
from llamanet.backends.model_files import DigestCache
from llamanet.backends.ollama import DEFAULT_URL as OLLAMA_URL
from llamanet.backends.ollama import OllamaBackend
from llamanet.backends.openai_api import OpenAIBackend
from llamanet.errors import BackendError, ConfigError

log = logging.getLogger(__name__)

OPENAI_URL: Final = "http://127.0.0.1:8080"
PROBE_TIMEOUT: Final = 2.0
HINT: Final = (
    "no model server found; serving the built-in skills only. Attach one with "
    "--backend ollama[:URL], --backend openai:URL or --backend gguf:PATH"
)
KINDS: Final = ("auto", "builtin", "ollama", "openai", "gguf")


class _ServerBackend(Backend, Protocol):
    async def open(self) -> None: ...

    async def aclose(self) -> None: ...


def check_backend_spec(spec: str) -> str:
    kind, _, arg = spec.partition(":")
    if kind not in KINDS:
        raise ConfigError(
            f"unknown backend {spec!r} (use one of: auto, builtin, ollama[:URL], "
            "openai[:URL], gguf:PATH)"
        )
    if kind == "gguf" and not arg:
        raise ConfigError("--backend gguf needs the model file: gguf:/path/to/model.gguf")
    return spec


async def _opened(backend: _ServerBackend, spec: str) -> _ServerBackend:
    try:
        await backend.open()
    except (BackendError, ConfigError) as exc:
        await _closed(backend)
        raise ConfigError(f"--backend {spec}: {exc}") from exc
    except BaseException:
        await _closed(backend)
        raise
    return backend


async def _closed(backend: _ServerBackend) -> None:
    # Shielded: a start-up cancelled mid-probe must still close the client's sockets.
    with trio.CancelScope(shield=True):
        await backend.aclose()


async def _probe(backend: _ServerBackend) -> _ServerBackend | None:
    # Bounded here, not by the client's timeout: the backend found goes on to serve
    # generations that may take minutes.
    try:
        with trio.move_on_after(PROBE_TIMEOUT):
            await backend.open()
            return backend
    except BackendError:
        pass  # not there, or not answering: the caller tries the next kind
    except BaseException:
        await _closed(backend)
        raise
    await _closed(backend)
    return None


async def build_backends(
    specs: Sequence[str],
    skills: tuple[str, ...] | None,
    *,
    ollama_url: str = OLLAMA_URL,
    openai_url: str = OPENAI_URL,
    digest_cache: DigestCache | None = None,
) -> list[Backend]:
    """Open the backends ``specs`` name, in order, built-in skills last.  On any
    error, those already opened are closed again."""
    backends: list[Backend] = []
    try:
        want_builtin = await _build(
            specs, backends, ollama_url=ollama_url, openai_url=openai_url, cache=digest_cache
        )
    except BaseException:
        with trio.CancelScope(shield=True):
            await close_backends(backends)
        raise
    if not backends and "auto" in specs:
        log.info(HINT)
    if want_builtin or not backends:
        backends.append(BuiltinBackend(skills))
    return backends


async def _build(
    specs: Sequence[str],
    backends: list[Backend],
    *,
    ollama_url: str,
    openai_url: str,
    cache: DigestCache | None,
) -> bool:
    want_builtin = False
    for spec in specs:
        kind, _, arg = spec.partition(":")
        if kind == "builtin":
            want_builtin = True
        elif kind == "ollama":
            backends.append(await _opened(OllamaBackend(arg or ollama_url), spec))
        elif kind == "openai":
            backends.append(
                await _opened(OpenAIBackend(arg or openai_url, digest_cache=cache), spec)
            )
        elif kind == "gguf":
            backends.append(await _opened(GgufBackend(Path(arg), digest_cache=cache), spec))
        elif kind == "auto":
            want_builtin = True
            backends.extend(await _probe_local_servers(ollama_url, openai_url, cache))
        else:
            raise ConfigError(f"unknown backend {spec!r}")
    return want_builtin


async def _probe_local_servers(
    ollama_url: str, openai_url: str, cache: DigestCache | None
) -> list[_ServerBackend]:
    found: list[_ServerBackend | None] = [None, None]

    async def probe(index: int, backend: _ServerBackend) -> None:
        found[index] = await _probe(backend)

    # Both at once: a closed port answers at once, a busy server gets PROBE_TIMEOUT.
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(probe, 0, OllamaBackend(ollama_url))
            nursery.start_soon(probe, 1, OpenAIBackend(openai_url, digest_cache=cache))
    except BaseException:
        for backend in found:
            if backend is not None:
                await _closed(backend)
        raise
    servers = [backend for backend in found if backend is not None]
    for backend in servers:
        log.info("found %r", backend)
    return servers


async def close_backends(backends: Sequence[Backend]) -> None:
    for backend in backends:
        aclose = getattr(backend, "aclose", None)
        if aclose is not None:
            await aclose()
