from __future__ import annotations

import itertools

import pytest

from llamanet.protocol.messages import MESSAGE_TYPES, TaskOffer, TaskResult
from llamanet.protocol.task_state import (
    DONE,
    ERROR,
    IDLE,
    OFFERED,
    REQUESTER,
    RUNNING,
    TASK_TRANSITIONS,
    WORKER,
    Role,
    TaskState,
    next_state,
)


def test_table_only_mentions_task_messages_and_live_states() -> None:
    for state, role, msg_type in TASK_TRANSITIONS:
        assert state is not ERROR
        assert msg_type.wire_type not in ("caps_get", "caps")
        assert isinstance(role, Role)


def test_error_is_terminal() -> None:
    for role, msg_type in itertools.product(Role, MESSAGE_TYPES.values()):
        assert next_state(ERROR, role, msg_type) is None


def test_only_requesters_offer_and_only_workers_answer() -> None:
    for state in TaskState:
        assert next_state(state, WORKER, TaskOffer) is None
        assert next_state(state, REQUESTER, TaskResult) is None


@pytest.mark.parametrize(
    ("state", "wire_type", "sender", "expected"),
    [
        (IDLE, "task", REQUESTER, OFFERED),
        (DONE, "task", REQUESTER, OFFERED),
        (OFFERED, "task", REQUESTER, None),
        (RUNNING, "task", REQUESTER, None),
        (OFFERED, "accept", WORKER, RUNNING),
        (OFFERED, "reject", WORKER, DONE),
        (RUNNING, "reject", WORKER, None),
        (OFFERED, "chunk", WORKER, None),
        (RUNNING, "chunk", WORKER, RUNNING),
        (RUNNING, "result", WORKER, DONE),
        (OFFERED, "result", WORKER, None),
        (RUNNING, "error", WORKER, DONE),
        (IDLE, "cancel", REQUESTER, None),
        (DONE, "cancel", REQUESTER, DONE),
        (RUNNING, "cancel", REQUESTER, RUNNING),
    ],
)
def test_transitions(
    state: TaskState, wire_type: str, sender: Role, expected: TaskState | None
) -> None:
    assert next_state(state, sender, MESSAGE_TYPES[wire_type]) is expected
