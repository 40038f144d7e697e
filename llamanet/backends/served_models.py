"""What every model backend shares: the task shapes of the model capabilities,
and the bookkeeping of which model serves which capability."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from llamanet.errors import BackendError, ModelNotFoundError, SkillInputError
from llamanet.protocol.capabilities import is_valid_capability
from llamanet.protocol.records import ModelInfo, model_meets

log = logging.getLogger(__name__)

CHAT: Final = "llm.chat"
GENERATE: Final = "llm.generate"
EMBED: Final = "llm.embed"
MODEL_TASKS: Final = (CHAT, GENERATE, EMBED)


def input_field(value: Any, key: str, kind: type) -> Any:
    """``value[key]`` of a task input, which must be a map with that field."""
    if not isinstance(value, dict) or not isinstance(value.get(key), kind):
        raise SkillInputError(f"input must be a map with {key!r} ({kind.__name__})")
    return value[key]


def mean_pooled(vector: Any) -> list[float]:
    """One vector for a text: generative models without pooling answer one
    vector per token, and their mean stands for the text."""
    if vector and isinstance(vector[0], list):
        width = len(vector[0])
        return [sum(row[i] for row in vector) / len(vector) for i in range(width)]
    return [float(x) for x in vector]


def family_tag(model: ModelInfo) -> str | None:
    """``model.<family>``, the capability that finds a model family."""
    tag = f"model.{model.family.lower().replace('-', '_').replace('.', '_')}"
    return tag if model.family and is_valid_capability(tag) else None


class ServedModels:
    """The models a server-backed backend serves and what each can do; a backend
    fills them in :meth:`open` and this class answers the rest."""

    url: str

    def __init__(self) -> None:
        self._models: list[ModelInfo] = []
        self._caps_by_model: dict[str, frozenset[str]] = {}

    async def open(self) -> None:
        raise NotImplementedError

    def _serve(self, served: Iterable[tuple[ModelInfo, Iterable[str]]]) -> None:
        entries = list(served)
        self._models = [model for model, _ in entries]
        self._caps_by_model = {model.name: frozenset(caps) for model, caps in entries}

    async def refresh(self) -> None:
        """Read the server's models again: models pulled or removed since, and a
        server that stopped answering serves none until it is back."""
        try:
            await self.open()
        except BackendError as exc:
            if self._models:
                log.warning("%s stopped answering (%s); its models are withdrawn", self.url, exc)
            self._serve(())

    def capabilities(self) -> Sequence[str]:
        names: dict[str, None] = {}
        for model in self._models:
            for cap in sorted(self._caps_by_model.get(model.name, ())):
                names.setdefault(cap, None)
        for model in self._models:
            if (tag := family_tag(model)) is not None:
                names.setdefault(tag, None)
        return list(names)

    def models(self) -> Sequence[ModelInfo]:
        return tuple(self._models)

    def _pick(self, capability: str, constraints: Mapping[str, Any] | None) -> ModelInfo:
        """The first model that serves ``capability`` (skills run as chat) and
        meets the task's model constraints."""
        task_cap = capability if capability in MODEL_TASKS else CHAT
        for model in self._models:
            if task_cap not in self._caps_by_model.get(model.name, ()):
                continue
            if constraints and not model_meets(model, constraints):
                continue
            return model
        raise ModelNotFoundError(
            f"no model at {self.url} serves {task_cap} with {dict(constraints or {})}"
        )
