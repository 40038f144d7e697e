"""Capabilities served by a model with a system prompt, over the Ollama test double."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llamanet.backends.agents import AgentBackend, AgentSpec, parse_agents
from llamanet.backends.base import Backend, Chunk, Completion, TaskRequest
from llamanet.backends.builtin import BuiltinBackend
from llamanet.backends.ollama import OllamaBackend
from llamanet.errors import ConfigError, SkillInputError

from ..nodes import start_node
from ..ollama_double import REPLY, running_ollama_double

CODER = AgentSpec(capability="code_generation.python", model="qwen2.5:0.5b", system="Python only.")
GHOST = AgentSpec(capability="poetry.haiku", model="no-such-model")


def request(cap: str, input: object) -> TaskRequest:
    return TaskRequest(id=os.urandom(16), capability=cap, requested=cap, input=input)


async def test_an_agent_runs_as_chat_on_its_model_with_its_system_prompt() -> None:
    async with running_ollama_double() as double:
        ollama = OllamaBackend(double.url)
        await ollama.open()
        agents = AgentBackend([CODER, GHOST], [BuiltinBackend(), ollama])
        assert agents.capabilities() == ["code_generation.python"]  # the ghost's model is absent
        items = [i async for i in agents.execute(request("code_generation.python", "fizzbuzz"))]
        assert [i.data for i in items if isinstance(i, Chunk)] == REPLY
        assert isinstance(items[-1], Completion)
        path, body = double.requests[-1]
        assert path == "/api/chat"
        assert body["model"] == "qwen2.5:0.5b"
        assert body["messages"] == [
            {"role": "system", "content": "Python only."},
            {"role": "user", "content": "fizzbuzz"},
        ]
        with pytest.raises(SkillInputError):
            [i async for i in agents.execute(request("code_generation.python", 42))]
        await ollama.aclose()


async def test_a_peer_finds_and_uses_a_declared_agent(tmp_path: Path) -> None:
    async with running_ollama_double() as double:
        ollama = OllamaBackend(double.url)
        await ollama.open()
        backends: list[Backend] = [AgentBackend([CODER], [ollama]), ollama]
        async with (
            start_node(tmp_path / "a", backends=backends) as a,
            start_node(tmp_path / "b", bootstrap=(a.addrs()[0],)) as b,
        ):
            found = await b.find("code_generation")
            assert [r.peer for r in found] == [a.peer_id]
            answer = await b.ask("code_generation.python", "write fizzbuzz")
            assert answer.output == "".join(REPLY)
        await ollama.aclose()


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("x", "must be"),
        ([{"capability": "Bad Name", "model": "m"}], "not a capability name"),
        ([{"capability": "a.b"}], "needs a model"),
        ([{"capability": "a.b", "model": "m", "temperature": 1}], "unknown key 'temperature'"),
        ([{"capability": "a.b", "model": 5}], "are strings"),
    ],
)
def test_bad_agent_tables_are_config_errors(value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_agents(Path("config.toml"), value)


def test_agent_tables_parse() -> None:
    parsed = parse_agents(Path("c.toml"), [{"capability": "a.b", "model": "m", "system": "s"}])
    assert parsed == (AgentSpec(capability="a.b", model="m", system="s"),)
