"""Which backends a node runs, from ``--backend`` specs.

* ``builtin`` — the built-in skills (always cheap, always there);
* ``ollama`` or ``ollama:URL`` — an Ollama server (default http://127.0.0.1:11434);
* ``auto`` (the default) — an Ollama server on its default port if one answers,
  plus the built-in skills; with none, the built-in skills and a one-line hint.

An explicitly named server that does not answer is an error; ``auto`` never is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

from llamanet.backends.base import Backend
from llamanet.backends.builtin import BuiltinBackend
from llamanet.backends.ollama import DEFAULT_URL as OLLAMA_URL
from llamanet.backends.ollama import OllamaBackend
from llamanet.errors import BackendUnavailableError, ConfigError

log = logging.getLogger(__name__)

HINT: Final = (
    "no model server found; serving the built-in skills only. Attach one with "
    "--backend ollama[:URL]"
)
KINDS: Final = ("auto", "builtin", "ollama")


def check_backend_spec(spec: str) -> str:
    kind = spec.split(":", 1)[0]
    if kind not in KINDS:
        raise ConfigError(f"unknown backend {spec!r} (use one of: auto, builtin, ollama[:URL])")
    return spec


async def build_backends(
    specs: Sequence[str], skills: tuple[str, ...] | None, *, ollama_url: str = OLLAMA_URL
) -> list[Backend]:
    """Open the backends ``specs`` name, in order, built-in skills last."""
    backends: list[Backend] = []
    want_builtin = False
    for spec in specs:
        kind, _, arg = spec.partition(":")
        if kind == "builtin":
            want_builtin = True
        elif kind == "ollama":
            url = arg or ollama_url
            backend = OllamaBackend(url)
            try:
                await backend.open()
            except BackendUnavailableError as exc:
                await backend.aclose()
                raise ConfigError(f"--backend {spec}: {exc}") from exc
            backends.append(backend)
        elif kind == "auto":
            want_builtin = True
            probe = OllamaBackend(ollama_url, timeout=2.0)
            try:
                await probe.open()
            except BackendUnavailableError:
                await probe.aclose()
                continue
            log.info("found Ollama at %s with %d models", ollama_url, len(probe.models()))
            backends.append(probe)
        else:
            raise ConfigError(f"unknown backend {spec!r}")
    if not backends and "auto" in specs:
        log.info(HINT)
    if want_builtin or not backends:
        backends.append(BuiltinBackend(skills))
    return backends


async def close_backends(backends: Sequence[Backend]) -> None:
    for backend in backends:
        if isinstance(backend, OllamaBackend):
            await backend.aclose()
