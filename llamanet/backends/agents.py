"""Specialised agents: a capability served by a given model with a system prompt.

Declared in ``config.toml``::

    [[agents]]
    capability = "code_generation.python"
    model = "qwen2.5-coder:7b"
    system = "You write correct, idiomatic Python. Answer with code only."

A task for ``code_generation.python`` then runs as ``llm.chat`` on that model, with
the system prompt first.  Its input is either a prompt string or
``{"messages": [...]}``.  An agent whose model no backend serves is not offered.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from llamanet.backends.base import Backend, Chunk, Completion, TaskRequest
from llamanet.errors import ConfigError, ModelNotFoundError, SkillInputError
from llamanet.protocol.capabilities import is_valid_capability
from llamanet.protocol.planner import PLANNER_CAPABILITY, PLANNER_PROMPT
from llamanet.protocol.records import ModelInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class AgentSpec:
    capability: str
    model: str
    system: str = ""

    def __post_init__(self) -> None:
        if not is_valid_capability(self.capability):
            raise ConfigError(f"agent capability {self.capability!r} is not a capability name")
        if not self.model:
            raise ConfigError(f"agent {self.capability!r} needs a model")


def parse_agents(path: Path, value: Any) -> tuple[AgentSpec, ...]:
    """``[[agents]]`` tables from ``config.toml``."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{path}: agents must be [[agents]] tables")
    agents = []
    for index, table in enumerate(value, 1):
        unknown = set(table) - {"capability", "model", "system"}
        if unknown:
            raise ConfigError(f"{path}: agent {index}: unknown key {sorted(unknown)[0]!r}")
        missing = [k for k in ("capability", "model") if k not in table]
        if missing:
            raise ConfigError(f"{path}: agent {index} needs a {missing[0]}")
        if not all(isinstance(table.get(k, ""), str) for k in ("capability", "model", "system")):
            raise ConfigError(f"{path}: agent {index}: capability, model and system are strings")
        try:
            agents.append(AgentSpec(**table))
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"{path}: agent {index}: {exc}") from exc
    return tuple(agents)


class AgentBackend:
    """Serves each agent's capability through the backend that has its model."""

    name = "agents"

    def __init__(self, agents: Sequence[AgentSpec], backends: Sequence[Backend]) -> None:
        self._agents = {agent.capability: agent for agent in agents}
        self._backends = list(backends)
        for agent in agents:
            if self._inner(agent) is None:
                log.warning("agent %s: no backend serves model %r", agent.capability, agent.model)

    def _inner(self, agent: AgentSpec) -> Backend | None:
        # Looked up at each use: model servers gain and lose models while we run.
        for backend in self._backends:
            if "llm.chat" in backend.capabilities() and any(
                m.name == agent.model for m in backend.models()
            ):
                return backend
        return None

    def capabilities(self) -> Sequence[str]:
        return [cap for cap, agent in self._agents.items() if self._inner(agent) is not None]

    def models(self) -> Sequence[ModelInfo]:
        return ()  # the backend that runs the model advertises it

    async def execute(self, request: TaskRequest) -> AsyncGenerator[Chunk | Completion, None]:
        agent = self._agents[request.capability]
        inner = self._inner(agent)
        if inner is None:
            raise ModelNotFoundError(f"model {agent.model!r} is not served here any more")
        if isinstance(request.input, str):
            messages: list[Any] = [{"role": "user", "content": request.input}]
        elif isinstance(request.input, dict) and isinstance(request.input.get("messages"), list):
            messages = list(request.input["messages"])
        else:
            raise SkillInputError('input must be a prompt string or {"messages": [...]}')
        system = agent.system
        if not system and agent.capability == PLANNER_CAPABILITY:
            system = PLANNER_PROMPT
        if system:
            messages.insert(0, {"role": "system", "content": system})
        chat = replace(
            request,
            capability="llm.chat",
            input={"messages": messages},
            model={"name": agent.model},
        )
        async for item in inner.execute(chat):
            yield item
