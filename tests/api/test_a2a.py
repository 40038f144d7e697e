"""A2A on the node's local API, driven by the official ``a2a-sdk`` client: a
requester node serves the API; its peer serves chat (the Ollama test double), the
built-in skills and a slow test double."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import trio
from a2a.client import (
    A2ACardResolver,
    AgentCardResolutionError,
    AuthInterceptor,
    Client,
    ClientCallContext,
    ClientConfig,
    ClientFactory,
    CredentialService,
)
from a2a.types import (
    AgentCard,
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskNotCancelableError,
    TaskNotFoundError,
    TaskState,
    UnsupportedOperationError,
)
from google.protobuf.json_format import MessageToDict

from llamanet.api.a2a import LIBP2P_BINDING
from llamanet.api.a2a_tasks import COMPLETED, WATCHER_BUFFER, A2ATask, TaskStore
from llamanet.api.server import serve_api
from llamanet.backends.builtin import BuiltinBackend
from llamanet.backends.ollama import OllamaBackend
from llamanet.node.node import Node

from ..doubles import SlowSkillDouble
from ..nodes import eventually, providers_of, start_node
from ..ollama_double import REPLY, OllamaDouble, running_ollama_double

T = TypeVar("T")
REPLY_TEXT = "".join(REPLY)


@dataclass(frozen=True)
class Swarm:
    requester: Node
    worker: Node
    url: str
    token: str
    ollama: OllamaDouble
    slow: SlowSkillDouble


@asynccontextmanager
async def swarm(tmp_path: Path) -> AsyncIterator[Swarm]:
    """The requester's API; its peer serves chat, the built-in skills and ``test.slow``."""
    slow = SlowSkillDouble()
    async with running_ollama_double() as ollama:
        backend = OllamaBackend(ollama.url)
        await backend.open()
        try:
            async with (
                start_node(
                    tmp_path / "worker",
                    backends=[backend, BuiltinBackend(), slow],
                    warmup=False,
                ) as worker,
                start_node(tmp_path / "requester", bootstrap=(worker.addrs()[0],)) as requester,
                trio.open_nursery() as nursery,
            ):
                url = await nursery.start(serve_api, requester)
                token = json.loads(requester.config.api_file.read_text())["token"]
                await providers_of(requester, "llm.chat", 1)
                yield Swarm(requester, worker, url, token, ollama, slow)
                nursery.cancel_scope.cancel()
        finally:
            await backend.aclose()


async def off_loop(call: Callable[[], Coroutine[Any, Any, T]]) -> T:
    # The SDK client is asyncio, the node trio: the client gets a thread and a loop.
    return await trio.to_thread.run_sync(lambda: asyncio.run(call()))


class ApiToken(CredentialService):
    """The node's API token for the card's ``bearer`` scheme."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def get_credentials(
        self, security_scheme_name: str, context: ClientCallContext | None
    ) -> str | None:
        return self.token if security_scheme_name == "bearer" else None


@asynccontextmanager
async def a2a_client(
    swarm: Swarm, *, streaming: bool = False, polling: bool = False
) -> AsyncIterator[Client]:
    """An SDK client made from the node's card; the card's security scheme makes
    the SDK send the token."""
    async with httpx.AsyncClient(timeout=30) as http:
        card = await fetch_card(http, swarm)
        config = ClientConfig(httpx_client=http, streaming=streaming, polling=polling)
        client = ClientFactory(config).create(card, [AuthInterceptor(ApiToken(swarm.token))])
        try:
            yield client
        finally:
            await client.close()


async def fetch_card(http: httpx.AsyncClient, swarm: Swarm) -> AgentCard:
    headers = {"Authorization": f"Bearer {swarm.token}"}
    return await A2ACardResolver(http, swarm.url).get_agent_card(http_kwargs={"headers": headers})


def user_message(
    *texts: str, context_id: str = "", llamanet: dict[str, Any] | None = None
) -> Message:
    message = Message(
        message_id=str(uuid.uuid4()),
        role=Role.ROLE_USER,
        parts=[Part(text=t) for t in texts],
        context_id=context_id,
    )
    if llamanet is not None:
        message.metadata.update({"llamanet": llamanet})
    return message


async def send(client: Client, message: Message) -> list[StreamResponse]:
    return [event async for event in client.send_message(SendMessageRequest(message=message))]


async def send_for_task(swarm: Swarm, message: Message, *, polling: bool = False) -> Task:
    async with a2a_client(swarm, polling=polling) as client:
        (event,) = await send(client, message)
    return event.task


def answer_text(task: Task) -> str:
    (artifact,) = task.artifacts
    return "".join(p.text for p in artifact.parts)


def llamanet_metadata(task: Task) -> dict[str, Any]:
    meta: dict[str, Any] = MessageToDict(task.metadata)["llamanet"]
    return meta


# --- the task store (no sockets) ------------------------------------------------------


def a2a_task(now: float, *, done: bool = False) -> A2ATask:
    task = A2ATask(id=str(uuid.uuid4()), context_id="c", capability="math.eval", updated_at=now)
    if done:
        task.move_to(COMPLETED, now)
    return task


def test_the_task_store_is_bounded_in_number_and_age() -> None:
    now = 1000.0
    store = TaskStore(lambda: now, max_tasks=3, ttl=60.0)
    running = a2a_task(now)
    store.add(running)
    finished = [a2a_task(now, done=True) for _ in range(3)]
    for task in finished:
        store.add(task)
    # Over the bound the oldest finished task goes, never a running one.
    assert [t.id for t in store.tasks()] == [running.id, finished[1].id, finished[2].id]
    now += 61.0
    assert [t.id for t in store.tasks()] == [running.id]
    assert store.running() == 1


def test_a_stream_that_falls_behind_is_cut_off_and_the_task_goes_on() -> None:
    task = a2a_task(0.0)
    slow, fast = task.watch(), task.watch()
    for _ in range(WATCHER_BUFFER):
        task.publish({"n": 1})
        fast.receive_nowait()
    task.publish({"n": 2})
    assert task.watchers and fast.receive_nowait() == {"n": 2}
    received = [slow.receive_nowait() for _ in range(WATCHER_BUFFER)]
    assert len(received) == WATCHER_BUFFER
    with pytest.raises(trio.EndOfChannel):
        slow.receive_nowait()
    task.move_to(COMPLETED, 1.0)
    assert fast.receive_nowait()["statusUpdate"]["status"]["state"] == COMPLETED
    with pytest.raises(trio.EndOfChannel):
        fast.receive_nowait()


# --- the card --------------------------------------------------------------------------


async def test_the_card_lists_local_skills_and_the_direct_libp2p_route(tmp_path: Path) -> None:
    async with swarm(tmp_path) as s:

        async def fetch() -> AgentCard:
            async with httpx.AsyncClient(timeout=30) as http:
                with pytest.raises(AgentCardResolutionError) as refused:
                    await A2ACardResolver(http, s.url).get_agent_card()
                assert refused.value.status_code == 401
                return await fetch_card(http, s)

        card = await off_loop(fetch)
        peer, addrs = s.requester.peer_id_text, s.requester.addrs()
        capabilities = s.requester.status().capabilities
    assert peer in card.name
    assert sorted(skill.id for skill in card.skills) == sorted(capabilities)
    math = next(skill for skill in card.skills if skill.id == "math.eval")
    assert math.name and math.description and "math" in math.tags
    assert '"capability": "math.eval"' in math.description  # how to ask for it

    jsonrpc, *direct = card.supported_interfaces
    assert (jsonrpc.protocol_binding, jsonrpc.url) == ("JSONRPC", f"{s.url}/a2a")
    assert jsonrpc.protocol_version == "1.0"
    assert [i.url for i in direct] == addrs
    assert {i.protocol_binding for i in direct} == {LIBP2P_BINDING}
    assert all(i.url.endswith(f"/p2p/{peer}") for i in direct)
    (binding,) = [e for e in card.capabilities.extensions if e.uri == LIBP2P_BINDING]
    assert MessageToDict(binding.params)["taskProtocol"] == "/llamanet/task/1.0.0"

    assert card.capabilities.streaming and not card.capabilities.push_notifications
    assert card.security_schemes["bearer"].http_auth_security_scheme.scheme == "Bearer"
    assert list(card.security_requirements[0].schemes) == ["bearer"]
    assert "text/plain" in card.default_input_modes


# --- send, get, list -------------------------------------------------------------------


async def test_send_returns_the_completed_task_and_get_returns_it_again(tmp_path: Path) -> None:
    async with swarm(tmp_path) as s:

        async def talk() -> tuple[Task, Task, Task, Task, list[Task]]:
            async with a2a_client(s) as client:
                (chat,) = await send(client, user_message("hi"))
                (math,) = await send(
                    client, user_message("2*(3+4)", llamanet={"capability": "math.eval"})
                )
                again = await client.get_task(GetTaskRequest(id=chat.task.id))
                bare = await client.get_task(GetTaskRequest(id=chat.task.id, history_length=0))
                listed = await client.list_tasks(ListTasksRequest(include_artifacts=True))
            return chat.task, math.task, again, bare, list(listed.tasks)

        chat, math, again, bare, listed = await off_loop(talk)
    assert chat.status.state == TaskState.TASK_STATE_COMPLETED
    assert answer_text(chat) == REPLY_TEXT
    assert chat.context_id and chat.id
    (asked,) = chat.history
    assert asked.role == Role.ROLE_USER and asked.parts[0].text == "hi"
    assert asked.task_id == chat.id and asked.context_id == chat.context_id
    assert llamanet_metadata(chat)["peer"] == s.worker.peer_id_text
    assert llamanet_metadata(chat)["capability"] == "llm.chat"

    # A number is a data part (protobuf holds JSON numbers as doubles).
    assert math.status.state == TaskState.TASK_STATE_COMPLETED
    (part,) = math.artifacts[0].parts
    assert part.data.number_value == 14
    assert math.context_id != chat.context_id  # no contextId: a new context

    assert again == chat
    assert not bare.history and bare.artifacts == chat.artifacts
    assert [t.id for t in listed] == [math.id, chat.id]  # latest first


async def test_a_capability_nobody_serves_is_a_failed_task_saying_so(tmp_path: Path) -> None:
    async with swarm(tmp_path) as s:
        message = user_message("a llama", llamanet={"capability": "image.generate", "timeout": 2})
        task = await off_loop(lambda: send_for_task(s, message))
    assert task.status.state == TaskState.TASK_STATE_FAILED
    (reason,) = task.status.message.parts
    assert "NoCandidatesError" in reason.text and "'image.generate'" in reason.text
    assert task.status.message.role == Role.ROLE_AGENT
    assert not task.artifacts


# --- streaming, subscribing --------------------------------------------------------------


async def test_streaming_sends_status_and_artifact_updates_ending_completed(
    tmp_path: Path,
) -> None:
    async with swarm(tmp_path) as s:

        async def stream() -> list[StreamResponse]:
            async with a2a_client(s, streaming=True) as client:
                return await send(client, user_message("hi"))

        events = await off_loop(stream)
    first, working, *updates, done = events
    assert first.task.status.state == TaskState.TASK_STATE_SUBMITTED
    task_id = first.task.id
    assert working.status_update.status.state == TaskState.TASK_STATE_WORKING
    assert done.status_update.status.state == TaskState.TASK_STATE_COMPLETED
    assert {e.status_update.task_id for e in (working, done)} == {task_id}

    *chunks, whole = [e.artifact_update for e in updates]
    assert [c.artifact.parts[0].text for c in chunks] == REPLY
    assert [c.append for c in chunks] == [False] + [True] * (len(REPLY) - 1)
    assert not any(c.last_chunk for c in chunks)
    # The last update replaces the streamed pieces with the whole answer.
    assert (whole.append, whole.last_chunk) == (False, True)
    assert whole.artifact.artifact_id == chunks[0].artifact.artifact_id
    assert [p.text for p in whole.artifact.parts] == [REPLY_TEXT]


async def test_a_subscriber_joins_a_running_task(tmp_path: Path) -> None:
    async with swarm(tmp_path) as s:
        message = user_message("x", llamanet={"capability": "test.slow", "params": {"seconds": 2}})
        task = await off_loop(lambda: send_for_task(s, message, polling=True))
        await s.slow.first_chunk_sent.wait()

        async def follow() -> list[StreamResponse]:
            async with a2a_client(s, streaming=True) as client:
                return [e async for e in client.subscribe(SubscribeToTaskRequest(id=task.id))]

        events = await off_loop(follow)

        async def again() -> None:
            async with a2a_client(s, streaming=True) as client:
                with pytest.raises(UnsupportedOperationError, match="terminal"):
                    async for _ in client.subscribe(SubscribeToTaskRequest(id=task.id)):
                        pass

        await off_loop(again)
    snapshot, *_, whole, done = events
    assert snapshot.task.status.state == TaskState.TASK_STATE_WORKING
    assert whole.artifact_update.artifact.parts[0].text == "done"
    assert done.status_update.status.state == TaskState.TASK_STATE_COMPLETED


# --- sessions ------------------------------------------------------------------------


async def test_a_context_id_continues_the_session(tmp_path: Path) -> None:
    async with swarm(tmp_path) as s:

        async def converse() -> tuple[Task, Task, list[Task]]:
            async with a2a_client(s) as client:
                (first,) = await send(client, user_message("hi"))
                context = first.task.context_id
                (second,) = await send(client, user_message("and then?", context_id=context))
                listed = await client.list_tasks(ListTasksRequest(context_id=context))
            return first.task, second.task, list(listed.tasks)

        first, second, listed = await off_loop(converse)
        chats = [body for path, body in s.ollama.requests if path == "/api/chat"]
    assert second.context_id == first.context_id
    assert llamanet_metadata(second)["session"] == first.context_id
    # The model saw the first turn and its reply in front of the second.
    assert chats[-1]["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": REPLY_TEXT},
        {"role": "user", "content": "and then?"},
    ]
    assert [t.id for t in listed] == [second.id, first.id]


# --- cancel ------------------------------------------------------------------------------


async def test_cancel_stops_a_running_task_and_its_peer(tmp_path: Path) -> None:
    async with swarm(tmp_path) as s:
        slow = user_message("x", llamanet={"capability": "test.slow", "params": {"seconds": 30}})
        started = await off_loop(lambda: send_for_task(s, slow, polling=True))
        assert started.status.state == TaskState.TASK_STATE_SUBMITTED
        await s.slow.first_chunk_sent.wait()

        async def cancel() -> tuple[Task, Task]:
            async with a2a_client(s) as client:
                canceled = await client.cancel_task(CancelTaskRequest(id=started.id))
                stored = await client.get_task(GetTaskRequest(id=started.id))
                with pytest.raises(TaskNotCancelableError):
                    await client.cancel_task(CancelTaskRequest(id=started.id))
                with pytest.raises(TaskNotFoundError):
                    await client.cancel_task(CancelTaskRequest(id="no-such-task"))
            return canceled, stored

        canceled, stored = await off_loop(cancel)
        assert canceled.status.state == TaskState.TASK_STATE_CANCELED
        assert stored.status.state == TaskState.TASK_STATE_CANCELED
        await eventually(lambda: s.slow.cancelled == 1 and not s.worker.worker.in_flight)
        assert s.slow.finished == 0


# --- errors --------------------------------------------------------------------------


def sending(*parts: dict[str, Any], **llamanet: Any) -> bytes:
    """A SendMessage request, as a client that builds its own JSON would send it."""
    message: dict[str, Any] = {"messageId": "m", "role": "ROLE_USER", "parts": list(parts)}
    message["metadata"] = {"llamanet": llamanet}
    request = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": message}}
    return json.dumps(request).encode()


async def test_unknown_tasks_are_task_not_found(tmp_path: Path) -> None:
    async with swarm(tmp_path) as s:

        async def ask() -> None:
            async with a2a_client(s) as client:
                with pytest.raises(TaskNotFoundError):
                    await client.get_task(GetTaskRequest(id="no-such-task"))
                follow_up = user_message("more")
                follow_up.task_id = "no-such-task"
                with pytest.raises(TaskNotFoundError):
                    await send(client, follow_up)

        await off_loop(ask)


@pytest.mark.parametrize(
    ("content", "headers", "code", "message"),
    [
        (b"{not json", {}, -32700, "not JSON"),
        (b"[]", {}, -32600, "batch"),
        (b'{"jsonrpc": "1.0", "id": 1, "method": "GetTask"}', {}, -32600, "jsonrpc"),
        (b'{"jsonrpc": "2.0", "id": 1}', {}, -32600, "method"),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "tasks/get"}', {}, -32601, "tasks/get"),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": []}', {}, -32602, "params"),
        (
            b'{"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {}}',
            {},
            -32602,
            "message",
        ),
        (
            b'{"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x"}}',
            {"A2A-Version": "0.3"},
            -32009,
            "0.3",
        ),
        (
            b'{"jsonrpc": "2.0", "id": 1, "method": "CreateTaskPushNotificationConfig"}',
            {},
            -32003,
            "push",
        ),
        (sending({"text": "1+1"}, capability="Math Eval"), {}, -32602, "invalid capability"),
        (sending({"text": "1+1"}, verify=0), {}, -32602, "metadata.llamanet.verify"),
        (sending({"text": "hi"}, {"data": {"a": 1}}), {}, -32602, "one data part"),
        (sending({"url": "https://example.com/x"}), {}, -32005, "url parts"),
    ],
)
async def test_malformed_json_rpc_gets_a_json_rpc_error(
    tmp_path: Path, content: bytes, headers: dict[str, str], code: int, message: str
) -> None:
    async with start_node(tmp_path / "n0") as node, trio.open_nursery() as nursery:
        url = await nursery.start(serve_api, node)
        token = json.loads(node.config.api_file.read_text())["token"]
        headers = {"Authorization": f"Bearer {token}", **headers}
        async with httpx.AsyncClient(base_url=url, headers=headers) as http:
            response = await http.post("/a2a", content=content)
        nursery.cancel_scope.cancel()
    assert response.status_code == 200
    reply = response.json()
    assert reply["jsonrpc"] == "2.0"
    assert reply["error"]["code"] == code
    assert message in reply["error"]["message"]
    assert reply["id"] == (1 if code not in (-32700, -32600) or b'"id": 1' in content else None)
    assert node.tasks_sent == {}
