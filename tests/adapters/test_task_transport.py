"""Task server and client over in-memory streams, in virtual time (no sockets)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from llamanet.adapters.stream import ByteStream, TrioByteStream
from llamanet.adapters.task_client import StreamPool, TaskClient
from llamanet.adapters.task_server import ServerLimits, TaskServer
from llamanet.backends.builtin import BuiltinBackend
from llamanet.errors import (
    InvalidReceiptError,
    RequestTimeoutError,
    StreamBrokenError,
    TaskFailedError,
    TaskRejectedError,
)
from llamanet.node.worker import Worker, WorkerLimits
from llamanet.protocol.codec import FrameDecoder, decode_message, encode_frame, frame
from llamanet.protocol.config import SessionConfig
from llamanet.protocol.messages import (
    ErrorMessage,
    Message,
    TaskAccepted,
    TaskCancel,
    TaskChunk,
    TaskOffer,
    TaskRejected,
)
from llamanet.protocol.varint import encode_uvarint
from llamanet.trust.keys import Identity

from ..doubles import CrashingSkillDouble, SlowSkillDouble

WORKER = Identity(b"\x11" * 32)
REQUESTER = Identity(b"\x12" * 32)


class TakeThenWaitStreamDouble(TrioByteStream):
    """TEST DOUBLE for py-libp2p 0.8.1's ``YamuxStream.read``, which takes the bytes
    out of its buffer and then awaits (a window update): a read cancelled in that
    wait has consumed data it never returns."""

    async def read(self, max_bytes: int = 65536) -> bytes:
        data = await super().read(max_bytes)
        await trio.sleep(0.001)
        return data


class Harness:
    """A worker's TaskServer reachable through in-memory stream pairs."""

    def __init__(
        self,
        nursery: trio.Nursery,
        server: TaskServer,
        worker: Worker,
        server_stream: type[TrioByteStream] = TrioByteStream,
    ) -> None:
        self.server_stream = server_stream
        self.nursery = nursery
        self.server = server
        self.worker = worker
        self.opened = 0
        self.slow = next(b for b in worker.backends if isinstance(b, SlowSkillDouble))
        self.pool = StreamPool(self.open, session_config=SessionConfig(max_frame_size=1 << 20))
        self.client = TaskClient(self.pool, clock=self.wall)

    @staticmethod
    def wall() -> float:
        # Wall-clock seconds that advance with trio's (virtual) clock.
        return 1_800_000_000.0 + trio.current_time()

    async def open(self, peer: bytes) -> ByteStream:
        self.opened += 1
        client_end, server_end = trio.testing.memory_stream_pair()
        self.nursery.start_soon(
            self.server.serve, self.server_stream(server_end, REQUESTER.peer_id)
        )
        return TrioByteStream(client_end, WORKER.peer_id)

    def offer(
        self,
        cap: str = "text.echo",
        input: object = "hello streaming world",
        *,
        timeout: float = 5.0,
        **kw: object,
    ) -> TaskOffer:
        return TaskOffer(
            id=os.urandom(16),
            cap=cap,
            input=input,
            deadline=int((self.wall() + timeout) * 1000),
            **kw,  # type: ignore[arg-type]
        )

    async def raw(self) -> tuple[ByteStream, FrameDecoder]:
        """A bare stream to the server, for sending bytes the client never would."""
        return await self.open(WORKER.peer_id), FrameDecoder()


async def read_messages(stream: ByteStream, decoder: FrameDecoder) -> list[Message]:
    out: list[Message] = []
    while True:
        data = await stream.read()
        decoder.receive_data(data)
        out.extend(decode_message(body) for body in decoder.frames())
        if not data:
            return out


@asynccontextmanager
async def harness(
    *,
    max_concurrency: int = 4,
    max_frame_size: int = 1 << 20,
    idle_timeout: float = 60.0,
    server_stream: type[TrioByteStream] = TrioByteStream,
) -> AsyncIterator[Harness]:
    worker = Worker(
        [BuiltinBackend(), SlowSkillDouble(), CrashingSkillDouble()],
        WorkerLimits(max_concurrency=max_concurrency, max_tasks_per_peer=max_concurrency),
    )
    limits = ServerLimits(
        session=SessionConfig(max_frame_size=max_frame_size),
        idle_timeout=idle_timeout,
        first_frame_timeout=5.0,
    )
    server = TaskServer(worker, WORKER, limits=limits, clock=Harness.wall)
    async with trio.open_nursery() as nursery:
        yield Harness(nursery, server, worker, server_stream)
        nursery.cancel_scope.cancel()


async def test_streamed_task_with_verified_receipt(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        events: list[Message] = []

        async def on_event(event: Message) -> None:
            events.append(event)

        result = await h.client.run(WORKER.peer_id, h.offer(stream=True), on_event=on_event)
        assert result.output == "hello streaming world"
        chunks = [e for e in events if isinstance(e, TaskChunk)]
        assert isinstance(events[0], TaskAccepted)
        assert "".join(c.data for c in chunks) == "hello streaming world"
        assert [c.seq for c in chunks] == list(range(len(chunks)))


async def test_streams_are_reused(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        for n in range(5):
            result = await h.client.run(WORKER.peer_id, h.offer("math.eval", f"{n}+1"))
            assert result.output == n + 1
        assert h.opened == 1
        assert h.pool.idle_count(WORKER.peer_id) == 1


async def test_unknown_capability_is_rejected_and_stream_survives(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        with pytest.raises(TaskRejectedError) as info:
            await h.client.run(WORKER.peer_id, h.offer("no.such.skill"))
        assert info.value.code == "unsupported"
        assert "text.echo" in info.value.msg
        assert (await h.client.run(WORKER.peer_id, h.offer("math.eval", "6*7"))).output == 42
        assert h.opened == 1


async def test_bad_input_is_a_bad_request(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        with pytest.raises(TaskFailedError) as info:
            await h.client.run(WORKER.peer_id, h.offer("math.eval", "2**"))
        assert info.value.code == "bad_request"


async def test_overloaded_beyond_max_concurrency(autojump_clock: trio.testing.MockClock) -> None:
    async with harness(max_concurrency=1) as h, trio.open_nursery() as nursery:
        nursery.start_soon(h.client.run, WORKER.peer_id, h.offer("test.slow", None, timeout=60))
        await h.slow.first_chunk_sent.wait()
        with pytest.raises(TaskRejectedError) as info:
            await h.client.run(WORKER.peer_id, h.offer("math.eval", "1"))
        assert info.value.code == "overloaded"
        assert info.value.retry_after_ms is not None
        nursery.cancel_scope.cancel()


async def test_requester_deadline_cancels_the_worker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        start = trio.current_time()
        with pytest.raises(RequestTimeoutError):
            await h.client.run(WORKER.peer_id, h.offer("test.slow", None, timeout=2.0))
        assert trio.current_time() - start == pytest.approx(2.0, abs=0.01)
        await trio.sleep(0.1)
        assert h.slow.cancelled == 1
        assert h.worker.in_flight == 0
        assert h.pool.idle_count() == 0  # a timed-out stream is never reused


async def test_worker_enforces_the_deadline_itself(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        stream, decoder = await h.raw()
        await stream.write(encode_frame(h.offer("test.slow", None, timeout=3.0)))
        start = trio.current_time()
        received: list[Message] = []
        while not any(isinstance(m, ErrorMessage) for m in received):
            decoder.receive_data(await stream.read())
            received.extend(decode_message(b) for b in decoder.frames())
        assert trio.current_time() - start == pytest.approx(3.0, abs=0.01)
        assert received[-1] == ErrorMessage(code="deadline_exceeded", msg="task deadline passed")
        assert h.slow.cancelled == 1


async def test_cancel_from_outside_stops_the_worker(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        with trio.move_on_after(1.0):
            await h.client.run(WORKER.peer_id, h.offer("test.slow", None, timeout=60))
        await trio.sleep(0.1)
        assert h.slow.cancelled == 1
        assert h.worker.in_flight == 0


async def test_a_cancel_that_arrives_as_the_accept_timer_fires_is_not_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The worker holds back "accept" for 5 ms (to send it with the first output)
    # by timing out its wait for data: it reads the offer at 0 and has it at 1 ms,
    # so the timer fires at 6 ms, while the read that took the cancel at 5.5 ms
    # is still waiting to return it (6.5 ms).
    async with harness(server_stream=TakeThenWaitStreamDouble) as h:
        stream, decoder = await h.raw()
        await stream.write(encode_frame(h.offer("test.slow", None, timeout=60)))
        await trio.sleep(0.0055)
        await stream.write(encode_frame(TaskCancel(reason="changed my mind")))
        with trio.fail_after(2):
            messages: list[Message] = []
            while not any(isinstance(m, ErrorMessage) for m in messages):
                decoder.receive_data(await stream.read())
                messages.extend(decode_message(body) for body in decoder.frames())
        assert isinstance(messages[0], TaskAccepted)
        assert [m.code for m in messages if isinstance(m, ErrorMessage)] == ["cancelled"]
        assert h.slow.cancelled == 1


async def test_garbage_gets_bad_request_then_reset(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        stream, decoder = await h.raw()
        await stream.write(frame(b"\xc1 this is not msgpack"))
        messages = await read_messages(stream, decoder)
        assert len(messages) == 1
        assert isinstance(messages[0], ErrorMessage)
        assert messages[0].code == "bad_request"
        # The worker goes on serving others.
        assert (await h.client.run(WORKER.peer_id, h.offer("math.eval", "2*(3+4)"))).output == 14


async def test_oversized_length_prefix_gets_too_large(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness(max_frame_size=4096) as h:
        stream, decoder = await h.raw()
        await stream.write(encode_uvarint(2**60))
        messages = await read_messages(stream, decoder)
        assert [m.code for m in messages if isinstance(m, ErrorMessage)] == ["too_large"]


async def test_silent_stream_is_cut_off(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        stream, decoder = await h.raw()
        start = trio.current_time()
        assert await read_messages(stream, decoder) == []
        assert trio.current_time() - start == pytest.approx(5.0, abs=0.01)


async def test_slow_trickle_does_not_extend_the_first_frame_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        stream, decoder = await h.raw()
        data = encode_frame(h.offer())
        start = trio.current_time()

        async def trickle() -> None:
            with contextlib.suppress(StreamBrokenError):  # the worker hangs up on us
                for i in range(len(data)):
                    await stream.write(data[i : i + 1])
                    await trio.sleep(1.0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            await read_messages(stream, decoder)
            nursery.cancel_scope.cancel()
        assert trio.current_time() - start < 6.0


async def test_idle_pooled_stream_closed_by_worker_is_replaced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness(idle_timeout=10.0) as h:
        h.pool.idle_timeout = 100.0  # longer than the worker's, on purpose
        assert (await h.client.run(WORKER.peer_id, h.offer("math.eval", "1"))).output == 1
        await trio.sleep(20.0)  # the worker closes the idle stream
        assert (await h.client.run(WORKER.peer_id, h.offer("math.eval", "2"))).output == 2
        assert h.opened == 2


async def test_backend_crash_is_internal_and_worker_survives(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with harness() as h:
        with pytest.raises(TaskFailedError) as info:
            await h.client.run(WORKER.peer_id, h.offer("test.crash", None))
        assert info.value.code == "internal"
        assert "simulated bug" in caplog.text
        with pytest.raises(TaskFailedError) as info:
            await h.client.run(WORKER.peer_id, h.offer("test.noresult", None))
        assert info.value.code == "internal"
        assert (await h.client.run(WORKER.peer_id, h.offer("math.eval", "1+1"))).output == 2
        assert h.worker.in_flight == 0


async def test_output_over_the_frame_limit_is_too_large(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        with pytest.raises(TaskFailedError) as info:
            await h.client.run(WORKER.peer_id, h.offer("test.big", None))
        assert info.value.code == "too_large"


async def test_deadline_already_passed_is_rejected(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        stream, decoder = await h.raw()
        await stream.write(encode_frame(h.offer(timeout=-1.0)))
        decoder.receive_data(await stream.read())
        (reply,) = [decode_message(b) for b in decoder.frames()]
        assert isinstance(reply, TaskRejected)
        assert reply.code == "deadline_exceeded"


async def test_depth_and_input_limits(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        with pytest.raises(TaskRejectedError) as info:
            await h.client.run(WORKER.peer_id, h.offer(depth=5))
        assert info.value.code == "depth_exceeded"
        h.worker.limits = WorkerLimits(max_input_bytes=100)
        with pytest.raises(TaskRejectedError) as info:
            await h.client.run(WORKER.peer_id, h.offer(input="x" * 200))
        assert info.value.code == "too_large"


async def test_a_result_signed_by_someone_else_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        h.server._signer = REQUESTER  # the worker now signs with the wrong key
        with pytest.raises(InvalidReceiptError):
            await h.client.run(WORKER.peer_id, h.offer("math.eval", "1"))
