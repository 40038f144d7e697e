"""The interface every backend implements: built-in skills today, model servers next.

A backend turns a :class:`TaskRequest` into an async iterator that yields any
number of :class:`Chunk` and ends with exactly one :class:`Completion`.  It raises
:class:`~llamanet.errors.BackendError` (or a subclass) when it cannot answer;
the worker maps ``BackendError.code`` onto the task error it reports.  Cancelling
the iteration (trio cancellation) must stop the work promptly.

Task ``params`` every model backend understands, whatever the server calls them:
``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``seed`` and ``stop``; any
other key is passed to the server as it is.  A :class:`Completion` of a model task
reports ``usage`` as ``prompt_tokens`` and ``completion_tokens``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from llamanet.protocol.records import ModelInfo


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskRequest:
    """A task as a backend sees it: already validated and accepted by the worker."""

    id: bytes
    capability: str
    """The capability the backend serves it as (the best match for what was asked)."""
    requested: str
    """The capability the requester asked for (may be a prefix of ``capability``)."""
    input: Any
    params: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] | None = None
    session: str | None = None
    deadline: float = 0.0
    """Unix seconds; the worker cancels the backend when it passes."""
    stream: bool = False
    depth: int = 0
    requester: str = ""
    """Peer ID (text) of whoever sent the task."""
    parent: bytes | None = None
    """The task this one is a sub-task of, if a worker delegated it."""
    budget: Mapping[str, Any] | None = None
    """What the task may use (``tokens``, ``credits``), sub-tasks included."""
    delegate: Any = field(default=None, compare=False, repr=False)
    """Asks the swarm for a sub-task of this task (an
    :class:`~llamanet.orchestrator.delegation.Delegation`), when the node allows it."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of streamed output: a text delta for text tasks."""

    data: Any


@dataclass(frozen=True, kw_only=True, slots=True)
class Completion:
    """The end of a task: the whole output and what it cost."""

    output: Any
    usage: Mapping[str, float] = field(default_factory=dict)
    model_digest: str = ""
    model: str = ""
    """Name of the model that answered (for model tasks)."""


@runtime_checkable
class Backend(Protocol):
    """What the worker needs from anything that can run tasks."""

    @property
    def name(self) -> str:
        """Short name for logs and status (``builtin``, ``ollama``, ...)."""
        ...

    def capabilities(self) -> Sequence[str]:
        """Capability names this backend serves right now."""
        ...

    def models(self) -> Sequence[ModelInfo]:
        """Models to advertise in the capability record (empty for plain skills)."""
        ...

    def execute(self, request: TaskRequest) -> AsyncGenerator[Chunk | Completion, None]:
        """Run one task; yields chunks, then exactly one :class:`Completion`."""
        ...
