"""Two TaskSessions wired by plain function calls (h11's ConnectionPair style)."""

from __future__ import annotations

import pytest

from llamanet.errors import InvalidReceiptError, LocalProtocolError, RemoteProtocolError
from llamanet.protocol.codec import NEED_DATA, encode_frame
from llamanet.protocol.config import SessionConfig
from llamanet.protocol.messages import (
    ErrorMessage,
    Message,
    Receipt,
    TaskAccepted,
    TaskCancel,
    TaskChunk,
    TaskOffer,
    TaskRejected,
    TaskResult,
)
from llamanet.protocol.receipts import sign_receipt
from llamanet.protocol.session import TaskSession
from llamanet.protocol.task_state import DONE, ERROR, IDLE, OFFERED, RUNNING, Role
from llamanet.trust.keys import Identity

WORKER_ID = Identity(b"\x07" * 32)
DEADLINE_MS = 1_800_000_000_000


def offer(n: int = 0, **kw: object) -> TaskOffer:
    fields: dict[str, object] = {
        "id": bytes([n]) * 16,
        "cap": "text.echo",
        "input": "hi",
        "deadline": DEADLINE_MS,
    }
    fields.update(kw)
    return TaskOffer(**fields)  # type: ignore[arg-type]


class SessionPair:
    def __init__(self, *, trickle: bool = False) -> None:
        self.requester = TaskSession(Role.REQUESTER, worker=WORKER_ID.peer_id)
        self.worker = TaskSession(Role.WORKER)
        self.trickle = trickle

    def _deliver(self, data: bytes, to: TaskSession) -> list[Message]:
        events: list[Message] = []
        chunks = [data[i : i + 1] for i in range(len(data))] if self.trickle else [data]
        for chunk in chunks:
            to.receive_data(chunk)
            while (event := to.next_event()) is not NEED_DATA:
                assert isinstance(event, Message)
                events.append(event)
        return events

    def to_worker(self, msg: Message) -> list[Message]:
        return self._deliver(self.requester.send(msg), self.worker)

    def to_requester(self, msg: Message) -> list[Message]:
        return self._deliver(self.worker.send(msg), self.requester)

    def result(self, output: object, digest: str = "") -> TaskResult:
        assert self.worker.task_body is not None
        receipt = sign_receipt(WORKER_ID, self.worker.task_body, output, digest, 5)
        return TaskResult(output=output, receipt=receipt, usage={"tokens": 1}, model_digest=digest)


@pytest.mark.parametrize("trickle", [False, True])
def test_streamed_task_then_reuse(trickle: bool) -> None:
    pair = SessionPair(trickle=trickle)
    for n in range(3):
        assert pair.to_worker(offer(n, stream=True)) == [offer(n, stream=True)]
        assert pair.worker.state is OFFERED
        assert pair.to_requester(TaskAccepted()) == [TaskAccepted()]
        assert pair.requester.state is RUNNING
        for seq in range(3):
            pair.to_requester(TaskChunk(seq=pair.worker.next_chunk_seq, data=f"c{seq}"))
        result = pair.result("hi")
        assert pair.to_requester(result) == [result]
        assert pair.requester.state is DONE and pair.worker.state is DONE
    assert pair.requester.tasks_completed == 3


def test_reject_ends_the_task() -> None:
    pair = SessionPair()
    pair.to_worker(offer())
    pair.to_requester(TaskRejected(code="overloaded", retry_after_ms=50))
    assert pair.requester.state is DONE
    assert pair.requester.can_start_task


def test_a_second_task_before_the_first_ends_is_illegal_locally() -> None:
    pair = SessionPair()
    pair.to_worker(offer(1))
    with pytest.raises(LocalProtocolError, match="may not send 'task' in state OFFERED"):
        pair.requester.send(offer(2))
    assert pair.requester.state is ERROR
    with pytest.raises(LocalProtocolError, match="ERROR"):
        pair.requester.send(TaskCancel())


def test_worker_rejects_a_pipelined_task_as_remote_error() -> None:
    pair = SessionPair()
    pair.to_worker(offer(1))
    pair.worker.receive_data(encode_frame(offer(2)))
    with pytest.raises(RemoteProtocolError, match="may not send 'task'"):
        pair.worker.next_event()
    assert pair.worker.state is ERROR


def test_out_of_order_chunk() -> None:
    pair = SessionPair()
    pair.to_worker(offer())
    pair.to_requester(TaskAccepted())
    pair.requester.receive_data(encode_frame(TaskChunk(seq=1, data="x")))
    with pytest.raises(RemoteProtocolError, match="expected 0"):
        pair.requester.next_event()


def test_result_with_forged_receipt() -> None:
    pair = SessionPair()
    pair.to_worker(offer())
    pair.to_requester(TaskAccepted())
    forged = TaskResult(output="hi", receipt=Receipt(time_ms=1, signature=b"\x00" * 64))
    with pytest.raises(InvalidReceiptError):
        pair.to_requester(forged)
    assert pair.requester.state is ERROR


def test_receipt_for_other_output_is_rejected() -> None:
    pair = SessionPair()
    pair.to_worker(offer())
    pair.to_requester(TaskAccepted())
    honest = pair.result("hi")
    lying = TaskResult(output="bye", receipt=honest.receipt)
    with pytest.raises(InvalidReceiptError):
        pair.to_requester(lying)


def test_cancel_crossing_the_result_is_tolerated() -> None:
    pair = SessionPair()
    pair.to_worker(offer())
    pair.to_requester(TaskAccepted())
    cancel = pair.requester.send(TaskCancel(reason="user"))
    assert pair.requester.cancel_requested
    pair.to_requester(pair.result("hi"))
    # the worker sees the cancel only after it finished
    pair.worker.receive_data(cancel)
    assert pair.worker.next_event() == TaskCancel(reason="user")
    assert pair.worker.state is DONE


def test_cancel_then_cancelled_error() -> None:
    pair = SessionPair()
    pair.to_worker(offer())
    pair.to_requester(TaskAccepted())
    assert pair.to_worker(TaskCancel()) == [TaskCancel()]
    assert pair.worker.cancel_requested
    assert pair.to_requester(ErrorMessage(code="cancelled")) == [ErrorMessage(code="cancelled")]
    assert pair.requester.state is DONE


def test_stream_closed_mid_task_is_an_error() -> None:
    pair = SessionPair()
    pair.to_worker(offer())
    pair.to_requester(TaskAccepted())
    pair.requester.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="closed in state RUNNING"):
        pair.requester.next_event()


def test_stream_closed_while_idle_is_fine() -> None:
    pair = SessionPair()
    pair.worker.receive_data(b"")
    assert pair.worker.next_event() is NEED_DATA
    assert not pair.worker.can_start_task


def test_worker_deadline_timer() -> None:
    pair = SessionPair()
    assert pair.worker.get_timer() is None
    pair.to_worker(offer())
    pair.to_requester(TaskAccepted())
    assert pair.worker.get_timer() == DEADLINE_MS / 1000
    assert pair.worker.handle_timer(DEADLINE_MS / 1000 - 1) == b""
    data = pair.worker.handle_timer(DEADLINE_MS / 1000)
    assert pair.worker.state is DONE
    pair.requester.receive_data(data)
    assert pair.requester.next_event() == ErrorMessage(
        code="deadline_exceeded", msg="task deadline passed"
    )


def test_requester_deadline_timer_poisons_the_stream() -> None:
    pair = SessionPair()
    pair.to_worker(offer())
    data = pair.requester.handle_timer(DEADLINE_MS / 1000 + 5)
    assert pair.requester.state is ERROR
    pair.worker.receive_data(data)
    assert pair.worker.next_event() == TaskCancel(reason="deadline")


def test_oversized_frame_poisons_the_session() -> None:
    worker = TaskSession(Role.WORKER, config=SessionConfig(max_frame_size=64))
    worker.receive_data(encode_frame(offer(input="x" * 200)))
    with pytest.raises(RemoteProtocolError):
        worker.next_event()
    assert worker.state is ERROR


def test_initial_state() -> None:
    session = TaskSession(Role.WORKER)
    assert session.state is IDLE and session.their_role is Role.REQUESTER
