"""A2A tasks on the node's local API: JSON-RPC errors and values, the task
records and their bounded store, and the server-sent events a stream of one
task sends (``llamanet/api/a2a.py`` is the endpoint that uses them)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import trio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from llamanet.node.node import Answer

log = logging.getLogger(__name__)

Json = dict[str, Any]
RpcId = str | int | None

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
