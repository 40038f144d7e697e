"""The node's local control API: Starlette on Hypercorn's trio worker, loopback only.

Every route needs ``Authorization: Bearer <token>``; the token and address are in
``$LLAMANET_HOME/api.json`` (mode 0600), which only the node's user can read.
No CORS headers are sent, so web pages cannot read the API from a browser.

Routes (JSON unless noted)::

    GET  /v1/status                node status
    GET  /v1/peers                 known peers with their verified records
    GET  /v1/record                this node's current signed record
    GET  /v1/find?cap=C[&limit=N][&timeout=S]   verified records offering C
    POST /v1/ask  {cap, input, stream?, params?, timeout?, peer?, session?, model?,
                   max_price?, hedge?, market? ("cheapest" | "fastest"), verify?, compare?}
    POST /v1/run  {workflow, input} -> NDJSON: step events, then done or error
    POST /v1/solve {goal} -> NDJSON: the plan, step events, then done or error
                                   the answer; with "stream": true an NDJSON
                                   stream of {"event": "chunk"|"result"|"error"}
    POST /v1/connect {addr}        dial a peer and add it to the DHT

    GET  /metrics                  Prometheus text format (metrics.py)
    GET  /v1/tasks                 tasks in flight and recent, as trees
    GET  /dashboard                the live dashboard, for a browser (dashboard.py; the
                                   browser's cookie and its limits: auth.py)
    GET  /v1/models, POST /v1/chat/completions, /v1/completions, /v1/embeddings
                                   OpenAI-compatible (see openai_compat.py)
    GET  /.well-known/agent-card.json, POST /a2a   A2A agent card and JSON-RPC (a2a.py)

Errors are ``{"error": {"type", "message", "code"?}}`` with a matching status.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from llamanet.errors import (
    ConfigError,
    LlamanetError,
    LocalProtocolError,
    ModelNotFoundError,
    NoCandidatesError,
    NodeClosedError,
    RequestTimeoutError,
    TaskError,
    TransportError,
    VerificationError,
    WorkflowError,
)
from llamanet.node.node import Answer, Node
from llamanet.orchestrator.market import AwardRule
from llamanet.orchestrator.planning import make_plan
from llamanet.orchestrator.runner import StepEvent, run_workflow
from llamanet.orchestrator.workflow import Workflow, parse_workflow
from llamanet.protocol.peer_ids import peer_id_to_text

from .a2a import a2a_routes
from .auth import ApiAuth
from .dashboard import SecurityHeaders, dashboard_routes
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import render_metrics
from .openai_compat import openai_routes
from .options import ApiError, timeout_option, verify_option

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

MAX_BODY: Final = 8 * 1024 * 1024
T = TypeVar("T")


def jsonable(value: Any) -> Any:
    """msgpack values as JSON: bytes become ``{"$bytes": base64}``."""
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


def answer_json(answer: Answer) -> dict[str, Any]:
    return {
        "output": jsonable(answer.output),
        "peer": answer.peer,
        "capability": answer.capability,
        "usage": dict(answer.usage),
        "model_digest": answer.model_digest,
        "receipt": {
            "time_ms": answer.receipt.time_ms,
            "signature": base64.b64encode(answer.receipt.signature).decode(),
        },
        "elapsed_ms": round(answer.elapsed_ms, 3),
        "attempts": [{"peer": p, "error": e} for p, e in answer.attempts],
        "verified_by": [
            {"peer": p, "time_ms": r.time_ms, "signature": base64.b64encode(r.signature).decode()}
            for p, r in answer.verified_by
        ],
    }


def error_json(exc: Exception) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, WorkflowError):
        body["problems"] = exc.problems
    if isinstance(exc, TaskError):
        body["code"] = exc.code
        body["peer"] = exc.peer_id
    return {"error": body}


def _status_for(exc: Exception) -> int:
    if isinstance(exc, VerificationError):
        return 502
    if isinstance(exc, LocalProtocolError | ConfigError | WorkflowError | ValueError):
        return 400
    if isinstance(exc, NoCandidatesError | ModelNotFoundError):
        return 404
    if isinstance(exc, RequestTimeoutError):
        return 504
    if isinstance(exc, NodeClosedError):
        return 503
    if isinstance(exc, TaskError | TransportError):
        return 502
    return 500


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ApiError(413, f"request body over {MAX_BODY} bytes")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise ApiError(400, "request body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


Emit = Callable[[dict[str, Any]], Awaitable[None]]


class _NdjsonStream(Response):
    """Streams what ``produce`` emits as NDJSON, ending with an ``error`` event if
    it fails; cancels it when the client goes away."""

    media_type = "application/x-ndjson"
    trailer = b""

    @staticmethod
    def encode(event: dict[str, Any]) -> bytes:
        return json.dumps(event).encode() + b"\n"

    @staticmethod
    def failure(exc: LlamanetError) -> dict[str, Any]:
        return {"event": "error", **error_json(exc)}

    def __init__(self, produce: Callable[[Emit], Awaitable[None]]) -> None:
        # No super().__init__: it would add "content-length: 0" for the empty body.
        self.status_code = 200
        self.background = None
        self.raw_headers = [(b"content-type", self.media_type.encode())]
        self.produce = produce

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        send_events, events = trio.open_memory_channel[dict[str, Any]](64)

        async def produce() -> None:
            async with send_events:
                try:
                    await self.produce(send_events.send)
                except LlamanetError as exc:
                    await send_events.send(self.failure(exc))

        async def watch_disconnect(cancel: trio.CancelScope) -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            cancel.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            nursery.start_soon(watch_disconnect, nursery.cancel_scope)
            async with events:
                async for event in events:
                    line = self.encode(event)
                    await send({"type": "http.response.body", "body": line, "more_body": True})
            await send({"type": "http.response.body", "body": self.trailer, "more_body": False})
            nursery.cancel_scope.cancel()


class _ServerSentEvents(_NdjsonStream):
    """The same, as OpenAI-style server-sent events: ``data: <json>`` per event and
    ``data: [DONE]`` at the end; a failure is a ``data: {"error": ...}`` event."""

    media_type = "text/event-stream"
    trailer = b"data: [DONE]\n\n"

    @staticmethod
    def encode(event: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(event).encode() + b"\n\n"

    @staticmethod
    def failure(exc: LlamanetError) -> dict[str, Any]:
        return error_json(exc)


def _streamed_ask(node: Node, args: dict[str, Any]) -> _NdjsonStream:
    async def produce(emit: Emit) -> None:
        async def on_chunk(data: Any) -> None:
            await emit({"event": "chunk", "data": jsonable(data)})

        answer = await node.ask(**args, stream=True, on_chunk=on_chunk)
        await emit({"event": "result", **answer_json(answer)})

    return _NdjsonStream(produce)


def _streamed_run(
    node: Node, workflow: Workflow | None, input: Any, *, goal: str | None = None
) -> _NdjsonStream:
    """A workflow's run as NDJSON; with ``goal``, planned first (``plan`` event)."""

    async def produce(emit: Emit) -> None:
        nonlocal workflow
        if goal is not None:
            workflow, document = await make_plan(node, goal)
            await emit({"event": "plan", "workflow": jsonable(document)})
        assert workflow is not None

        async def on_event(event: StepEvent) -> None:
            await emit(
                {
                    "event": "step",
                    "step": event.step,
                    "state": event.state,
                    "elapsed_ms": round(event.elapsed_ms, 1),
                    "peers": list(event.peers),
                    "error": event.error,
                }
            )

        result = await run_workflow(node, workflow, input, on_event=on_event)
        await emit(
            {
                "event": "done",
                "output": jsonable(result.output),
                "elapsed_ms": round(result.elapsed_ms, 1),
                "steps": [result.steps[s].to_json() for s in workflow.order if s in result.steps],
            }
        )

    async def solve(emit: Emit) -> None:
        # The plan and the run it leads to are one task for the dashboard.
        with node.activity.track("solve", label=goal or ""):
            await produce(emit)

    return _NdjsonStream(produce if goal is None else solve)


Handler = Callable[[Request], Awaitable[Response]]


class ClientGoneError(Exception):
    """The HTTP client disconnected before its answer was ready."""


async def until_disconnect(request: Request, call: Callable[[], Awaitable[T]]) -> T:
    """``call()``, cancelled if the client goes away first, so a task nobody waits
    for any more stops on its peer too.  The request's body must have been read."""
    result: list[T] = []
    error: Exception | None = None
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch)
        try:
            result.append(await call())
        except Exception as exc:  # re-raised as itself, not in the nursery's group
            error = exc
        nursery.cancel_scope.cancel()
    if error is not None:
        raise error
    if not result:
        raise ClientGoneError()
    return result[0]


def build_app(node: Node, token: str) -> Starlette:
    """The ASGI app for ``node``, requiring ``token``."""
    auth = ApiAuth(token)

    def guarded(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            refused = auth.refuse(request)
            if refused is not None:
                return refused
            try:
                return await handler(request)
            except ApiError as exc:
                return JSONResponse(
                    {"error": {"type": "BadRequest", "message": str(exc)}}, status_code=exc.status
                )
            except (LlamanetError, ValueError) as exc:
                return JSONResponse(error_json(exc), status_code=_status_for(exc))

        return endpoint

    async def status(request: Request) -> Response:
        return JSONResponse(node.status().to_json())

    async def peers(request: Request) -> Response:
        return JSONResponse([row.to_json() for row in node.peers()])

    async def record(request: Request) -> Response:
        signed = node.record
        rec = signed.record.to_wire()
        rec["peer"] = peer_id_to_text(signed.peer)
        rec["addrs"] = [str(a) for a in node.addrs()]
        rec["pow"] = signed.record.pow.hex()
        return JSONResponse(
            {"record": rec, "envelope": base64.b64encode(signed.envelope).decode("ascii")}
        )

    async def find(request: Request) -> Response:
        cap = request.query_params.get("cap")
        if not cap:
            raise ApiError(400, "query parameter 'cap' is required")
        try:
            limit = int(request.query_params.get("limit", "20"))
        except ValueError:
            raise ApiError(400, "limit must be an integer") from None
        timeout = timeout_option(request.query_params.get("timeout"), 10.0)
        records = await node.find(cap, limit=max(1, min(limit, 100)), timeout=timeout)
        now = node.clock()
        return JSONResponse(
            [
                {
                    "peer_id": r.record.peer_text,
                    "capabilities": list(r.record.caps),
                    "models": [m.to_wire() for m in r.record.models],
                    "load": r.record.load,
                    "perf": dict(r.record.perf),
                    "price": r.record.price,
                    "record_seq": r.seq,
                    "record_expires_in": round(r.record.exp - now),
                }
                for r in records
            ]
        )

    async def ask(request: Request) -> Response:
        body = await _json_body(request)
        cap = body.get("cap")
        if not isinstance(cap, str):
            raise ApiError(400, "'cap' (a capability name) is required")
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise ApiError(400, "'params' must be an object")
        peer = body.get("peer")
        if peer is not None and not isinstance(peer, str):
            raise ApiError(400, "'peer' must be a peer ID")
        session = body.get("session")
        if session is not None and not (isinstance(session, str) and 0 < len(session) <= 128):
            raise ApiError(400, "'session' must be a name of 1 to 128 characters")
        model = body.get("model")
        if model is not None and not isinstance(model, dict):
            raise ApiError(400, "'model' must be an object of constraints")
        max_price = body.get("max_price")
        if max_price is not None and not isinstance(max_price, int | float):
            raise ApiError(400, "'max_price' must be a number")
        hedge = body.get("hedge", False)
        if not isinstance(hedge, bool | int | float):
            raise ApiError(400, "'hedge' must be true, false or seconds")
        args: dict[str, Any] = {
            "capability": cap,
            "input": body.get("input"),
            "params": params,
            "timeout": timeout_option(body.get("timeout"), 30.0),
            "peer": peer,
            "session": session,
            "model": model,
            "max_price": max_price,
            "hedge": hedge,
        }
        verify = verify_option(body.get("verify", 1))
        if verify > 1:
            args.update(verify=verify, compare=str(body.get("compare", "exact")))
        market = body.get("market")
        if market is not None:
            # Awarded by bids; the winner is pinned, so peer and hedge do not apply.
            try:
                rule = AwardRule(kind=str(market), price_cap=max_price)
            except ValueError as exc:
                raise ApiError(400, str(exc)) from None
            answer, report = await node.tender(
                cap, args["input"], rule=rule, timeout=args["timeout"], params=params
            )
            reply = answer_json(answer)
            reply["market"] = {
                "rule": rule.kind,
                "bids": len(report.bids),
                "price": report.winner.price if report.winner else None,
                "set_aside": [{"peer": p, "why": w} for p, w in report.set_aside],
            }
            return JSONResponse(reply)
        if body.get("stream"):
            return _streamed_ask(node, args)
        try:
            answer = await until_disconnect(request, lambda: node.ask(**args))
        except ClientGoneError:
            return Response(status_code=499)  # nobody reads it; nginx's "client closed"
        return JSONResponse(answer_json(answer))

    async def run(request: Request) -> Response:
        body = await _json_body(request)
        workflow = parse_workflow(body.get("workflow"), source="workflow")
        return _streamed_run(node, workflow, body.get("input"))

    async def solve(request: Request) -> Response:
        body = await _json_body(request)
        goal = body.get("goal")
        if not isinstance(goal, str) or not goal.strip():
            raise ApiError(400, "'goal' (a string) is required")
        return _streamed_run(node, None, goal, goal=goal)

    async def connect(request: Request) -> Response:
        body = await _json_body(request)
        addr = body.get("addr")
        if not isinstance(addr, str):
            raise ApiError(400, "'addr' (a multiaddr with /p2p/<id>) is required")
        peer = await node.connect(addr)
        return JSONResponse({"peer_id": peer_id_to_text(peer) if peer else None})

    async def metrics(request: Request) -> Response:
        return Response(render_metrics(node), media_type=METRICS_CONTENT_TYPE)

    routes = [
        Route("/metrics", guarded(metrics), methods=["GET"]),
        *openai_routes(node, guarded, _ServerSentEvents),
        *a2a_routes(node, guarded),
        Route("/v1/status", guarded(status), methods=["GET"]),
        Route("/v1/peers", guarded(peers), methods=["GET"]),
        Route("/v1/record", guarded(record), methods=["GET"]),
        Route("/v1/find", guarded(find), methods=["GET"]),
        Route("/v1/ask", guarded(ask), methods=["POST"]),
        Route("/v1/run", guarded(run), methods=["POST"]),
        Route("/v1/solve", guarded(solve), methods=["POST"]),
        Route("/v1/connect", guarded(connect), methods=["POST"]),
        *dashboard_routes(node, guarded, auth),
    ]
    return Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)])


def write_api_file(path: Path, url: str, token: str, peer_id: str) -> None:
    """Write ``api.json`` atomically with mode 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = json.dumps({"url": url, "token": token, "pid": os.getpid(), "peer_id": peer_id})
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as fh:
        fh.write(data)
    os.replace(tmp, path)


def remove_api_file(path: Path) -> None:
    """Remove ``api.json`` if it is still ours (another daemon may have replaced it)."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


async def serve_api(node: Node, *, task_status: TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the API until cancelled; ``started`` with its URL once api.json exists."""
    token = secrets.token_urlsafe(32)
    config = HypercornConfig()
    config.bind = [f"{node.config.api_host}:{node.config.api_port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("llamanet.api.http")
    config.graceful_timeout = 1.0
    app = build_app(node, token)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, config)
        url = binds[0]
        node.api_url = url
        write_api_file(node.config.api_file, url, token, node.peer_id_text)
        try:
            task_status.started(url)
            await trio.sleep_forever()
        finally:
            remove_api_file(node.config.api_file)
