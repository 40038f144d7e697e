"""One end of a task stream, without I/O: bytes in, events out.

::

    session = TaskSession(Role.REQUESTER, worker=peer_id)
    stream.write(session.send(offer))
    while True:
        event = session.next_event()
        if event is NEED_DATA:
            session.receive_data(await stream.read())
            continue
        ...

The session checks every message against :mod:`task_state`, numbers chunks,
remembers the exact body of the current task frame (receipts sign its hash),
checks result receipts on the requester side when it knows the worker, and
offers the current deadline through :meth:`get_timer` / :meth:`handle_timer`.
After any error it is poisoned (state ``ERROR``), like h11's connections.
"""

from __future__ import annotations

from llamanet.errors import (
    DecodeError,
    InvalidReceiptError,
    LocalProtocolError,
    MessageTooLargeError,
    ProtocolError,
    RemoteProtocolError,
)
from llamanet.protocol.codec import (
    NEED_DATA,
    FrameDecoder,
    _NeedData,
    decode_message,
    encode_message,
    frame,
)
from llamanet.protocol.config import SessionConfig
from llamanet.protocol.messages import (
    ErrorMessage,
    Message,
    TaskCancel,
    TaskChunk,
    TaskOffer,
    TaskResult,
)
from llamanet.protocol.peer_ids import peer_id_to_text
from llamanet.protocol.receipts import verify_receipt
from llamanet.protocol.task_state import (
    ACTIVE_STATES,
    DONE,
    ERROR,
    IDLE,
    Role,
    TaskState,
    next_state,
)


class TaskSession:
    """State of one task stream as seen from ``our_role``.

    ``worker`` (requester side only) is the worker's peer ID; when given, every
    result's receipt is verified and a bad one raises :class:`InvalidReceiptError`.
    """

    def __init__(
        self,
        our_role: Role,
        *,
        config: SessionConfig | None = None,
        worker: bytes | None = None,
    ) -> None:
        self.our_role = our_role
        self.their_role = our_role.other
        self.config = config or SessionConfig()
        self.state: TaskState = IDLE
        self._decoder = FrameDecoder(self.config.max_frame_size)
        self._worker = worker
        self._peer_text = peer_id_to_text(worker) if worker else None
        self.task: TaskOffer | None = None
        self.task_body: bytes | None = None
        self._next_chunk_seq = 0
        self.cancel_requested = False
        self.tasks_completed = 0

    # -- inspection ---------------------------------------------------------

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def can_start_task(self) -> bool:
        """True when a new task may be sent (requester) or received (worker)."""
        return self.state in (IDLE, DONE) and not self._decoder.at_eof

    @property
    def next_chunk_seq(self) -> int:
        return self._next_chunk_seq

    @property
    def buffered(self) -> int:
        return self._decoder.buffered

    # -- sending ------------------------------------------------------------

    def send(self, msg: Message, *, max_size: int | None = None) -> bytes:
        """Check that we may send ``msg`` now and return its frame.

        With ``max_size``, a message whose body is larger raises
        :class:`MessageTooLargeError` and leaves the session as it was, so the
        caller can send an error instead.
        """
        self._check_usable()
        try:
            body = encode_message(msg)
        except ProtocolError:
            self.state = ERROR
            raise
        if max_size is not None and len(body) > max_size:
            raise MessageTooLargeError(len(body), max_size)
        try:
            self._transition(self.our_role, msg, body, LocalProtocolError)
        except ProtocolError:
            self.state = ERROR
            raise
        return frame(body)

    # -- receiving ----------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes read from the stream; ``b""`` when the peer closed its side."""
        self._check_usable()
        self._decoder.receive_data(data)

    def next_event(self) -> Message | _NeedData:
        """The next message from the peer, or :data:`NEED_DATA`.

        Raises :class:`RemoteProtocolError` (and poisons the session) for bytes or
        messages the protocol forbids, including a stream that ends mid-task.
        """
        self._check_usable()
        try:
            body = self._decoder.next_frame()
            if isinstance(body, _NeedData):
                # A requester may half-close after sending its task and still want
                # the answer, so only the requester treats EOF mid-task as an error.
                if self._decoder.at_eof and self.is_active and self.our_role is Role.REQUESTER:
                    raise RemoteProtocolError(
                        f"stream closed in state {self.state.value}", peer_id=self._peer_text
                    )
                return NEED_DATA
            msg = decode_message(body)
            self._transition(self.their_role, msg, body, RemoteProtocolError)
            if isinstance(msg, TaskResult):
                self._check_receipt(msg)
        except RemoteProtocolError as exc:
            self.state = ERROR
            if exc.peer_id is None:
                exc.peer_id = self._peer_text
            raise
        return msg

    # -- timers -------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When the current task's deadline passes (unix seconds), if one is running."""
        if self.task is not None and self.is_active:
            return self.task.deadline / 1000.0
        return None

    def handle_timer(self, now: float) -> bytes:
        """Act on the deadline at time ``now`` (unix seconds); returns bytes to send.

        Worker: answers ``error{deadline_exceeded}`` and finishes the task.
        Requester: sends ``cancel`` and poisons the session, since the worker may
        still answer and the stream can no longer be reused.
        """
        timer = self.get_timer()
        if timer is None or now < timer:
            return b""
        if self.our_role is Role.WORKER:
            return self.send(ErrorMessage(code="deadline_exceeded", msg="task deadline passed"))
        data = self.send(TaskCancel(reason="deadline"))
        self.state = ERROR
        return data

    # -- internals ----------------------------------------------------------

    def _check_usable(self) -> None:
        if self.state is ERROR:
            raise LocalProtocolError("task session is in ERROR state; reset the stream")

    def _transition(
        self,
        sender: Role,
        msg: Message,
        body: bytes,
        error: type[LocalProtocolError] | type[RemoteProtocolError],
    ) -> None:
        new = next_state(self.state, sender, type(msg))
        if new is None:
            raise error(
                f"{sender.value} may not send {msg.wire_type!r} in state {self.state.value}"
            )
        if isinstance(msg, TaskChunk):
            if msg.seq != self._next_chunk_seq:
                raise error(f"chunk seq {msg.seq}, expected {self._next_chunk_seq}")
            self._next_chunk_seq += 1
        elif isinstance(msg, TaskOffer):
            self.task, self.task_body = msg, body
            self._next_chunk_seq = 0
            self.cancel_requested = False
        elif isinstance(msg, TaskCancel) and self.state in ACTIVE_STATES:
            self.cancel_requested = True
        if new is DONE and self.state is not DONE:
            self.tasks_completed += 1
        self.state = new

    def _check_receipt(self, msg: TaskResult) -> None:
        if self._worker is None or self.task_body is None:
            return
        try:
            ok = verify_receipt(
                self._worker, msg.receipt, self.task_body, msg.output, msg.model_digest
            )
        except DecodeError as exc:
            raise InvalidReceiptError(f"receipt cannot be checked: {exc}") from exc
        except LocalProtocolError as exc:
            raise InvalidReceiptError(f"output cannot be hashed: {exc}") from exc
        if not ok:
            raise InvalidReceiptError("result receipt does not verify against the worker's key")
