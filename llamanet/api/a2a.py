"""A2A (Agent2Agent protocol 1.0) on the node's local API, so A2A clients can
give the swarm work the way they give it to any agent.

    GET  /.well-known/agent-card.json   the node's agent card
    POST /a2a                           the JSON-RPC 2.0 binding: SendMessage,
                                        SendStreamingMessage (server-sent events),
                                        GetTask, ListTasks, CancelTask, SubscribeToTask

A message becomes one llamanet task, routed by the orchestrator like any other.
Its capability is ``llm.chat`` unless ``metadata.llamanet.capability`` names
another; ``metadata.llamanet`` may also set ``verify``, ``peer``, ``timeout``,
``max_price``, ``model``, ``params`` and ``compare``.  The input is the message's
text parts (shaped as the capability family expects: chat messages, a prompt,
texts to embed, or the text itself), or its one data part as it is, or its one
raw part as bytes.  The answer is the task's one artifact: a text part for text,
a raw part for bytes, a data part for anything else.

``contextId`` is the llamanet session: messages in one context continue one
conversation (the node keeps it and sends follow-ups to the peer holding it).
A message without one starts a new context.  Tasks never ask for more input, so
a message naming an existing ``taskId`` is refused.

Tasks are kept in memory, bounded in number and age, and belong to the request
that started them: a blocking ``SendMessage`` runs its task, a non-blocking one
(``returnImmediately``) runs it after the response is sent, and a stream runs it
even after its client has gone (``GetTask`` or ``SubscribeToTask`` pick it up).

The card lists what this node serves itself, and declares llamanet's libp2p task
transport as a custom protocol binding (:data:`LIBP2P_BINDING`, one interface per
listen address ending in ``/p2p/<peer id>``) so llamanet-aware agents can take the
direct route.  Authentication is the node's API token as a bearer token, on the
card too.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import trio
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from llamanet.adapters.libp2p_host import CAPS_PROTOCOL, TASK_PROTOCOL
from llamanet.errors import LlamanetError
from llamanet.node.node import Answer, Node
from llamanet.protocol.capabilities import validate_capability
from llamanet.protocol.peer_ids import peer_id_from_text

from .openai_compat import llamanet_extension, model_constraint
from .options import ApiError

log = logging.getLogger(__name__)

Json = dict[str, Any]
RpcId = str | int | None
Handler = Callable[[Request], Awaitable[Response]]
Guard = Callable[[Handler], Handler]

PROTOCOL_VERSION: Final = "1.0"
CARD_PATH: Final = "/.well-known/agent-card.json"
RPC_PATH: Final = "/a2a"
LIBP2P_BINDING: Final = "urn:llamanet:binding:libp2p:1"
"""The custom binding: llamanet's task protocol over libp2p (TCP, Noise, Yamux,
msgpack frames); version 1 is ``/llamanet/task/1.0.0``."""
OPTIONS_EXTENSION: Final = "urn:llamanet:a2a:options:1"
"""``metadata.llamanet`` on a message: which capability, and how to run it."""
DEFAULT_CAPABILITY: Final = "llm.chat"

MAX_BODY: Final = 8 * 1024 * 1024
"""The same bound as the rest of the local API."""
MAX_ID_CHARS: Final = 128
"""Longest context or task ID; a context ID is also the session name."""
MAX_TASKS: Final = 1000
MAX_RUNNING: Final = 256
TASK_TTL: Final = 3600.0
"""Seconds a finished task is kept after its last update."""
WATCHER_BUFFER: Final = 1024
"""Events a stream may fall behind by before it is cut off (the task goes on)."""
KEEPALIVE_INTERVAL: Final = 3.0
"""Seconds of silence after which a stream sends an SSE comment: HTTP clients
with a short read timeout (httpx's default is 5 s) would otherwise give up on a
model that is slow to start."""
CANCEL_WAIT: Final = 10.0
DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 100

SUBMITTED: Final = "TASK_STATE_SUBMITTED"
WORKING: Final = "TASK_STATE_WORKING"
COMPLETED: Final = "TASK_STATE_COMPLETED"
FAILED: Final = "TASK_STATE_FAILED"
CANCELED: Final = "TASK_STATE_CANCELED"
REJECTED: Final = "TASK_STATE_REJECTED"
TERMINAL: Final = frozenset({COMPLETED, FAILED, CANCELED, REJECTED})
STATES: Final = frozenset(
    {
        SUBMITTED,
        WORKING,
        COMPLETED,
        FAILED,
        CANCELED,
        REJECTED,
        "TASK_STATE_INPUT_REQUIRED",
        "TASK_STATE_AUTH_REQUIRED",
    }
)

_SKILLS: Final = {
    "text.echo": ("Echo", "Streams its input back unchanged.", ["Hello, swarm"]),
    "math.eval": (
        "Arithmetic",
        "Evaluates an arithmetic expression exactly (no code execution).",
        ["2*(3+4)"],
    ),
    "text.stats": (
        "Text statistics",
        "Counts characters, words, lines and sentences, and names the top words.",
        ["The quick brown fox. It jumps."],
    ),
    "llm.chat": ("Chat", "Chat with a language model.", ["Explain Kademlia in one sentence."]),
    "llm.generate": ("Text completion", "Continues a prompt with a language model.", []),
    "llm.embed": ("Embeddings", "Embeds each text part as a vector.", []),
}


# --- JSON-RPC errors -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Kind:
    code: int
    reason: str


PARSE_ERROR: Final = _Kind(-32700, "")
INVALID_REQUEST: Final = _Kind(-32600, "INVALID_REQUEST")
METHOD_NOT_FOUND: Final = _Kind(-32601, "METHOD_NOT_FOUND")
INVALID_PARAMS: Final = _Kind(-32602, "INVALID_PARAMS")
INTERNAL_ERROR: Final = _Kind(-32603, "INTERNAL_ERROR")
TASK_NOT_FOUND: Final = _Kind(-32001, "TASK_NOT_FOUND")
TASK_NOT_CANCELABLE: Final = _Kind(-32002, "TASK_NOT_CANCELABLE")
PUSH_NOT_SUPPORTED: Final = _Kind(-32003, "PUSH_NOTIFICATION_NOT_SUPPORTED")
UNSUPPORTED_OPERATION: Final = _Kind(-32004, "UNSUPPORTED_OPERATION")
CONTENT_TYPE_NOT_SUPPORTED: Final = _Kind(-32005, "CONTENT_TYPE_NOT_SUPPORTED")
NO_EXTENDED_CARD: Final = _Kind(-32007, "EXTENDED_AGENT_CARD_NOT_CONFIGURED")
VERSION_NOT_SUPPORTED: Final = _Kind(-32009, "VERSION_NOT_SUPPORTED")


class RpcError(Exception):
    """Raised by a method handler to answer with a JSON-RPC error."""

    def __init__(self, kind: _Kind, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    def to_json(self) -> Json:
        error: Json = {"code": self.kind.code, "message": str(self)}
        if self.kind.reason:
            # A google.rpc.ErrorInfo detail: what A2A clients read the reason from.
            error["data"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": self.kind.reason,
                    "domain": "a2a-protocol.org",
                    "metadata": {},
                }
            ]
        return error


def _bad(message: str) -> RpcError:
    return RpcError(INVALID_PARAMS, message)


def _rpc_reply(rpc_id: RpcId, *, result: Any = None, error: RpcError | None = None) -> Json:
    if error is not None:
        return {"jsonrpc": "2.0", "id": rpc_id, "error": error.to_json()}
    return {"jsonrpc": "2.0", "id": rpc_id, "result": result}


# --- values ------------------------------------------------------------------------------


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _parse_timestamp(value: Any, name: str) -> float:
    if not isinstance(value, str):
        raise _bad(f"{name} must be an RFC 3339 timestamp")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(f"{name} must be an RFC 3339 timestamp") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _json_value(value: Any) -> Any:
    """A msgpack value as JSON (nested bytes as ``{"$bytes": base64}``, as the rest
    of the API writes them)."""
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return value


def _part(value: Any) -> Json:
    """One A2A part holding ``value``."""
    if isinstance(value, str):
        return {"text": value}
    if isinstance(value, bytes):
        return {
            "raw": base64.b64encode(value).decode("ascii"),
            "mediaType": "application/octet-stream",
        }
    return {"data": _json_value(value), "mediaType": "application/json"}


def _int_param(params: Json, name: str, *, low: int, high: int | None = None) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise _bad(f"{name} must be an integer >= {low}")
    return value if high is None else min(value, high)


def _id_param(params: Json) -> str:
    value = params.get("id")
    if not isinstance(value, str) or not value:
        raise _bad("'id' (a task ID) is required")
    return value


def _family(capability: str) -> str | None:
    for family in ("llm.chat", "llm.generate", "llm.embed"):
        if capability == family or capability.startswith(family + "."):
            return family
    return None


# --- tasks -------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class A2ATask:
    """One A2A task: a llamanet task's state as A2A clients see it."""

    id: str
    context_id: str
    capability: str
    updated_at: float
    state: str = SUBMITTED
    history: list[Json] = field(default_factory=list)
    artifacts: list[Json] = field(default_factory=list)
    status_message: Json | None = None
    metadata: Json = field(default_factory=dict)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    """Cancelling it cancels the llamanet task (and the worker's, over libp2p)."""
    settled: trio.Event = field(default_factory=trio.Event)
    watchers: list[trio.MemorySendChannel[Json]] = field(default_factory=list)
    artifact_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def status_json(self) -> Json:
        status: Json = {"state": self.state, "timestamp": _timestamp(self.updated_at)}
        if self.status_message is not None:
            status["message"] = self.status_message
        return status

    def to_json(self, history_length: int | None = None, *, artifacts: bool = True) -> Json:
        history = self.history
        if history_length is not None:
            history = history[len(history) - history_length :] if history_length else []
        task: Json = {
            "id": self.id,
            "contextId": self.context_id,
            "status": self.status_json(),
            "history": list(history),
            "metadata": self.metadata,
        }
        if artifacts:
            task["artifacts"] = list(self.artifacts)
        return task

    def agent_message(self, text: str) -> Json:
        return {
            "messageId": str(uuid.uuid4()),
            "contextId": self.context_id,
            "taskId": self.id,
            "role": "ROLE_AGENT",
            "parts": [{"text": text}],
        }

    def watch(self) -> trio.MemoryReceiveChannel[Json]:
        """The task's events from now on (``StreamResponse`` objects), ending when
        the task does."""
        send, receive = trio.open_memory_channel[Json](WATCHER_BUFFER)
        if self.terminal:
            send.close()
        else:
            self.watchers.append(send)
        return receive

    def publish(self, event: Json) -> None:
        # Never waits: one slow reader must not hold up the task or other readers.
        for watcher in list(self.watchers):
            try:
                watcher.send_nowait(event)
            except trio.WouldBlock:
                log.warning("A2A task %s: a stream fell too far behind; closing it", self.id)
                self.watchers.remove(watcher)
                watcher.close()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.watchers.remove(watcher)

    def move_to(self, state: str, now: float, text: str | None = None) -> None:
        self.state = state
        self.updated_at = now
        self.status_message = self.agent_message(text) if text is not None else None
        self.publish(
            {
                "statusUpdate": {
                    "taskId": self.id,
                    "contextId": self.context_id,
                    "status": self.status_json(),
                }
            }
        )
        if self.terminal:
            for watcher in self.watchers:
                watcher.close()
            self.watchers.clear()
            self.settled.set()

    def artifact(
        self, parts: list[Json], *, append: bool, last: bool, metadata: Json | None = None
    ) -> Json:
        artifact: Json = {"artifactId": self.artifact_id, "name": "answer", "parts": parts}
        if metadata is not None:
            artifact["metadata"] = metadata
        self.publish(
            {
                "artifactUpdate": {
                    "taskId": self.id,
                    "contextId": self.context_id,
                    "artifact": artifact,
                    "append": append,
                    "lastChunk": last,
                }
            }
        )
        return artifact

    def complete(self, answer: Answer, now: float) -> None:
        provenance = {
            "peer": answer.peer,
            "capability": answer.capability,
            "usage": dict(answer.usage),
            "model_digest": answer.model_digest,
            "elapsed_ms": round(answer.elapsed_ms, 3),
            "receipt": {
                "time_ms": answer.receipt.time_ms,
                "signature": base64.b64encode(answer.receipt.signature).decode("ascii"),
            },
            "verified_by": [peer for peer, _ in answer.verified_by],
        }
        # The whole answer replaces whatever was streamed, so a client that applies
        # the updates ends with exactly what GetTask returns.
        self.artifacts = [
            self.artifact(
                [_part(answer.output)], append=False, last=True, metadata={"llamanet": provenance}
            )
        ]
        # Replaced, never changed in place: published snapshots share it.
        self.metadata = {"llamanet": {**self.metadata["llamanet"], "peer": answer.peer}}
        self.move_to(COMPLETED, now)


class TaskStore:
    """A2A tasks by ID, bounded: finished tasks go after :data:`TASK_TTL` seconds
    without an update, and the oldest finished ones first when over ``max_tasks``."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        max_tasks: int = MAX_TASKS,
        max_running: int = MAX_RUNNING,
        ttl: float = TASK_TTL,
    ) -> None:
        self._clock = clock
        self.max_tasks = max_tasks
        self.max_running = max_running
        self.ttl = ttl
        self._tasks: OrderedDict[str, A2ATask] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tasks)

    def running(self) -> int:
        return sum(1 for t in self._tasks.values() if not t.terminal)

    def add(self, task: A2ATask) -> None:
        self._tasks[task.id] = task
        self.sweep()

    def get(self, task_id: str) -> A2ATask | None:
        self.sweep()
        return self._tasks.get(task_id)

    def tasks(self) -> Iterable[A2ATask]:
        self.sweep()
        return self._tasks.values()

    def sweep(self) -> None:
        now = self._clock()
        old = [t.id for t in self._tasks.values() if t.terminal and now - t.updated_at > self.ttl]
        for task_id in old:
            del self._tasks[task_id]
        if len(self._tasks) > self.max_tasks:
            finished = [t.id for t in self._tasks.values() if t.terminal]
            for task_id in finished[: len(self._tasks) - self.max_tasks]:
                del self._tasks[task_id]


# --- server-sent events ------------------------------------------------------------------


class _TaskEvents(Response):
    """A task's events as server-sent events, each a JSON-RPC response.  With
    ``run``, the stream also runs the task, which goes on if the client leaves."""

    media_type = "text/event-stream"

    def __init__(
        self,
        rpc_id: RpcId,
        first: Json,
        events: trio.MemoryReceiveChannel[Json],
        run: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        # No super().__init__: it would add "content-length: 0" for the empty body.
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", self.media_type.encode()),
            (b"cache-control", b"no-store"),
        ]
        self.rpc_id = rpc_id
        self.first = first
        self.events = events
        self.run = run

    def encode(self, event: Json) -> bytes:
        return b"data: " + json.dumps(_rpc_reply(self.rpc_id, result=event)).encode() + b"\n\n"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})

        async def until_disconnect(writing: trio.CancelScope) -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            writing.cancel()

        async with trio.open_nursery() as running:
            if self.run is not None:
                running.start_soon(self.run)
            async with trio.open_nursery() as writing, self.events:
                writing.start_soon(until_disconnect, writing.cancel_scope)
                await send(
                    {
                        "type": "http.response.body",
                        "body": self.encode(self.first),
                        "more_body": True,
                    }
                )
                while True:
                    chunk = b": keepalive\n\n"
                    with trio.move_on_after(KEEPALIVE_INTERVAL):
                        try:
                            chunk = self.encode(await self.events.receive())
                        except trio.EndOfChannel:
                            break
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                writing.cancel_scope.cancel()


# --- the endpoint ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Work:
    """A validated message: the task made for it and how to run it."""

    task: A2ATask
    ask: Json
    history_length: int | None
    return_immediately: bool


class A2AEndpoint:
    """The agent card and the JSON-RPC methods, for one node."""

    def __init__(self, node: Node, store: TaskStore | None = None) -> None:
        self.node = node
        self.store = store or TaskStore(node.clock)
        self.methods: dict[str, Callable[[RpcId, Json], Awaitable[Response]]] = {
            "SendMessage": self.send_message,
            "SendStreamingMessage": self.send_streaming_message,
            "GetTask": self.get_task,
            "ListTasks": self.list_tasks,
            "CancelTask": self.cancel_task,
            "SubscribeToTask": self.subscribe_to_task,
            "GetExtendedAgentCard": self.no_extended_card,
        }
        for name in (
            "CreateTaskPushNotificationConfig",
            "GetTaskPushNotificationConfig",
            "ListTaskPushNotificationConfigs",
            "DeleteTaskPushNotificationConfig",
        ):
            self.methods[name] = self.no_push_notifications

    # -- the card --

    def card(self, rpc_url: str) -> Json:
        node = self.node
        status = node.status()
        addrs = node.addrs()
        interfaces: list[Json] = [
            {"url": rpc_url, "protocolBinding": "JSONRPC", "protocolVersion": PROTOCOL_VERSION}
        ]
        interfaces += [
            {"url": addr, "protocolBinding": LIBP2P_BINDING, "protocolVersion": PROTOCOL_VERSION}
            for addr in addrs
        ]
        return {
            "name": f"llamanet node {node.peer_id_text}",
            "description": (
                f"A llamanet node in swarm {node.config.swarm!r}. Messages become llamanet "
                f"tasks run by peers in the swarm: {DEFAULT_CAPABILITY} unless "
                "metadata.llamanet.capability names another capability. The skills "
                "listed are the ones this node serves itself, also reachable over "
                "libp2p at the llamanet interfaces."
            ),
            "version": status.version,
            "supportedInterfaces": interfaces,
            "capabilities": {
                "streaming": True,
                "pushNotifications": False,
                "extendedAgentCard": False,
                "extensions": [
                    {
                        "uri": OPTIONS_EXTENSION,
                        "description": (
                            "metadata.llamanet on a message: capability, verify (run on "
                            "k peers and take the quorum answer), peer, timeout, "
                            "max_price, model, params, compare"
                        ),
                        "required": False,
                    },
                    {
                        "uri": LIBP2P_BINDING,
                        "description": (
                            "llamanet's own task transport: msgpack frames over libp2p "
                            "(TCP, Noise, Yamux); tasks are signed and receipted"
                        ),
                        "required": False,
                        "params": {
                            "peerId": node.peer_id_text,
                            "swarm": node.config.swarm,
                            "taskProtocol": str(TASK_PROTOCOL),
                            "recordProtocol": str(CAPS_PROTOCOL),
                            "multiaddrs": addrs,
                        },
                    },
                ],
            },
            "securitySchemes": {
                "bearer": {
                    "httpAuthSecurityScheme": {
                        "scheme": "Bearer",
                        "description": "the node's API token (token in $LLAMANET_HOME/api.json)",
                    }
                }
            },
            "securityRequirements": [{"schemes": {"bearer": {"list": []}}}],
            "defaultInputModes": ["text/plain", "application/json"],
            "defaultOutputModes": ["text/plain", "application/json"],
            "skills": [self._skill(cap) for cap in status.capabilities],
        }

    def _skill(self, capability: str) -> Json:
        known = _SKILLS.get(capability)
        name, description, examples = known or (capability, "", [])
        family = _family(capability)
        if family is not None:
            models = sorted({m.name for m in self.node.worker.models()})
            if models:
                description += f" Models: {', '.join(models)}."
        if not description:
            description = f"The capability {capability}."
        if capability != DEFAULT_CAPABILITY:
            description += (
                f' Ask for it with metadata {{"llamanet": {{"capability": "{capability}"}}}}.'
            )
        text_only = family in ("llm.chat", "llm.generate")
        return {
            "id": capability,
            "name": name,
            "description": description,
            "tags": ["llamanet", *capability.split(".")],
            "examples": examples,
            "inputModes": ["text/plain"] if family else ["text/plain", "application/json"],
            "outputModes": ["text/plain"]
            if text_only
            else (["application/json"] if family else ["text/plain", "application/json"]),
        }

    # -- requests --

    async def serve_card(self, request: Request) -> Response:
        base = self.node.api_url or str(request.base_url)
        return JSONResponse(self.card(base.rstrip("/") + RPC_PATH))

    async def serve_rpc(self, request: Request) -> Response:
        rpc_id: RpcId = None
        try:
            body = await self._read_body(request)
            try:
                call = json.loads(body)
            except ValueError as exc:
                raise RpcError(PARSE_ERROR, f"the body is not JSON: {exc}") from None
            if isinstance(call, list):
                raise RpcError(INVALID_REQUEST, "batch requests are not supported")
            if not isinstance(call, dict):
                raise RpcError(INVALID_REQUEST, "a request must be a JSON object")
            given_id = call.get("id")
            if isinstance(given_id, str | int) and not isinstance(given_id, bool):
                rpc_id = given_id
            elif given_id is not None:
                raise RpcError(INVALID_REQUEST, "'id' must be a string, an integer or null")
            if call.get("jsonrpc") != "2.0":
                raise RpcError(INVALID_REQUEST, "'jsonrpc' must be \"2.0\"")
            method = call.get("method")
            if not isinstance(method, str) or not method:
                raise RpcError(INVALID_REQUEST, "'method' (a string) is required")
            params = call.get("params", {})
            if not isinstance(params, dict):
                raise RpcError(INVALID_PARAMS, "'params' must be an object")
            handler = self.methods.get(method)
            if handler is None:
                raise RpcError(METHOD_NOT_FOUND, f"no method {method!r}")
            self._check_version(request)
            return await handler(rpc_id, params)
        except RpcError as exc:
            return JSONResponse(_rpc_reply(rpc_id, error=exc))

    @staticmethod
    async def _read_body(request: Request) -> bytes:
        too_large = RpcError(INVALID_REQUEST, f"request body over {MAX_BODY} bytes")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            raise too_large
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise too_large
        return bytes(body)

    @staticmethod
    def _check_version(request: Request) -> None:
        # Clients that send no version (curl, scripts) get 1.0, the only one spoken.
        version = request.headers.get("a2a-version", "").strip()
        if version and version.split(".")[0] != PROTOCOL_VERSION.split(".")[0]:
            raise RpcError(
                VERSION_NOT_SUPPORTED,
                f"A2A version {version!r} is not supported; this agent speaks {PROTOCOL_VERSION}",
            )

    # -- methods --

    async def send_message(self, rpc_id: RpcId, params: Json) -> Response:
        work = self._accept(params)
        if work.return_immediately:
            snapshot = work.task.to_json(work.history_length)
            run = BackgroundTask(self._run, work.task, work.ask, stream=False)
            return JSONResponse(_rpc_reply(rpc_id, result={"task": snapshot}), background=run)
        await self._run(work.task, work.ask, stream=False)
        return JSONResponse(
            _rpc_reply(rpc_id, result={"task": work.task.to_json(work.history_length)})
        )

    async def send_streaming_message(self, rpc_id: RpcId, params: Json) -> Response:
        work = self._accept(params)
        events = work.task.watch()

        async def run() -> None:
            await self._run(work.task, work.ask, stream=True)

        return _TaskEvents(rpc_id, {"task": work.task.to_json(work.history_length)}, events, run)

    async def subscribe_to_task(self, rpc_id: RpcId, params: Json) -> Response:
        task = self._task(_id_param(params))
        if task.terminal:
            raise RpcError(
                UNSUPPORTED_OPERATION, f"task {task.id} is in terminal state {task.state}"
            )
        # Snapshot and subscription with no checkpoint between: nothing is missed.
        return _TaskEvents(rpc_id, {"task": task.to_json()}, task.watch())

    async def get_task(self, rpc_id: RpcId, params: Json) -> Response:
        task = self._task(_id_param(params))
        history_length = _int_param(params, "historyLength", low=0)
        return JSONResponse(_rpc_reply(rpc_id, result=task.to_json(history_length)))

    async def list_tasks(self, rpc_id: RpcId, params: Json) -> Response:
        context_id = params.get("contextId") or None
        if context_id is not None and not isinstance(context_id, str):
            raise _bad("contextId must be a string")
        state = params.get("status") or None
        if state == "TASK_STATE_UNSPECIFIED":
            state = None
        if state is not None and state not in STATES:
            raise _bad(f"status must be one of {', '.join(sorted(STATES))}")
        page_size = _int_param(params, "pageSize", low=1, high=MAX_PAGE_SIZE) or DEFAULT_PAGE_SIZE
        history_length = _int_param(params, "historyLength", low=0)
        after = params.get("statusTimestampAfter")
        since = _parse_timestamp(after, "statusTimestampAfter") if after is not None else None
        tasks = sorted(
            (
                t
                for t in self.store.tasks()
                if (context_id is None or t.context_id == context_id)
                and (state is None or t.state == state)
                and (since is None or t.updated_at > since)
            ),
            key=lambda t: (t.updated_at, t.id),
            reverse=True,
        )
        total = len(tasks)
        token = params.get("pageToken") or ""
        if token:
            cursor = _decode_cursor(token)
            tasks = [t for t in tasks if (t.updated_at, t.id) < cursor]
        page, rest = tasks[:page_size], tasks[page_size:]
        result = {
            "tasks": [
                t.to_json(history_length, artifacts=bool(params.get("includeArtifacts")))
                for t in page
            ],
            "nextPageToken": _encode_cursor(page[-1]) if rest else "",
            "pageSize": page_size,
            "totalSize": total,
        }
        return JSONResponse(_rpc_reply(rpc_id, result=result))

    async def cancel_task(self, rpc_id: RpcId, params: Json) -> Response:
        task = self._task(_id_param(params))
        if task.terminal:
            raise RpcError(TASK_NOT_CANCELABLE, f"task {task.id} is already {task.state}")
        if task.state == SUBMITTED:
            # Not started yet: its runner will find it finished and do nothing.
            task.move_to(CANCELED, self.node.clock(), "canceled before it started")
        task.scope.cancel()
        with trio.move_on_after(CANCEL_WAIT):
            await task.settled.wait()
        ended = task.state
        if ended in TERMINAL and ended != CANCELED:
            raise RpcError(
                TASK_NOT_CANCELABLE, f"task {task.id} ended {ended} before it was canceled"
            )
        return JSONResponse(_rpc_reply(rpc_id, result=task.to_json()))

    async def no_push_notifications(self, rpc_id: RpcId, params: Json) -> Response:
        raise RpcError(PUSH_NOT_SUPPORTED, "push notifications are not supported")

    async def no_extended_card(self, rpc_id: RpcId, params: Json) -> Response:
        raise RpcError(NO_EXTENDED_CARD, "there is no extended agent card")

    # -- running tasks --

    def _task(self, task_id: str) -> A2ATask:
        task = self.store.get(task_id)
        if task is None:
            raise RpcError(TASK_NOT_FOUND, f"no task {task_id!r} (unknown, or forgotten)")
        return task

    def _accept(self, params: Json) -> _Work:
        """Validate a SendMessage's params and register its task."""
        message = params.get("message")
        if not isinstance(message, dict):
            raise _bad("'message' (an object) is required")
        config = params.get("configuration") or {}
        if not isinstance(config, dict):
            raise _bad("'configuration' must be an object")
        if config.get("taskPushNotificationConfig"):
            raise RpcError(PUSH_NOT_SUPPORTED, "push notifications are not supported")
        history_length = _int_param(config, "historyLength", low=0)
        if message.get("role") != "ROLE_USER":
            raise _bad("message.role must be ROLE_USER")
        task_id = message.get("taskId")
        if task_id:
            existing = self._task(str(task_id))
            raise RpcError(
                UNSUPPORTED_OPERATION,
                f"task {existing.id} is {existing.state} and takes no further input; "
                "send a new message without taskId (the same contextId continues the session)",
            )
        context_id = message.get("contextId") or str(uuid.uuid4())
        if not isinstance(context_id, str) or len(context_id) > MAX_ID_CHARS:
            raise _bad(f"message.contextId must be a string of at most {MAX_ID_CHARS} characters")
        meta = {
            **(_object(params.get("metadata"), "metadata").get("llamanet") or {}),
            **(_object(message.get("metadata"), "message.metadata").get("llamanet") or {}),
        }
        ask = self._ask_args(meta)
        ask["input"] = _task_input(message.get("parts"), ask["capability"])
        ask["session"] = context_id

        now = self.node.clock()
        task = A2ATask(
            id=str(uuid.uuid4()),
            context_id=context_id,
            capability=ask["capability"],
            updated_at=now,
            metadata={"llamanet": {"capability": ask["capability"], "session": context_id}},
        )
        task.history.append(_user_message(message, task))
        if self.store.running() >= self.store.max_running:
            task.move_to(
                REJECTED, now, f"too many A2A tasks running here ({self.store.max_running})"
            )
        self.store.add(task)
        return _Work(
            task=task,
            ask=ask,
            history_length=history_length,
            return_immediately=bool(config.get("returnImmediately")),
        )

    def _ask_args(self, meta: Mapping[str, Any]) -> Json:
        """``Node.ask`` arguments from ``metadata.llamanet``."""
        try:
            ask = llamanet_extension({"llamanet": dict(meta)})
        except ApiError as exc:
            raise _bad(f"metadata.{exc}") from None
        capability = meta.get("capability", DEFAULT_CAPABILITY)
        if not isinstance(capability, str):
            raise _bad("metadata.llamanet.capability must be a capability name")
        try:
            ask["capability"] = validate_capability(capability)
            if "peer" in ask:
                peer_id_from_text(ask["peer"])
            if "model" in meta:
                model = meta["model"]
                ask["model"] = (
                    dict(model) if isinstance(model, dict) else model_constraint(self.node, model)
                )
        except (LlamanetError, ApiError) as exc:
            raise _bad(f"metadata.llamanet: {exc}") from None
        params = meta.get("params", {})
        if not isinstance(params, dict):
            raise _bad("metadata.llamanet.params must be an object")
        ask["params"] = params
        if ask.get("verify", 1) > 1:
            ask["compare"] = str(meta.get("compare", "exact"))
        return ask

    async def _run(self, task: A2ATask, ask: Json, *, stream: bool) -> None:
        """Run ``task`` to a terminal state (unless it already is in one)."""
        if task.terminal:
            return
        clock = self.node.clock
        streamed = False

        async def on_chunk(data: Any) -> None:
            nonlocal streamed
            task.artifact([_part(data)], append=streamed, last=False)
            streamed = True

        answer: Answer | None = None
        try:
            with task.scope:
                task.move_to(WORKING, clock())
                try:
                    answer = await self.node.ask(
                        **ask, stream=stream, on_chunk=on_chunk if stream else None
                    )
                except (LlamanetError, ValueError) as exc:
                    task.move_to(FAILED, clock(), f"{type(exc).__name__}: {exc}")
            if task.scope.cancelled_caught and not task.terminal:
                task.move_to(CANCELED, clock(), "canceled at the client's request")
            elif answer is not None:
                task.complete(answer, clock())
        finally:
            if not task.terminal:
                # The API is shutting down, or a bug escaped: say so, and close streams.
                task.move_to(FAILED, clock(), "interrupted: the node's API stopped the task")


def _object(value: Any, name: str) -> Json:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(f"{name} must be an object")
    llamanet = value.get("llamanet")
    if llamanet is not None and not isinstance(llamanet, dict):
        raise _bad(f"{name}.llamanet must be an object")
    return value


def _user_message(message: Json, task: A2ATask) -> Json:
    kept: Json = {
        k: message[k]
        for k in ("messageId", "parts", "metadata", "extensions", "referenceTaskIds")
        if k in message
    }
    kept.setdefault("messageId", str(uuid.uuid4()))
    return {**kept, "role": "ROLE_USER", "contextId": task.context_id, "taskId": task.id}


def _task_input(parts: Any, capability: str) -> Any:
    """A llamanet task input from a message's parts (see the module docstring)."""
    if not isinstance(parts, list) or not parts:
        raise _bad("message.parts must be a non-empty list")
    texts: list[str] = []
    others: list[Any] = []
    for part in parts:
        if not isinstance(part, dict):
            raise _bad("every part must be an object")
        if "text" in part:
            if not isinstance(part["text"], str):
                raise _bad("a text part's text must be a string")
            texts.append(part["text"])
        elif "data" in part:
            others.append(part["data"])
        elif "raw" in part:
            try:
                others.append(base64.b64decode(str(part["raw"]), validate=True))
            except binascii.Error:
                raise _bad("a raw part must hold base64") from None
        elif "url" in part:
            raise RpcError(
                CONTENT_TYPE_NOT_SUPPORTED,
                "url parts are not fetched; send the content as text, data or raw",
            )
        else:
            raise _bad("a part needs text, data, raw or url")
    if others:
        if len(parts) != 1:
            raise _bad("a message is either text parts, or one data part, or one raw part")
        return others[0]
    text = "\n".join(texts)
    family = _family(capability)
    if family == "llm.chat":
        return {"messages": [{"role": "user", "content": text}]}
    if family == "llm.generate":
        return {"prompt": text}
    if family == "llm.embed":
        return {"texts": texts}
    return text


def _encode_cursor(task: A2ATask) -> str:
    return base64.urlsafe_b64encode(json.dumps([task.updated_at, task.id]).encode()).decode()


def _decode_cursor(token: Any) -> tuple[float, str]:
    try:
        updated_at, task_id = json.loads(base64.urlsafe_b64decode(str(token)))
        return float(updated_at), str(task_id)
    except (ValueError, TypeError, binascii.Error):
        raise _bad("pageToken is not one this agent gave out") from None


def a2a_routes(node: Node, guarded: Guard) -> list[Route]:
    """The agent card and the JSON-RPC endpoint, each behind ``guarded`` (the token)."""
    endpoint = A2AEndpoint(node)
    return [
        Route(CARD_PATH, guarded(endpoint.serve_card), methods=["GET"]),
        Route(RPC_PATH, guarded(endpoint.serve_rpc), methods=["POST"]),
    ]
