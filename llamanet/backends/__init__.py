"""Backends: what turns an accepted task into output.

Built-in skills live here today; model servers (Ollama, OpenAI-compatible) plug in
behind the same :class:`Backend` protocol.
"""

from llamanet.backends.base import Backend, Chunk, Completion, TaskRequest
from llamanet.backends.builtin import BUILTIN_SKILLS, BuiltinBackend

__all__ = [
    "BUILTIN_SKILLS",
    "Backend",
    "BuiltinBackend",
    "Chunk",
    "Completion",
    "TaskRequest",
]
