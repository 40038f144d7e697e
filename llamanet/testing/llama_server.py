"""A real OpenAI-compatible model server for tests and benchmarks: llama-cpp-python's
server (``python -m llama_cpp.server``, the ``test`` extra) on a free loopback port,
serving a GGUF file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

START_TIMEOUT = 60.0


@dataclass(frozen=True)
class LlamaServer:
    url: str
    process: subprocess.Popen[bytes]
    model: Path

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_llama_server(
    model: Path, *, n_ctx: int = 512, log: Path | None = None, api_key: str | None = None
) -> Iterator[LlamaServer]:
    """Start the server and wait until it lists its model; kill it on exit.

    ``--interrupt_requests false``: otherwise llama-cpp-python's server cuts a
    running stream short whenever another request arrives.  ``--embedding true``
    keeps generation working and lets the same model answer ``/v1/embeddings``.
    """
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        "1",
        "--interrupt_requests",
        "false",
        "--embedding",
        "true",
        "--verbose",
        "false",
        *(["--api_key", api_key] if api_key else []),
    ]
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    output = log.open("wb") if log is not None else subprocess.DEVNULL
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    server = LlamaServer(f"http://127.0.0.1:{port}", process, model)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {process.returncode}")
            try:
                if (
                    httpx.get(f"{server.url}/v1/models", headers=headers, timeout=1.0).status_code
                    == 200
                ):
                    break
            except httpx.TransportError:
                pass  # not listening yet: poll again until the deadline
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server did not answer in {START_TIMEOUT} s")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if log is not None and not isinstance(output, int):
            output.close()
