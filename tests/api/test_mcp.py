"""``llamanet mcp`` with the official MCP client: real nodes on loopback, the MCP
server as a real ``llamanet mcp`` process, over stdio and over streamable HTTP."""

from __future__ import annotations

import json
import signal
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import httpx2
import mcp.types as mt
import pytest
import trio
from mcp import Client, StdioServerParameters
from mcp.client.session import IncomingMessage
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ToolsListChanged
from mcp.types.version import MODERN_PROTOCOL_VERSIONS

from llamanet.api.mcp_catalogue import (
    MAX_TOOL_NAME,
    capability_of,
    offers_from,
    shape_input,
    tool_name,
)
from llamanet.api.mcp_server import McpOptions, load_or_create_token
from llamanet.api.server import serve_api
from llamanet.backends.builtin import BuiltinBackend
from llamanet.errors import ConfigError
from llamanet.node.node import Node

from ..doubles import PlannerDouble
from ..nodes import providers_of, start_node, start_swarm

if TYPE_CHECKING:
    from trio_typing import TaskStatus

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "llamanet"]
# Tool-list changes are looked for this often (seconds).
REFRESH = ("--refresh", "0.2")


PLAN = {"steps": [{"id": "sum", "capability": "math.eval", "input": "2+3"}], "output": "sum"}


class Swarm:
    """Node 0 serves math.eval and plans (a scripted planner); node 1 knows it and
    serves its API, which the MCP server uses."""

    def __init__(self, nodes: list[Node], nursery: trio.Nursery) -> None:
        self.nodes = nodes
        self.home = nodes[1].config.home
        self.worker = nodes[0].peer_id_text
        self._nursery = nursery
        self._api = trio.CancelScope()
        self._api_done = trio.Event()

    async def serve_api(self) -> None:
        await self._nursery.start(self._serve_api)

    async def _serve_api(self, *, task_status: TaskStatus[str]) -> None:
        self._api, self._api_done = trio.CancelScope(), trio.Event()
        try:
            with self._api:
                await serve_api(self.nodes[1], task_status=task_status)
        finally:
            self._api_done.set()

    async def restart_api(self) -> None:
        """As a restarted node would: a new address and a new token in api.json."""
        self._api.cancel()
        await self._api_done.wait()
        await self.serve_api()


@asynccontextmanager
async def swarm(tmp_path: Path) -> AsyncIterator[Swarm]:
    worker = [BuiltinBackend(["math.eval"]), PlannerDouble(PLAN, PLAN)]
    per_node: dict[int, dict[str, Any]] = {0: {"backends": worker}}
    async with start_swarm(tmp_path, 2, per_node=per_node) as nodes, trio.open_nursery() as nursery:
        s = Swarm(nodes, nursery)
        await s.serve_api()
        await providers_of(nodes[1], "math.eval", 1)
        yield s
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def stdio_mcp(home: Path, *flags: str, **client: Any) -> AsyncIterator[Client]:
    """A ``llamanet mcp`` process on stdio, spawned by the SDK's client."""
    command = StdioServerParameters(
        command=sys.executable,
        args=["-m", "llamanet", "--home", str(home), "mcp", *flags],
        cwd=ROOT,
    )
    async with Client(stdio_client(command), **client) as session:
        yield session


def text_of(result: mt.CallToolResult) -> str:
    assert len(result.content) == 1
    block = result.content[0]
    assert isinstance(block, mt.TextContent)
    return block.text


async def check_the_tools(client: Client, swarm: Swarm) -> None:
    """What both transports must do: list, call, fail clearly, find."""
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert {"ask", "find", "solve", "status", "math-eval"} <= set(tools)
    # The node's own skills are not tools: it sends tasks only to peers.
    assert "text-echo" not in tools
    math = tools["math-eval"]
    assert math.description is not None
    assert "'math.eval'" in math.description and swarm.worker[:16] in math.description
    assert math.input_schema["required"] == ["input"]

    answer = await client.call_tool("math-eval", {"input": "2*(3+4)", "timeout": 10})
    assert not answer.is_error, text_of(answer)
    assert text_of(answer) == "14"
    assert answer.structured_content is not None
    assert answer.structured_content["peer"] == swarm.worker
    assert answer.structured_content["capability"] == "math.eval"

    failed = await client.call_tool("math-eval", {"input": "1/0"})
    assert failed.is_error
    assert "division by zero" in text_of(failed)

    unknown = await client.call_tool(
        "ask", {"capability": "no.such.capability", "input": "x", "timeout": 2}
    )
    assert unknown.is_error
    assert "no verified peer offers capability 'no.such.capability'" in text_of(unknown)

    misused = await client.call_tool("math-eval", {"expression": "1+1"})
    assert misused.is_error
    assert "unknown argument expression" in text_of(misused)

    found = await client.call_tool("find", {"capability": "math", "timeout": 5})
    assert not found.is_error
    assert [row["peer_id"] for row in json.loads(text_of(found))] == [swarm.worker]

    steps: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        steps.append(message)

    solved = await client.call_tool(
        "solve", {"goal": "add two and three", "timeout": 20}, progress_callback=on_progress
    )
    assert not solved.is_error, text_of(solved)
    assert text_of(solved) == "5"
    assert solved.structured_content is not None
    assert solved.structured_content["plan"] == [{"id": "sum", "capability": "math.eval"}]
    assert steps == ["step sum done"]

    status = await client.call_tool("status", {})
    assert json.loads(text_of(status))["peer_id"] == swarm.nodes[1].peer_id_text


@asynccontextmanager
async def newcomer(s: Swarm, tmp_path: Path) -> AsyncIterator[None]:
    """A third node, offering text.stats, that node 1 has found."""
    seed = s.nodes[0].addrs()[0]
    async with start_node(tmp_path / "n2", skills=("text.stats",), bootstrap=(seed,)):
        await providers_of(s.nodes[1], "text.stats", 1)
        yield


async def test_stdio_serves_the_swarm_to_a_handshake_era_client(tmp_path: Path) -> None:
    heard = trio.Event()

    async def on_message(message: IncomingMessage) -> None:
        if isinstance(message, mt.ToolListChangedNotification):
            heard.set()

    async with (
        swarm(tmp_path) as s,
        stdio_mcp(s.home, *REFRESH, mode="legacy", message_handler=on_message) as client,
    ):
        assert client.protocol_version not in MODERN_PROTOCOL_VERSIONS
        assert client.server_info is not None and client.server_info.name == "llamanet"
        assert client.server_capabilities.tools is not None
        assert client.server_capabilities.tools.list_changed
        await check_the_tools(client, s)

        # The server follows the node through a restart (new address, new token).
        await s.restart_api()
        status = await client.call_tool("status", {})
        assert not status.is_error, text_of(status)
        api_url = json.loads((s.home / "api.json").read_text())["url"]
        assert json.loads(text_of(status))["api"] == api_url

        # Having listed the tools, the client is told when they change.
        assert not heard.is_set()
        async with newcomer(s, tmp_path):
            with trio.fail_after(10):
                await heard.wait()
            await check_the_newcomer(client)


async def check_the_newcomer(client: Client) -> None:
    assert "text-stats" in {t.name for t in (await client.list_tools()).tools}
    answer = await client.call_tool("text-stats", {"input": "One two. Three."})
    assert not answer.is_error, text_of(answer)
    assert json.loads(text_of(answer))["words"] == 3


@asynccontextmanager
async def http_mcp(home: Path, *flags: str) -> AsyncIterator[dict[str, Any]]:
    """A ``llamanet mcp --transport http`` process; its ``mcp.json``."""
    endpoint = trio.Path(home / "mcp.json")
    process = await trio.lowlevel.open_process(
        [*CLI, "--home", str(home), "mcp", "--transport", "http", *flags], cwd=ROOT
    )
    try:
        with trio.fail_after(20):
            while not await endpoint.exists():
                assert process.returncode is None, "llamanet mcp exited early"
                await trio.sleep(0.05)
        yield json.loads(await endpoint.read_text())
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await process.wait() == 0
        assert not await endpoint.exists()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_streamable_http_serves_the_swarm_to_holders_of_the_token(tmp_path: Path) -> None:
    async with swarm(tmp_path) as s, http_mcp(s.home, *REFRESH) as endpoint:
        url, token = endpoint["url"], endpoint["token"]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/mcp")
        assert stat.S_IMODE((s.home / "mcp.json").stat().st_mode) == 0o600
        assert stat.S_IMODE((s.home / "mcp.token").stat().st_mode) == 0o600

        node_token = json.loads((s.home / "api.json").read_text())["token"]
        hello = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        async with httpx.AsyncClient(timeout=10) as anonymous:
            for headers in (
                {},
                {"Authorization": f"Bearer {node_token}"},
                {"Authorization": token},
            ):
                refused = await anonymous.post(url, json=hello, headers=headers)
                assert refused.status_code == 401, headers
                assert refused.headers["www-authenticate"] == "Bearer"

        bearer = {"Authorization": f"Bearer {token}"}
        async with (
            httpx2.AsyncClient(headers=bearer) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            assert client.protocol_version in MODERN_PROTOCOL_VERSIONS
            await check_the_tools(client, s)
            async with client.listen(tools_list_changed=True) as changes, newcomer(s, tmp_path):
                with trio.fail_after(10):
                    assert isinstance(await changes.__anext__(), ToolsListChanged)
                await check_the_newcomer(client)
    # The token outlives the server, so a client's configuration keeps working.
    assert load_or_create_token(s.home) == token


async def test_without_a_node_the_command_says_so(tmp_path: Path) -> None:
    command = [*CLI, "--home", str(tmp_path / "nobody"), "mcp"]
    result = await trio.run_process(command, capture_stderr=True, check=False, cwd=ROOT)
    assert result.returncode == 1
    assert b"no llamanet daemon is running" in result.stderr


# --- the catalogue, without sockets -------------------------------------------------------


def test_tool_names_follow_the_client_rules_and_map_back() -> None:
    assert tool_name("math.eval") == "math-eval"
    assert capability_of("math-eval") == "math.eval"
    assert capability_of("Not-A-Capability") is None
    long = ".".join(["segment"] * 16)
    name = tool_name(long)
    assert len(name) == MAX_TOOL_NAME
    assert name != tool_name(long + "x")
    assert capability_of(name) != long


def test_offers_leave_out_the_node_itself_and_the_general_tools() -> None:
    rows = [
        {"peer_id": "self", "capabilities": ["own.skill"], "models": []},
        {"peer_id": "b", "capabilities": ["llm.chat", "ask"], "models": ["qwen2"]},
        {"peer_id": "a", "capabilities": ["llm.chat", "bad name"], "models": ["llama3"]},
        {"peer_id": "c", "capabilities": [], "models": []},
    ]
    offers = offers_from(rows, own_peer_id="self")
    assert list(offers) == ["llm-chat"]
    assert offers["llm-chat"].peers == ("a", "b")
    assert offers["llm-chat"].models == ("llama3", "qwen2")
    assert offers_from({"not": "a list"}, own_peer_id="self") == {}


def test_text_input_means_what_a_model_capability_expects() -> None:
    assert shape_input("llm.chat", "hi") == {"messages": [{"role": "user", "content": "hi"}]}
    assert shape_input("llm.generate.code", "def") == {"prompt": "def"}
    assert shape_input("llm.embed", "x") == {"texts": ["x"]}
    assert shape_input("llm.chat", {"messages": []}) == {"messages": []}
    assert shape_input("math.eval", "1+1") == "1+1"


def test_options_and_token_file_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a loopback address"):
        McpOptions(transport="http", host="192.0.2.1")
    assert McpOptions(transport="http", host="192.0.2.1", remote=True).remote
    with pytest.raises(ConfigError, match="TCP port"):
        McpOptions(port=70000)
    token = load_or_create_token(tmp_path)
    assert load_or_create_token(tmp_path) == token and len(token) >= 32
    (tmp_path / "mcp.token").chmod(0o644)
    with pytest.raises(ConfigError, match="accessible by group or others"):
        load_or_create_token(tmp_path)
