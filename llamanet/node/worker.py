"""Decides whether to run a task and runs it on the right backend.

Implements the :class:`~llamanet.adapters.task_server.TaskExecutor` port.  The
decisions (``admit``) are synchronous and cheap; a task that is admitted holds
one of ``max_concurrency`` slots, and one peer may hold at most
``max_tasks_per_peer`` of them, so a single busy requester cannot starve the
others.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections import Counter, deque
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any, Final

import trio

from llamanet.backends.base import Backend, Chunk, Completion, TaskRequest
from llamanet.errors import BackendError, LocalProtocolError, ModelNotFoundError, SkillInputError
from llamanet.protocol.budget import BUDGET_KEYS, capped_params
from llamanet.protocol.capabilities import best_match
from llamanet.protocol.codec import pack_value
from llamanet.protocol.messages import TaskOffer, TaskRejected
from llamanet.protocol.peer_ids import peer_id_to_text
from llamanet.protocol.records import ModelInfo, model_meets
from llamanet.trust.limits import PeerBuckets

from .activity import FAILED, OK, Activity, Entry
from .perf import ModelSpeed, SpeedBook
from .sessions import FOLLOW_UP, SessionLimits, SessionStore, chat_messages

log = logging.getLogger(__name__)

DEFAULT_MAX_CONCURRENCY: Final = 16
DEFAULT_MAX_TASKS_PER_PEER: Final = 8
DEFAULT_MAX_INPUT_BYTES: Final = 1024 * 1024
DEFAULT_MAX_DEPTH: Final = 4
DEFAULT_TASK_RATE: Final = 200.0
DURATION_SAMPLES: Final = 256


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerLimits:
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    """Tasks running at once on this node; beyond it, ``overloaded``."""
    max_tasks_per_peer: int = DEFAULT_MAX_TASKS_PER_PEER
    """Tasks one requester may have running here at once."""
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES
    """Largest task input (msgpack-encoded), advertised in the record."""
    max_depth: int = DEFAULT_MAX_DEPTH
    """Delegation hops a task may have made before reaching us."""
    tasks_per_peer_per_s: float = DEFAULT_TASK_RATE
    """Task offers one requester may make per second (a token bucket, twice that
    in a burst); beyond it, ``overloaded`` with the time to wait."""

    def __post_init__(self) -> None:
        if min(self.max_concurrency, self.max_tasks_per_peer, self.max_input_bytes) <= 0:
            raise ValueError("worker limits must be positive")
        if self.max_depth < 0:
            raise ValueError("max_depth must be >= 0")


class _Admission:
    def __init__(self, worker: Worker, backend: Backend, request: TaskRequest, peer: bytes) -> None:
        self._worker = worker
        self._backend = backend
        self._request = request
        self._peer = peer
        self._released = False

    @property
    def request(self) -> TaskRequest:
        return self._request

    async def run(self) -> AsyncGenerator[Chunk | Completion, None]:
        outcome = "failed"
        started = trio.current_time()
        self._worker.running[self._request.id] = self._request
        entry = self._worker.record_start(self._request)
        failure: BaseException | None = None
        try:
            request, context = self._worker.with_session_context(self._request)
            async with aclosing(self._worker.measured(self._backend, request)) as items:
                async for item in items:
                    if isinstance(item, Completion):
                        outcome = "ok"
                        self._worker.durations.append(trio.current_time() - started)
                        if context is not None and request.session:
                            self._worker.sessions.keep(
                                request.requester, request.session, context, item.output
                            )
                    yield item
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._worker.running.pop(self._request.id, None)
            self._worker.outcomes[(self._request.capability, outcome)] += 1
            self._worker.record_end(entry, ok=outcome == "ok", failure=failure)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._worker._release(self._peer)


class Worker:
    """Routes tasks to backends within the node's limits."""

    def __init__(
        self,
        backends: Sequence[Backend],
        limits: WorkerLimits | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sessions: SessionLimits | None = None,
        delegator: Callable[[TaskRequest], Any] | None = None,
        activity: Activity | None = None,
    ) -> None:
        self.backends = list(backends)
        self.limits = limits or WorkerLimits()
        self._clock = clock
        self.sessions = SessionStore(sessions, clock=clock)
        self.delegator = delegator
        """Makes a running task's ``delegate`` (the node's; none for a bare worker)."""
        self.activity = activity
        """Where served tasks are recorded (the node's; none for a bare worker)."""
        self.running: dict[bytes, TaskRequest] = {}
        """Tasks admitted and not finished, by id: their parents and sub-tasks."""
        rate = self.limits.tasks_per_peer_per_s
        self._buckets = PeerBuckets(rate, 2 * rate)
        self.speeds = SpeedBook()
        self.in_flight = 0
        self._per_peer: Counter[bytes] = Counter()
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.durations: deque[float] = deque(maxlen=DURATION_SAMPLES)
        """Seconds the backend took for recent completed tasks (advertised as p50)."""
        self.rejections: Counter[str] = Counter()
        self._capabilities: tuple[str, ...] = ()
        self._backend_by_cap: dict[str, Backend] = {}
        self.refresh_capabilities()

    def capabilities(self) -> list[str]:
        return list(self._capabilities)

    def record_start(self, request: TaskRequest) -> Entry | None:
        """Record a served task in the activity; its delegated sub-tasks hang
        under it, as the task id is the parent they are sent with."""
        if self.activity is None:
            return None
        notes = []
        if request.requested != request.capability:
            notes.append(f"asked as {request.requested}")
        if request.session:
            notes.append(f"session {request.session}")
        return self.activity.start(
            "served",
            request.capability,
            # The parent is the requester's task (it only hangs under it if that
            # runs here too).  This runs in whatever context the stream handler
            # inherited, which says nothing about this task: no ambient parent.
            parent=request.parent.hex() if request.parent else None,
            ambient=False,
            peer=request.requester,
            label=", ".join(notes),
            id=request.id.hex(),
        )

    def record_end(self, entry: Entry | None, *, ok: bool, failure: BaseException | None) -> None:
        if entry is None or self.activity is None:
            return
        if ok:
            self.activity.finish(entry, OK)
        elif failure is not None:
            self.activity.fail(entry, failure)  # cancelled, or failed with its message
        else:
            self.activity.finish(entry, FAILED, error="ended without a result")

    def refresh_capabilities(self) -> None:
        """Re-read what the backends serve (after a backend added or lost models)."""
        seen: dict[str, Backend] = {}
        for backend in self.backends:
            for cap in backend.capabilities():
                seen.setdefault(cap, backend)
        self._capabilities = tuple(seen)
        self._backend_by_cap = seen

    def models(self) -> list[ModelInfo]:
        """The backends' models, with the speed measured here for each."""
        models = []
        for backend in self.backends:
            for model in backend.models():
                speed = self.speeds.get(model.digest or model.name)
                if speed is not None:
                    model = replace(
                        model, ttft_ms=speed.ttft_ms(), tokens_per_s=speed.tokens_per_s()
                    )
                models.append(model)
        return models

    def perf(self) -> dict[str, float]:
        """The node's measured figures for its record: task p50, time to first
        token and decode speed (each only once measured)."""
        figures = self.speeds.summary()
        p50 = round(self.p50_ms(), 3)
        if p50:
            figures["p50_ms"] = p50
        return figures

    async def measured(
        self, backend: Backend, request: TaskRequest
    ) -> AsyncGenerator[Chunk | Completion, None]:
        """``backend.execute(request)``, timing first token and decode speed."""
        started = trio.current_time()
        first: float | None = None
        async with aclosing(backend.execute(request)) as items:
            async for item in items:
                now = trio.current_time()
                if isinstance(item, Chunk) and first is None:
                    first = now - started
                if isinstance(item, Completion):
                    tokens = item.usage.get("completion_tokens", 0)
                    key = item.model_digest or item.model
                    if key and tokens:
                        self.speeds.observe(
                            key, ttft=first, tokens=tokens, started=started, ended=now
                        )
                yield item

    def with_session_context(
        self, request: TaskRequest
    ) -> tuple[TaskRequest, list[Mapping[str, Any]] | None]:
        """``request`` with a follow-up's kept history put in front of its new
        messages, and the context the model sees (``None`` outside sessions)."""
        if not isinstance(request.input, Mapping) or chat_messages(request.input) is None:
            return request, None
        if not request.session:
            if request.input.get(FOLLOW_UP):
                raise SkillInputError("follow_up needs a session")
            return request, None
        context = self.sessions.context(request.requester, request.session, request.input)
        body = {k: v for k, v in request.input.items() if k != FOLLOW_UP}
        body["messages"] = context
        return replace(request, input=body), context

    async def warm_up(self, *, prompt: str = "Hello", max_tokens: int = 8) -> int:
        """Run a short generation on every model that generates, to measure it
        before real traffic does; returns how many answered."""
        answered = 0
        for backend in self.backends:
            if "llm.generate" not in backend.capabilities():
                continue
            for model in backend.models():
                request = TaskRequest(
                    id=os.urandom(16),
                    capability="llm.generate",
                    requested="llm.generate",
                    input={"prompt": prompt},
                    params={"max_tokens": max_tokens},
                    model={"name": model.name},
                    stream=True,
                    deadline=self._clock() + 120.0,
                )
                try:
                    with trio.fail_after(120):
                        async with aclosing(self.measured(backend, request)) as items:
                            async for _ in items:
                                pass
                except ModelNotFoundError:
                    continue  # an embedding-only model
                except (BackendError, trio.TooSlowError) as exc:
                    log.warning("warm-up of %s failed: %s", model.name, exc)
                    continue
                answered += 1
                speed = self.speeds.get(model.digest or model.name) or ModelSpeed()
                log.info(
                    "warm-up: %s answered; first token %.1f ms, %.1f tokens/s",
                    model.name,
                    speed.ttft_ms(),
                    speed.tokens_per_s(),
                )
        return answered

    def p50_ms(self) -> float:
        """Median time of recent completed tasks, in ms (0 before the first)."""
        return statistics.median(self.durations) * 1000 if self.durations else 0.0

    @property
    def load(self) -> float:
        return min(1.0, self.in_flight / self.limits.max_concurrency)

    def _backend_for(self, capability: str) -> Backend | None:
        return self._backend_by_cap.get(capability)

    def _reject(self, code: str, msg: str, retry_after_ms: int | None = None) -> TaskRejected:
        self.rejections[code] += 1
        return TaskRejected(code=code, msg=msg, retry_after_ms=retry_after_ms)

    def admit(
        self, offer: TaskOffer, peer: bytes, size_hint: int | None = None
    ) -> _Admission | TaskRejected:
        """Run ``offer`` (returning its slot) or say why not.  ``size_hint`` is an
        upper bound of the encoded input's size (the task frame's), if known."""
        wait = self._buckets.try_take(peer, self._clock())
        if wait:
            return self._reject(
                "overloaded",
                f"over {self._buckets.rate:g} tasks/s from one requester",
                retry_after_ms=max(1, int(wait * 1000)),
            )
        offered = self._capabilities
        capability = best_match(offer.cap, offered)
        if capability is None:
            listing = ", ".join(offered) or "none"
            return self._reject(
                "unsupported", f"no capability {offer.cap!r} here (offered: {listing})"
            )
        backend = self._backend_for(capability)
        assert backend is not None
        if offer.model and not any(model_meets(m, offer.model) for m in backend.models()):
            return self._reject("unsupported", f"no model here matches {dict(offer.model)}")
        if offer.depth > self.limits.max_depth:
            return self._reject(
                "depth_exceeded",
                f"task was delegated {offer.depth} times; the limit is {self.limits.max_depth}",
            )
        size = size_hint
        if size is None or size > self.limits.max_input_bytes:
            # The frame bounds the input; only encode the input when that bound
            # does not settle it.
            try:
                size = len(pack_value(offer.input))
            except LocalProtocolError as exc:
                return self._reject("bad_request", str(exc))
        if size > self.limits.max_input_bytes:
            return self._reject(
                "too_large", f"input of {size} bytes exceeds {self.limits.max_input_bytes}"
            )
        spent = [
            k for k, v in (offer.budget or {}).items()
            if k in BUDGET_KEYS and isinstance(v, int | float) and v <= 0
        ]  # fmt: skip
        if spent:
            return self._reject("too_large", f"the task's {' and '.join(spent)} budget is used up")
        if self.in_flight >= self.limits.max_concurrency:
            return self._reject("overloaded", "all task slots are busy", retry_after_ms=100)
        if self._per_peer[peer] >= self.limits.max_tasks_per_peer:
            return self._reject(
                "overloaded",
                f"at most {self.limits.max_tasks_per_peer} tasks per requester at once",
                retry_after_ms=100,
            )
        self.in_flight += 1
        self._per_peer[peer] += 1
        params = offer.params
        if offer.budget and capability.startswith("llm."):
            params = capped_params(params, offer.budget)  # a model stops within budget
        request = TaskRequest(
            id=offer.id,
            capability=capability,
            requested=offer.cap,
            input=offer.input,
            params=params,
            parent=offer.parent,
            budget=offer.budget,
            model=offer.model,
            session=offer.session,
            deadline=offer.deadline / 1000.0,
            stream=offer.stream,
            depth=offer.depth,
            requester=peer_id_to_text(peer),
        )
        if self.delegator is not None:
            request = replace(request, delegate=self.delegator(request))
        return _Admission(self, backend, request, peer)

    def _release(self, peer: bytes) -> None:
        self.in_flight -= 1
        self._per_peer[peer] -= 1
        if self._per_peer[peer] <= 0:
            del self._per_peer[peer]
