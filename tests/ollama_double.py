"""TEST DOUBLE: an HTTP server that replays Ollama's documented request/response
shapes (Ollama itself cannot be installed here).  It serves two models, streams
NDJSON for /api/chat and /api/generate, answers /api/embed, and can be told to
fail: an error body, a stream cut in the middle, an unknown model."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.lowlevel
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MODELS = {
    "qwen2.5:0.5b": {
        "digest": "a8b0c5157701",
        "details": {"family": "qwen2", "parameter_size": "494.03M", "quantization_level": "Q4_K_M"},
        "model_info": {"qwen2.context_length": 32768},
        "capabilities": ["completion", "tools"],
    },
    "nomic-embed-text:latest": {
        "digest": "0a109f422b47",
        "details": {"family": "nomic-bert", "parameter_size": "137M", "quantization_level": "F16"},
        "model_info": {"nomic-bert.context_length": 2048},
        "capabilities": ["embedding"],
    },
}
REPLY = ["Hel", "lo", " from", " the", " double"]


class OllamaDouble:
    def __init__(self) -> None:
        self.fail_with: tuple[int, str] | None = None
        self.cut_stream = False
        self.requests: list[tuple[str, Any]] = []
        self.url = ""
        self.hidden: set[str] = set()
        """Models left out of /api/tags (as after ``ollama rm``)."""
        self.down = False
        """Answer /api/tags with 503, as a server that is shutting down."""

    async def _body(self, request: Request) -> Any:
        body = json.loads(await request.body() or b"{}")
        self.requests.append((request.url.path, body))
        return body

    def _error(self) -> Response | None:
        if self.fail_with is None:
            return None
        status, message = self.fail_with
        return JSONResponse({"error": message}, status_code=status)

    async def tags(self, request: Request) -> Response:
        if self.down:
            return JSONResponse({"error": "shutting down"}, status_code=503)
        models = [
            {"name": n, "model": n, "digest": m["digest"], "details": m["details"], "size": 1}
            for n, m in MODELS.items()
            if n not in self.hidden
        ]
        return JSONResponse({"models": models})

    async def show(self, request: Request) -> Response:
        body = await self._body(request)
        model = MODELS.get(body.get("model"))
        if model is None:
            return JSONResponse(
                {"error": f"model '{body.get('model')}' not found"}, status_code=404
            )
        return JSONResponse({k: v for k, v in model.items() if k != "digest"})

    async def _generate(self, request: Request, key: str) -> Response:
        body = await self._body(request)
        if (err := self._error()) is not None:
            return err
        if body.get("model") not in MODELS:
            return JSONResponse(
                {"error": f"model '{body.get('model')}' not found"}, status_code=404
            )

        async def lines() -> AsyncIterator[bytes]:
            for i, piece in enumerate(REPLY):
                if self.cut_stream and i == 2:
                    raise RuntimeError("connection lost")  # the server dies mid-stream
                content: Any = (
                    {"role": "assistant", "content": piece} if key == "message" else piece
                )
                yield (
                    json.dumps({"model": body["model"], key: content, "done": False}).encode()
                    + b"\n"
                )
                await trio.lowlevel.checkpoint()
            last: Any = "" if key == "response" else {"role": "assistant", "content": ""}
            done = {"model": body["model"], key: last, "done": True}
            done |= {"prompt_eval_count": 7, "eval_count": len(REPLY)}
            yield json.dumps(done).encode() + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def chat(self, request: Request) -> Response:
        return await self._generate(request, "message")

    async def generate(self, request: Request) -> Response:
        return await self._generate(request, "response")

    async def embed(self, request: Request) -> Response:
        body = await self._body(request)
        if (err := self._error()) is not None:
            return err
        texts = body.get("input", [])
        return JSONResponse(
            {
                "model": body.get("model"),
                "embeddings": [[float(len(t)), 0.5] for t in texts],
                "prompt_eval_count": sum(len(t) for t in texts),
            }
        )

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/tags", self.tags, methods=["GET"]),
                Route("/api/show", self.show, methods=["POST"]),
                Route("/api/chat", self.chat, methods=["POST"]),
                Route("/api/generate", self.generate, methods=["POST"]),
                Route("/api/embed", self.embed, methods=["POST"]),
            ]
        )


@asynccontextmanager
async def running_ollama_double() -> AsyncIterator[OllamaDouble]:
    double = OllamaDouble()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = 0.5
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, double.app(), config)
        double.url = binds[0]
        yield double
        nursery.cancel_scope.cancel()
