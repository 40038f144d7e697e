"""Requester side of ``/llamanet/task/1.0.0``, with a pool of idle streams per peer.

Opening a stream costs about 3 ms in py-libp2p 0.8.1 (multistream-select in
Python) while a round trip on an open stream costs under 1 ms, so finished
streams go back to a per-peer pool and carry the next task to that peer.

Failure mapping (what :meth:`TaskClient.run` raises):

* the worker said ``reject`` / ``error``  -> :class:`TaskRejectedError` / :class:`TaskFailedError`
  (the stream stays usable and returns to the pool);
* the deadline passed                     -> :class:`RequestTimeoutError`
  (``cancel`` is sent, the stream is reset);
* the stream or connection broke          -> :class:`StreamBrokenError`;
* the peer could not be reached           -> :class:`PeerUnreachableError`;
* the peer broke the protocol or its receipt does not verify
                                          -> :class:`RemoteProtocolError` subclasses.

A pooled stream that turns out to be dead before the worker answered anything
(the worker closed it as idle) is discarded and the task is sent once more on
a fresh stream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import trio

from llamanet.errors import (
    LocalProtocolError,
    RequestTimeoutError,
    StreamBrokenError,
    TaskFailedError,
    TaskRejectedError,
)
from llamanet.protocol.codec import NEED_DATA
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
from llamanet.protocol.peer_ids import peer_id_to_text
from llamanet.protocol.session import TaskSession
from llamanet.protocol.task_state import Role

from .stream import ByteStream
from .task_traffic import TaskTraffic, current_traffic

log = logging.getLogger(__name__)

DEFAULT_POOL_IDLE_TIMEOUT: Final = 30.0
"""Shorter than the worker's idle timeout (60 s), so we rarely reuse a stream the
worker is about to close."""
DEFAULT_MAX_IDLE_PER_PEER: Final = 32

StreamOpener = Callable[[bytes], Awaitable[ByteStream]]
EventCallback = Callable[[Message], Awaitable[None]]


@dataclass(eq=False)
class _Lease:
    peer: bytes
    stream: ByteStream
    session: TaskSession
    reused: bool
    idle_since: float = 0.0


class _StaleStream(Exception):
    """A reused stream died before the worker answered: try a fresh one."""


@dataclass
class StreamPool:
    """Idle task streams per peer."""

    opener: StreamOpener
    session_config: SessionConfig = field(default_factory=SessionConfig)
    max_idle_per_peer: int = DEFAULT_MAX_IDLE_PER_PEER
    idle_timeout: float = DEFAULT_POOL_IDLE_TIMEOUT
    _idle: dict[bytes, list[_Lease]] = field(default_factory=dict)

    async def acquire(self, peer: bytes, *, fresh: bool = False) -> _Lease:
        now = trio.current_time()
        idle = self._idle.get(peer, [])
        while idle and not fresh:
            lease = idle.pop()
            if now - lease.idle_since < self.idle_timeout and lease.session.can_start_task:
                lease.reused = True
                return lease
            await lease.stream.close()
        stream = await self.opener(peer)
        session = TaskSession(Role.REQUESTER, config=self.session_config, worker=peer)
        return _Lease(peer, stream, session, reused=False)

    async def release(self, lease: _Lease) -> None:
        idle = self._idle.setdefault(lease.peer, [])
        if lease.session.can_start_task and len(idle) < self.max_idle_per_peer:
            lease.idle_since = trio.current_time()
            idle.append(lease)
        else:
            await lease.stream.close()

    async def discard(self, lease: _Lease) -> None:
        await lease.stream.reset()

    def idle_count(self, peer: bytes | None = None) -> int:
        if peer is not None:
            return len(self._idle.get(peer, []))
        return sum(len(v) for v in self._idle.values())

    async def reap(self) -> int:
        """Close streams idle for longer than ``idle_timeout``; returns how many."""
        now = trio.current_time()
        closed = 0
        for peer in list(self._idle):
            keep = []
            for lease in self._idle[peer]:
                if now - lease.idle_since >= self.idle_timeout:
                    await lease.stream.close()
                    closed += 1
                else:
                    keep.append(lease)
            if keep:
                self._idle[peer] = keep
            else:
                del self._idle[peer]
        return closed

    async def close_all(self) -> None:
        for peer in list(self._idle):
            for lease in self._idle.pop(peer):
                await lease.stream.close()


class TaskClient:
    """Sends tasks to peers and returns their verified results."""

    def __init__(self, pool: StreamPool, *, clock: Callable[[], float] = time.time) -> None:
        self.pool = pool
        self._clock = clock

    async def run(
        self, peer: bytes, offer: TaskOffer, *, on_event: EventCallback | None = None
    ) -> TaskResult:
        """Run ``offer`` on ``peer``; ``on_event`` sees ``accept`` and every chunk.

        The result's receipt has been verified against ``peer``'s key.
        """
        remaining = offer.deadline / 1000.0 - self._clock()
        deadline = trio.current_time() + remaining
        fresh = False
        while True:
            with trio.move_on_at(deadline) as timeout:
                lease = await self.pool.acquire(peer, fresh=fresh)
            if timeout.cancelled_caught:
                raise RequestTimeoutError(
                    f"deadline passed before a stream to {peer_id_to_text(peer)} opened",
                    peer_id=peer_id_to_text(peer),
                )
            try:
                return await self._run_on(lease, offer, deadline, on_event)
            except _StaleStream:
                log.debug(
                    "pooled stream to %s was dead; retrying on a fresh one", peer_id_to_text(peer)
                )
                fresh = True

    async def _run_on(
        self, lease: _Lease, offer: TaskOffer, deadline: float, on_event: EventCallback | None
    ) -> TaskResult:
        ok = False
        try:
            with trio.move_on_at(deadline) as scope:
                result = await self._exchange(lease, offer, on_event)
            if not scope.cancelled_caught:
                ok = True
                return result
            await self._send_cancel(lease, "deadline")
            raise RequestTimeoutError(
                f"task {offer.id.hex()} on {peer_id_to_text(lease.peer)} passed its deadline",
                peer_id=peer_id_to_text(lease.peer),
            )
        except (TaskRejectedError, TaskFailedError):
            ok = True
            raise
        finally:
            if ok:
                await self.pool.release(lease)
            else:
                if lease.session.is_active:
                    # Cancelled from outside (or broken): tell the worker before the
                    # reset, for transports where a reset looks like a clean close.
                    await self._send_cancel(lease, "requester cancelled")
                await self.pool.discard(lease)

    async def _exchange(
        self, lease: _Lease, offer: TaskOffer, on_event: EventCallback | None
    ) -> TaskResult:
        session, stream = lease.session, lease.stream
        traffic = current_traffic() or TaskTraffic()
        answered = False
        try:
            frame = session.send(offer)
            await stream.write(frame)
            traffic.frames_sent += 1
            traffic.bytes_sent += len(frame)
            while True:
                data = await stream.read()
                traffic.bytes_received += len(data)
                if not data and session.is_active:
                    if lease.reused and not answered:
                        raise _StaleStream()
                    # The worker's process or connection went away mid-task.
                    raise StreamBrokenError(
                        f"{peer_id_to_text(lease.peer)} closed the stream during the task",
                        peer_id=peer_id_to_text(lease.peer),
                    )
                session.receive_data(data)
                while (event := session.next_event()) is not NEED_DATA:
                    traffic.frames_received += 1
                    answered = True
                    if isinstance(event, TaskResult):
                        return event
                    if isinstance(event, TaskRejected):
                        raise TaskRejectedError(
                            event.code,
                            event.msg,
                            peer_id=peer_id_to_text(lease.peer),
                            retry_after_ms=event.retry_after_ms,
                        )
                    if isinstance(event, ErrorMessage):
                        raise TaskFailedError(
                            event.code, event.msg, peer_id=peer_id_to_text(lease.peer)
                        )
                    if on_event is not None and isinstance(event, TaskAccepted | TaskChunk):
                        await on_event(event)
        except StreamBrokenError:
            if lease.reused and not answered:
                raise _StaleStream() from None
            raise

    async def _send_cancel(self, lease: _Lease, reason: str) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(0.5):
            try:
                frame = lease.session.send(TaskCancel(reason=reason))
                await lease.stream.write(frame)
                if (traffic := current_traffic()) is not None:
                    traffic.frames_sent += 1
                    traffic.bytes_sent += len(frame)
            except (StreamBrokenError, LocalProtocolError) as exc:
                log.debug("could not send cancel to %s: %s", peer_id_to_text(lease.peer), exc)
