"""The js-libp2p peers in ``tests/js/``: installed once from the pinned
``package.json`` into a cache directory, and driven as subprocesses.

js-libp2p is a second, independent implementation of the libp2p specs (mDNS,
Kademlia); these tests check llamanet against it rather than against itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

JS_DIR = Path(__file__).resolve().parent / "js"
JS_CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llamanet-tests" / "js-libp2p"
)


def js_peer_ready() -> str | None:
    """Install the pinned js-libp2p packages once (cached); ``None`` or why not."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node and npm are not installed"
    JS_CACHE.mkdir(parents=True, exist_ok=True)
    manifest = (JS_DIR / "package.json").read_text()
    stamp = JS_CACHE / "installed-from.json"
    if not (stamp.exists() and stamp.read_text() == manifest):
        (JS_CACHE / "package.json").write_text(manifest)
        result = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=JS_CACHE, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if result.returncode != 0:
            return f"npm install failed: {result.stderr.strip()[-300:]}"
        stamp.write_text(manifest)
    for script in JS_DIR.glob("*.mjs"):
        shutil.copy(script, JS_CACHE / script.name)
    return None


class JsKadPeer:
    """``tests/js/kad_peer.mjs`` running: one JSON command line in, one JSON answer
    line out (see the script for the commands)."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = b""
        self._sent = 0
        self.id = ""
        self.addrs: list[str] = []

    async def _line(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        with trio.fail_after(timeout):
            while b"\n" not in self._buffer:
                chunk = await self.process.stdout.receive_some(65536)
                if not chunk:
                    raise AssertionError(f"the js peer exited ({self.process.returncode})")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def call(self, op: str, *, timeout: float = 30, **fields: Any) -> dict[str, Any]:
        """Run one command; its answer (``ok`` says whether it succeeded)."""
        assert self.process.stdin is not None
        self._sent += 1
        command = {"n": self._sent, "op": op, **fields}
        await self.process.stdin.send_all(json.dumps(command).encode() + b"\n")
        answer = await self._line(timeout)
        assert answer.get("n") == self._sent, answer
        return answer

    async def ok(self, op: str, **fields: Any) -> dict[str, Any]:
        """:meth:`call` that must succeed."""
        answer = await self.call(op, **fields)
        assert answer["ok"], answer
        return answer


@asynccontextmanager
async def js_kad_peer(*flags: str) -> AsyncIterator[JsKadPeer]:
    """A js-libp2p Kademlia peer on 127.0.0.1 (skips the test where npm is not
    available); killed on the way out."""
    reason = js_peer_ready()
    if reason is not None:
        pytest.skip(f"js-libp2p peer unavailable: {reason}")
    process = await trio.lowlevel.open_process(
        ["node", str(JS_CACHE / "kad_peer.mjs"), *flags],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=JS_CACHE,
    )
    peer = JsKadPeer(process)
    try:
        started = await peer._line(timeout=30)
        assert started.get("event") == "started", started
        peer.id, peer.addrs = started["id"], started["addrs"]
        yield peer
    finally:
        with trio.CancelScope(shield=True):
            process.kill()
            await process.wait()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    await pipe.aclose()
