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

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import trio
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llamanet.adapters.libp2p_host import CAPS_PROTOCOL, TASK_PROTOCOL
from llamanet.errors import LlamanetError
from llamanet.node.node import Answer, Node
from llamanet.protocol.capabilities import validate_capability
from llamanet.protocol.peer_ids import peer_id_from_text

from .a2a_tasks import (
    CANCELED,
    FAILED,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    NO_EXTENDED_CARD,
    PARSE_ERROR,
    PUSH_NOT_SUPPORTED,
    REJECTED,
    STATES,
    SUBMITTED,
    TASK_NOT_CANCELABLE,
    TASK_NOT_FOUND,
    TERMINAL,
    UNSUPPORTED_OPERATION,
    VERSION_NOT_SUPPORTED,
    WORKING,
    A2ATask,
    Json,
    RpcError,
    RpcId,
    TaskStore,
    _bad,
    _decode_cursor,
    _encode_cursor,
    _family,
    _id_param,
    _int_param,
    _object,
    _parse_timestamp,
    _part,
    _rpc_reply,
    _task_input,
    _TaskEvents,
    _user_message,
)
from .openai_compat import llamanet_extension, model_constraint
from .options import ApiError

log = logging.getLogger(__name__)

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
CANCEL_WAIT: Final = 10.0
DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 100


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


def a2a_routes(node: Node, guarded: Guard) -> list[Route]:
    """The agent card and the JSON-RPC endpoint, each behind ``guarded`` (the token)."""
    endpoint = A2AEndpoint(node)
    return [
        Route(CARD_PATH, guarded(endpoint.serve_card), methods=["GET"]),
        Route(RPC_PATH, guarded(endpoint.serve_rpc), methods=["POST"]),
    ]
