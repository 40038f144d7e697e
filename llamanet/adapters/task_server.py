"""Worker side of ``/llamanet/task/1.0.0``: drives a :class:`TaskSession` over a stream.

One call of :meth:`TaskServer.serve` owns one stream.  It reads frames for as long
as the stream lives, runs one task at a time through the :class:`TaskExecutor`
port, and keeps the stream open between tasks so the requester can reuse it.

* ``cancel`` from the requester, a stream reset, or the task's deadline cancels
  the running backend; the answer is ``error{cancelled}`` or
  ``error{deadline_exceeded}`` when the stream still works.
* Garbage bytes or an illegal message get ``error{bad_request}`` (or
  ``too_large`` for an oversized frame) and the stream is reset; nothing else on
  the node is affected.
* A stream that sends no task within ``first_frame_timeout``, or stays idle
  between tasks for ``idle_timeout``, is closed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing, suppress
from dataclasses import dataclass, field
from typing import Final, Protocol

import trio

from llamanet.backends.base import Chunk, Completion, TaskRequest
from llamanet.errors import (
    TASK_ERROR_CODES,
    BackendError,
    LocalProtocolError,
    MessageTooLargeError,
    RemoteProtocolError,
    StreamBrokenError,
)
from llamanet.protocol.codec import NEED_DATA, encode_frame
from llamanet.protocol.config import SessionConfig
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
from llamanet.protocol.peer_ids import Signer, peer_id_to_text
from llamanet.protocol.receipts import sign_receipt
from llamanet.protocol.session import TaskSession
from llamanet.protocol.task_state import Role, TaskState

from .stream import ByteStream

log = logging.getLogger(__name__)

DEFAULT_IDLE_TIMEOUT: Final = 60.0
DEFAULT_FIRST_FRAME_TIMEOUT: Final = 10.0
DEFAULT_ACCEPT_COALESCE_WINDOW: Final = 0.005


class Admission(Protocol):
    """A task the executor agreed to run; holds its concurrency slot until released."""

    @property
    def request(self) -> TaskRequest: ...

    def run(self) -> AsyncGenerator[Chunk | Completion, None]: ...

    def release(self) -> None: ...


class TaskExecutor(Protocol):
    """The worker's decision and execution port (implemented by node.worker.Worker)."""

    def admit(self, offer: TaskOffer, peer: bytes, size_hint: int) -> Admission | TaskRejected:
        """Accept ``offer`` from ``peer`` (returning a slot) or say why not.
        ``size_hint`` is the task frame's size, an upper bound of the input's."""
        ...


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerLimits:
    session: SessionConfig = field(default_factory=SessionConfig)
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    """Close a stream that carries no task for this long, in seconds."""
    first_frame_timeout: float = DEFAULT_FIRST_FRAME_TIMEOUT
    """Close a new stream that sends no complete task within this time, in seconds."""
    accept_coalesce_window: float = DEFAULT_ACCEPT_COALESCE_WINDOW
    """How long ``accept`` may wait to travel with the task's first output, in seconds."""


class _Job:
    """The task running on a stream right now."""

    def __init__(self, offer: TaskOffer, admission: Admission, deadline: float) -> None:
        self.offer = offer
        self.admission = admission
        self.scope = trio.CancelScope(deadline=deadline)
        self.cancelled_by_requester = False
        self.accept_pending = True


class TaskServer:
    """Serves task streams for one node."""

    def __init__(
        self,
        executor: TaskExecutor,
        signer: Signer,
        *,
        limits: ServerLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._executor = executor
        self._signer = signer
        self.limits = limits or ServerLimits()
        self._clock = clock

    async def serve(self, stream: ByteStream) -> None:
        """Serve ``stream`` until it ends; never raises for anything the peer does."""
        await _StreamHandler(self, stream).run()


class _StreamHandler:
    def __init__(self, server: TaskServer, stream: ByteStream) -> None:
        self.server = server
        self.stream = stream
        self.peer_text = peer_id_to_text(stream.peer)
        self.session = TaskSession(Role.WORKER, config=server.limits.session)
        self.write_lock = trio.Lock()
        self.job: _Job | None = None
        self.read_scope = trio.CancelScope()

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                reads, received = trio.open_memory_channel[bytes | StreamBrokenError](0)
                pump = trio.CancelScope()
                nursery.start_soon(self._pump, reads, pump)
                try:
                    await self._read_loop(nursery, received)
                finally:
                    pump.cancel()
        except StreamBrokenError as exc:
            log.debug("task stream from %s broke: %s", self.peer_text, exc)
        finally:
            if self.job is not None:
                self.job.scope.cancel()
            if self.session.state is TaskState.ERROR:
                await self.stream.reset()
            else:
                await self.stream.close()

    async def _pump(
        self, reads: trio.MemorySendChannel[bytes | StreamBrokenError], scope: trio.CancelScope
    ) -> None:
        # The timers below interrupt waiting for data, which must never interrupt
        # a read itself: py-libp2p 0.8.1's YamuxStream.read takes the bytes out of
        # its buffer and then awaits a window update, so a read cancelled there
        # loses them (a requester's cancel sent just as the accept timer fired was
        # dropped).  Reads happen here, uncancelled until the stream is done with;
        # a rendezvous channel hands each one over, and waiting on it loses nothing.
        with scope:
            async with reads:
                while True:
                    try:
                        data = await self.stream.read()
                    except StreamBrokenError as exc:
                        await reads.send(exc)
                        return
                    await reads.send(data)
                    if not data:
                        return

    def _arm_idle_timer(self, timeout: float) -> None:
        self.read_scope.deadline = trio.current_time() + timeout

    async def _read_loop(
        self, nursery: trio.Nursery, received: trio.MemoryReceiveChannel[bytes | StreamBrokenError]
    ) -> None:
        # Waiting for data is bounded by one timer that means, depending on the
        # state: no complete task yet (first frame), idle between tasks, or "send
        # the pending accept now" while a task runs.
        self._arm_idle_timer(self.server.limits.first_frame_timeout)
        while True:
            data = b""
            with self.read_scope:
                item = await received.receive()
                if isinstance(item, StreamBrokenError):
                    raise item
                data = item
            fired = self.read_scope.cancelled_caught
            self.read_scope = trio.CancelScope(deadline=self.read_scope.deadline)
            if fired:
                job = self.job
                if job is None:
                    log.debug("closing idle task stream from %s", self.peer_text)
                    return
                await self._flush_accept(job)
                self.read_scope.deadline = math.inf
                continue
            try:
                self.session.receive_data(data)
                while (event := self.session.next_event()) is not NEED_DATA:
                    assert isinstance(event, Message)
                    await self._on_event(event, nursery)
            except RemoteProtocolError as exc:
                await self._refuse(exc)
                return
            if not data:
                # The requester half-closed: the nursery lets a running task finish.
                return

    async def _on_event(self, event: Message, nursery: trio.Nursery) -> None:
        if isinstance(event, TaskOffer):
            await self._on_offer(event, nursery)
        elif isinstance(event, TaskCancel) and self.job is not None:
            self.job.cancelled_by_requester = True
            self.job.scope.cancel()

    async def _on_offer(self, offer: TaskOffer, nursery: trio.Nursery) -> None:
        wall_now = self.server._clock()
        remaining = offer.deadline / 1000.0 - wall_now
        if remaining <= 0:
            await self._send(TaskRejected(code="deadline_exceeded", msg="deadline already passed"))
            self._arm_idle_timer(self.server.limits.idle_timeout)
            return
        body_size = len(self.session.task_body or b"")
        decision = self.server._executor.admit(offer, self.stream.peer, body_size)
        if isinstance(decision, TaskRejected):
            await self._send(decision)
            self._arm_idle_timer(self.server.limits.idle_timeout)
            return
        self.job = job = _Job(offer, decision, trio.current_time() + remaining)
        # ``accept`` leaves with the first output when that comes quickly (one write
        # and one read instead of two for short tasks), otherwise when this timer
        # ends the read below.
        self._arm_idle_timer(self.server.limits.accept_coalesce_window)
        nursery.start_soon(self._run_job, job)

    async def _flush_accept(self, job: _Job) -> None:
        async with self.write_lock:
            if job.accept_pending:
                job.accept_pending = False
                await self.stream.write(self.session.send(TaskAccepted()))

    async def _run_job(self, job: _Job) -> None:
        completion: Completion | None = None
        try:
            with job.scope:
                async with aclosing(job.admission.run()) as items:
                    async for item in items:
                        if completion is not None:
                            raise BackendError("backend yielded output after its completion")
                        if isinstance(item, Completion):
                            completion = item
                        elif job.offer.stream:
                            chunk = TaskChunk(seq=self.session.next_chunk_seq, data=item.data)
                            await self._send_checked(chunk)
            if job.scope.cancelled_caught or completion is None:
                await self._send(self._interruption(job, completion))
            else:
                await self._send_result(completion)
        except BackendError as exc:
            code = exc.code if exc.code in TASK_ERROR_CODES else "backend_error"
            await self._send(ErrorMessage(code=code, msg=str(exc)[:1000]))
        except StreamBrokenError:
            log.debug("requester %s went away during a task", self.peer_text)
        except Exception:
            # A bug in a backend must not take the node down: report and go on.
            log.exception("task %s from %s crashed", job.offer.id.hex(), self.peer_text)
            await self._send(ErrorMessage(code="internal", msg="the worker failed unexpectedly"))
        finally:
            job.admission.release()
            self.job = None
            self._arm_idle_timer(self.server.limits.idle_timeout)

    def _interruption(self, job: _Job, completion: Completion | None) -> ErrorMessage:
        if job.cancelled_by_requester:
            return ErrorMessage(code="cancelled", msg="cancelled by the requester")
        if job.scope.cancelled_caught:
            return ErrorMessage(code="deadline_exceeded", msg="task deadline passed")
        return ErrorMessage(code="internal", msg="backend ended without a result")

    async def _send_result(self, completion: Completion) -> None:
        assert self.session.task_body is not None
        receipt = sign_receipt(
            self.server._signer,
            self.session.task_body,
            completion.output,
            completion.model_digest,
            int(self.server._clock() * 1000),
        )
        await self._send_checked(
            TaskResult(
                output=completion.output,
                receipt=receipt,
                usage=dict(completion.usage),
                model_digest=completion.model_digest,
            )
        )

    async def _send_checked(self, msg: Message) -> None:
        """Send a message whose size depends on the backend; too big becomes an error."""
        limit = self.server.limits.session.max_frame_size
        try:
            await self._send(msg, max_size=limit)
        except MessageTooLargeError as exc:
            err = BackendError(f"{msg.wire_type}: {exc}")
            err.code = "too_large"
            raise err from exc
        except LocalProtocolError as exc:
            raise BackendError(f"output cannot be encoded: {exc}") from exc

    async def _send(self, msg: Message, *, max_size: int | None = None) -> None:
        async with self.write_lock:
            accept = b""
            job = self.job
            if job is not None and job.accept_pending:
                job.accept_pending = False
                accept = self.session.send(TaskAccepted())
            try:
                data = self.session.send(msg, max_size=max_size)
            except MessageTooLargeError:
                if accept:
                    await self.stream.write(accept)
                raise
            await self.stream.write(accept + data)

    async def _refuse(self, exc: RemoteProtocolError) -> None:
        log.info("bad task stream from %s: %s", self.peer_text, exc)
        if self.job is not None:
            self.job.scope.cancel()
        # Answer outside the state machine: the session is poisoned, the stream ends.
        with trio.move_on_after(1):
            with suppress(StreamBrokenError):
                await self.stream.write(_error_frame(exc.code, str(exc)))


def _error_frame(code: str, msg: str) -> bytes:
    return encode_frame(
        ErrorMessage(code=code if code in TASK_ERROR_CODES else "bad_request", msg=msg[:1000])
    )
