"""What a task cost on the wire: task-protocol frames and bytes, both directions.

Counted by the task client into the :class:`TaskTraffic` of the block that asked
(:func:`counting_traffic`), which sees every attempt, failover and verification
copy the ask made, since trio tasks inherit the block's context.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(slots=True)
class TaskTraffic:
    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0

    @property
    def frames(self) -> int:
        return self.frames_sent + self.frames_received

    @property
    def bytes(self) -> int:
        return self.bytes_sent + self.bytes_received


_current: contextvars.ContextVar[TaskTraffic | None] = contextvars.ContextVar(
    "llamanet_task_traffic", default=None
)


def current_traffic() -> TaskTraffic | None:
    return _current.get()


@contextmanager
def counting_traffic() -> Iterator[TaskTraffic]:
    """Count the task traffic of everything asked inside the block."""
    traffic = TaskTraffic()
    token = _current.set(traffic)
    try:
        yield traffic
    finally:
        _current.reset(token)
