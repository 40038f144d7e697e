"""OpenAI-compatible routes on the node's local API, so tools that speak the OpenAI
API get the whole swarm: each request becomes a llamanet task, routed by the
orchestrator like any other.

    GET  /v1/models                 every model in the swarm, local and remote
    POST /v1/chat/completions       llm.chat (``stream: true``: server-sent events)
    POST /v1/completions            llm.generate (likewise)
    POST /v1/embeddings             llm.embed

``model`` is a model name or a family (``qwen2``, ``llama``) the swarm advertises.
An optional ``llamanet`` object in the body adds what OpenAI's API has no words
for: ``capability`` (e.g. a specialised agent's skill instead of ``llm.chat``),
``verify``, ``max_price``, ``peer``, ``timeout``.  Authentication is the node's
API token as the bearer key (``api_key=`` in OpenAI clients).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llamanet.errors import ModelNotFoundError
from llamanet.node.node import Answer, Node

from .options import ApiError, timeout_option, verify_option

Handler = Callable[[Request], Awaitable[Response]]
Guard = Callable[[Handler], Handler]
Emit = Callable[[dict[str, Any]], Awaitable[None]]
Stream = Callable[[Callable[[Emit], Awaitable[None]]], Response]
"""Turns a producer of events into a streamed response (server-sent events)."""

SAMPLING = ("max_tokens", "temperature", "top_p", "seed", "stop")


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


def swarm_models(node: Node) -> list[dict[str, Any]]:
    """Every model advertised by a verified peer or served here, by name."""
    now = node.clock()
    models: dict[str, dict[str, Any]] = {}

    def add(info: Any, where: str, created: int) -> None:
        entry = models.setdefault(
            info.name,
            {
                "id": info.name,
                "object": "model",
                "created": created,
                "owned_by": "llamanet",
                "llamanet": {
                    "digest": info.digest,
                    "family": info.family,
                    "ctx": info.ctx,
                    "peers": [],
                },
            },
        )
        entry["llamanet"]["peers"].append(where)

    for backend_model in _local_models(node):
        add(backend_model, "local", int(node.started_at))
    for entry in node.registry.entries(now=now):
        record = entry.record
        if record.peer == node.peer_id:
            continue
        for info in record.record.models:
            add(info, record.record.peer_text, record.record.iat)
    return sorted(models.values(), key=lambda m: str(m["id"]))


def _local_models(node: Node) -> list[Any]:
    return [m for backend in node.worker.backends for m in backend.models()]


def model_constraint(node: Node, model: Any) -> dict[str, Any] | None:
    """The task's model constraint for an OpenAI ``model`` string."""
    if model is None or model == "":
        return None
    if not isinstance(model, str):
        raise _bad("'model' must be a string")
    known = swarm_models(node)
    if any(m["id"] == model for m in known):
        return {"name": model}
    if any(m["llamanet"]["family"] == model for m in known):
        return {"family": model}
    raise ModelNotFoundError(
        f"no model or family {model!r} in the swarm "
        f"(GET /v1/models lists {len(known)} model{'s' if len(known) != 1 else ''})"
    )


def llamanet_extension(body: dict[str, Any]) -> dict[str, Any]:
    ext = body.get("llamanet") or {}
    if not isinstance(ext, dict):
        raise _bad("'llamanet' must be an object")
    args: dict[str, Any] = {}
    if "verify" in ext:
        args["verify"] = verify_option(ext["verify"], "llamanet.verify")
    if "max_price" in ext:
        if not isinstance(ext["max_price"], int | float):
            raise _bad("llamanet.max_price must be a number")
        args["max_price"] = float(ext["max_price"])
    if "peer" in ext:
        if not isinstance(ext["peer"], str):
            raise _bad("llamanet.peer must be a peer ID")
        args["peer"] = ext["peer"]
    args["timeout"] = timeout_option(ext.get("timeout"), 60.0, "llamanet.timeout")
    return args


def _capability(body: dict[str, Any], default: str) -> str:
    ext = body.get("llamanet") or {}
    capability = ext.get("capability", default) if isinstance(ext, dict) else default
    if not isinstance(capability, str):
        raise _bad("llamanet.capability must be a capability name")
    return capability


def _params(body: dict[str, Any]) -> dict[str, Any]:
    params = {k: body[k] for k in SAMPLING if body.get(k) is not None}
    if "max_completion_tokens" in body and "max_tokens" not in params:
        params["max_tokens"] = body["max_completion_tokens"]
    return params


def _usage(answer: Answer) -> dict[str, int]:
    prompt = int(answer.usage.get("prompt_tokens", 0))
    completion = int(answer.usage.get("completion_tokens", 0))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _text(output: Any) -> str:
    return output if isinstance(output, str) else json.dumps(output)


def openai_routes(node: Node, guarded: Guard, stream: Stream) -> list[Route]:
    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": swarm_models(node)})

    async def body_of(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise _bad("the body must be JSON") from None
        if not isinstance(body, dict):
            raise _bad("the body must be a JSON object")
        return body

    async def chat(request: Request) -> Response:
        body = await body_of(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _bad("'messages' must be a non-empty list")
        return await complete(
            body, _capability(body, "llm.chat"), {"messages": messages}, chat=True
        )

    async def completions(request: Request) -> Response:
        body = await body_of(request)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise _bad("'prompt' must be a string")
        return await complete(
            body, _capability(body, "llm.generate"), {"prompt": prompt}, chat=False
        )

    async def complete(
        body: dict[str, Any], capability: str, input: Any, *, chat: bool
    ) -> Response:
        args = {
            "capability": capability,
            "input": input,
            "params": _params(body),
            "model": model_constraint(node, body.get("model")),
            **llamanet_extension(body),
        }
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        created = int(time.time())
        name = body.get("model") or capability
        kind = "chat.completion" if chat else "text_completion"
        if not body.get("stream"):
            answer = await node.ask(**args)
            choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
            if chat:
                choice["message"] = {"role": "assistant", "content": _text(answer.output)}
            else:
                choice["text"] = _text(answer.output)
            return JSONResponse(
                {
                    "id": ident,
                    "object": kind,
                    "created": created,
                    "model": name,
                    "choices": [choice],
                    "usage": _usage(answer),
                    "llamanet": {"peer": answer.peer, "model_digest": answer.model_digest},
                }
            )

        def chunk(delta: dict[str, Any] | str, finish: str | None) -> dict[str, Any]:
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
            if chat:
                choice["delta"] = delta
            else:
                choice["text"] = delta
            return {
                "id": ident,
                "object": f"{kind}.chunk" if chat else kind,
                "created": created,
                "model": name,
                "choices": [choice],
            }

        async def produce(emit: Emit) -> None:
            if chat:
                await emit(chunk({"role": "assistant", "content": ""}, None))

            async def on_chunk(data: Any) -> None:
                piece = data if isinstance(data, str) else json.dumps(data)
                await emit(chunk({"content": piece} if chat else piece, None))

            answer = await node.ask(**args, stream=True, on_chunk=on_chunk)
            final = chunk({} if chat else "", "stop")
            final["usage"] = _usage(answer)
            await emit(final)

        return stream(produce)

    async def embeddings(request: Request) -> Response:
        body = await body_of(request)
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise _bad("'input' must be a string or a list of strings")
        answer = await node.ask(
            _capability(body, "llm.embed"),
            {"texts": texts},
            model=model_constraint(node, body.get("model")),
            **llamanet_extension(body),
        )
        vectors = answer.output if isinstance(answer.output, list) else []
        usage = _usage(answer)
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": vector}
                    for i, vector in enumerate(vectors)
                ],
                "model": body.get("model") or "llm.embed",
                "usage": {
                    "prompt_tokens": usage["prompt_tokens"],
                    "total_tokens": usage["total_tokens"],
                },
            }
        )

    return [
        Route("/v1/models", guarded(models), methods=["GET"]),
        Route("/v1/chat/completions", guarded(chat), methods=["POST"]),
        Route("/v1/completions", guarded(completions), methods=["POST"]),
        Route("/v1/embeddings", guarded(embeddings), methods=["POST"]),
    ]
