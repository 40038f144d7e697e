"""The task state machine of one ``/llamanet/task/1.0.0`` stream, as a table.

One task runs on a stream at a time; after ``DONE`` the same stream may carry the
next task.  Both ends run the same table: the requester checks what it sends
against the ``REQUESTER`` rows and what it receives against the ``WORKER`` rows;
the worker does the opposite.

::

    IDLE ──task──> OFFERED ──accept──> RUNNING ──chunk──> RUNNING
                     │                   │
                     ├──reject──> DONE <─┼──result
                     └──error───> DONE <─┴──error
    DONE ──task──> OFFERED            (stream reuse)
    cancel: allowed in OFFERED, RUNNING and DONE (a cancel may cross the result)
    any violation ──> ERROR           (terminal; the stream is reset)
"""

from __future__ import annotations

import enum
from typing import Final

from llamanet.protocol.messages import (
    ErrorMessage,
    Message,
    TaskAccepted,
    TaskCancel,
    TaskChunk,
    TaskOffer,
    TaskRejected,
    TaskResult,
)


class Role(enum.Enum):
    REQUESTER = "requester"
    WORKER = "worker"

    @property
    def other(self) -> Role:
        return Role.WORKER if self is Role.REQUESTER else Role.REQUESTER


class TaskState(enum.Enum):
    IDLE = "IDLE"
    OFFERED = "OFFERED"
    RUNNING = "RUNNING"
    DONE = "DONE"
    ERROR = "ERROR"


IDLE, OFFERED, RUNNING, DONE, ERROR = (
    TaskState.IDLE,
    TaskState.OFFERED,
    TaskState.RUNNING,
    TaskState.DONE,
    TaskState.ERROR,
)

REQUESTER, WORKER = Role.REQUESTER, Role.WORKER

# (state, who sends, message type) -> next state.  Anything absent is illegal.
TASK_TRANSITIONS: Final[dict[tuple[TaskState, Role, type[Message]], TaskState]] = {
    (IDLE, REQUESTER, TaskOffer): OFFERED,
    (DONE, REQUESTER, TaskOffer): OFFERED,
    (OFFERED, REQUESTER, TaskCancel): OFFERED,
    (RUNNING, REQUESTER, TaskCancel): RUNNING,
    (DONE, REQUESTER, TaskCancel): DONE,
    (OFFERED, WORKER, TaskAccepted): RUNNING,
    (OFFERED, WORKER, TaskRejected): DONE,
    (OFFERED, WORKER, ErrorMessage): DONE,
    (RUNNING, WORKER, TaskChunk): RUNNING,
    (RUNNING, WORKER, TaskResult): DONE,
    (RUNNING, WORKER, ErrorMessage): DONE,
}

# States in which a task is in progress (its deadline applies).
ACTIVE_STATES: Final = frozenset({OFFERED, RUNNING})


def next_state(state: TaskState, sender: Role, message_type: type[Message]) -> TaskState | None:
    """The state after ``sender`` sends a message of ``message_type``, or ``None`` if
    that is illegal."""
    return TASK_TRANSITIONS.get((state, sender, message_type))
