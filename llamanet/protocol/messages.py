"""The messages of ``/llamanet/task/1.0.0`` and ``/llamanet/caps/1.0.0``.

Every message is a frozen, keyword-only dataclass that checks its own fields when
constructed, so a message that exists is a message that may be sent.  Invalid
fields raise :class:`LocalProtocolError`; the codec turns that into
:class:`DecodeError` when the bad message came off the wire.

The wire name of each class (its ``"t"`` tag) is in :data:`MESSAGE_TYPES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from llamanet.errors import TASK_ERROR_CODES, LocalProtocolError
from llamanet.protocol.capabilities import is_valid_capability

TASK_ID_LENGTH: Final = 16
MAX_SESSION_LENGTH: Final = 128
MAX_MESSAGE_TEXT: Final = 4096
MAX_DEPTH: Final = 64
SIGNATURE_LENGTH: Final = 64
MODEL_CONSTRAINT_KEYS: Final = frozenset({"name", "family", "digest", "min_ctx"})


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise LocalProtocolError(msg)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_str_map(value: object, name: str) -> None:
    _require(isinstance(value, dict), f"{name} must be a map")
    assert isinstance(value, dict)
    _require(all(isinstance(k, str) for k in value), f"{name} keys must be strings")


def _check_task_id(value: object, name: str = "id") -> None:
    _require(
        isinstance(value, bytes) and len(value) == TASK_ID_LENGTH,
        f"{name} must be {TASK_ID_LENGTH} bytes",
    )


def _check_code(value: object) -> None:
    _require(value in TASK_ERROR_CODES, f"unknown error code {value!r}")


def _check_text(value: object, name: str) -> None:
    _require(
        isinstance(value, str) and len(value) <= MAX_MESSAGE_TEXT,
        f"{name} must be a string of at most {MAX_MESSAGE_TEXT} characters",
    )


class Message:
    """Base class of every message; never subclassed further (h11 style)."""

    __slots__ = ()
    wire_type: ClassVar[str]


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskOffer(Message):
    """Requester -> worker: please run ``cap`` on ``input`` before ``deadline``."""

    wire_type: ClassVar[str] = "task"

    id: bytes
    cap: str
    input: Any
    deadline: int
    """Unix milliseconds; the worker gives up at this time."""
    session: str | None = None
    parent: bytes | None = None
    """Id of the task this one is a sub-task of, when a worker delegates."""
    model: Mapping[str, Any] | None = None
    """Model constraints: any of ``name``, ``family``, ``digest``, ``min_ctx``."""
    params: Mapping[str, Any] = field(default_factory=dict)
    depth: int = 0
    """Delegation hops so far."""
    budget: Mapping[str, Any] | None = None
    stream: bool = False

    def __post_init__(self) -> None:
        _check_task_id(self.id)
        _require(is_valid_capability(self.cap), f"invalid capability name {self.cap!r}")
        _require(_is_int(self.deadline) and self.deadline > 0, "deadline must be unix ms > 0")
        _require(
            self.session is None
            or (isinstance(self.session, str) and 0 < len(self.session) <= MAX_SESSION_LENGTH),
            f"session must be a non-empty string of at most {MAX_SESSION_LENGTH} characters",
        )
        if self.parent is not None:
            _check_task_id(self.parent, "parent")
        if self.model is not None:
            _check_str_map(self.model, "model")
            unknown = set(self.model) - MODEL_CONSTRAINT_KEYS
            _require(not unknown, f"unknown model constraints {sorted(unknown)}")
        _check_str_map(self.params, "params")
        _require(
            _is_int(self.depth) and 0 <= self.depth <= MAX_DEPTH,
            f"depth must be an integer in 0..{MAX_DEPTH}",
        )
        if self.budget is not None:
            _check_str_map(self.budget, "budget")
            _require(
                all(_is_number(v) and v >= 0 for v in self.budget.values()),
                "budget values must be non-negative numbers",
            )
        _require(isinstance(self.stream, bool), "stream must be a boolean")


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskAccepted(Message):
    """Worker -> requester: the task is running."""

    wire_type: ClassVar[str] = "accept"


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskRejected(Message):
    """Worker -> requester: the task will not run (nothing was started)."""

    wire_type: ClassVar[str] = "reject"

    code: str
    msg: str = ""
    retry_after_ms: int | None = None

    def __post_init__(self) -> None:
        _check_code(self.code)
        _check_text(self.msg, "msg")
        _require(
            self.retry_after_ms is None
            or (_is_int(self.retry_after_ms) and self.retry_after_ms >= 0),
            "retry_after_ms must be a non-negative integer",
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskChunk(Message):
    """Worker -> requester: a piece of streamed output (text deltas for LLM tasks)."""

    wire_type: ClassVar[str] = "chunk"

    seq: int
    data: Any

    def __post_init__(self) -> None:
        _require(_is_int(self.seq) and self.seq >= 0, "seq must be a non-negative integer")


@dataclass(frozen=True, kw_only=True, slots=True)
class Receipt:
    """A worker's signature binding the task it received to the output it returned.

    Not a message on its own: it travels inside :class:`TaskResult`.
    """

    time_ms: int
    signature: bytes

    def __post_init__(self) -> None:
        _require(_is_int(self.time_ms) and self.time_ms >= 0, "receipt time must be unix ms")
        _require(
            isinstance(self.signature, bytes) and len(self.signature) == SIGNATURE_LENGTH,
            f"receipt signature must be {SIGNATURE_LENGTH} bytes",
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskResult(Message):
    """Worker -> requester: the task finished; ``output`` is the whole output, even
    when it was also streamed, so the receipt can cover it."""

    wire_type: ClassVar[str] = "result"

    output: Any
    receipt: Receipt
    usage: Mapping[str, Any] = field(default_factory=dict)
    model_digest: str = ""

    def __post_init__(self) -> None:
        _require(isinstance(self.receipt, Receipt), "receipt must be a Receipt")
        _check_str_map(self.usage, "usage")
        _require(all(_is_number(v) for v in self.usage.values()), "usage values must be numbers")
        _require(
            isinstance(self.model_digest, str) and len(self.model_digest) <= 256,
            "model_digest must be a string",
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class ErrorMessage(Message):
    """Worker -> requester: the task failed after it was accepted; on the caps
    protocol, the request could not be served.  Ends the exchange."""

    wire_type: ClassVar[str] = "error"

    code: str
    msg: str = ""

    def __post_init__(self) -> None:
        _check_code(self.code)
        _check_text(self.msg, "msg")


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskCancel(Message):
    """Requester -> worker: stop working on the current task."""

    wire_type: ClassVar[str] = "cancel"

    reason: str = ""

    def __post_init__(self) -> None:
        _check_text(self.reason, "reason")


@dataclass(frozen=True, kw_only=True, slots=True)
class RecordRequest(Message):
    """``/llamanet/caps/1.0.0``: send me your current signed capability record."""

    wire_type: ClassVar[str] = "caps_get"


@dataclass(frozen=True, kw_only=True, slots=True)
class RecordResponse(Message):
    """``/llamanet/caps/1.0.0``: my current record, sealed (see records.py)."""

    wire_type: ClassVar[str] = "caps"

    record: bytes

    def __post_init__(self) -> None:
        _require(isinstance(self.record, bytes), "record must be bytes")


MESSAGE_TYPES: Final[dict[str, type[Message]]] = {
    cls.wire_type: cls
    for cls in (
        TaskOffer,
        TaskAccepted,
        TaskRejected,
        TaskChunk,
        TaskResult,
        ErrorMessage,
        TaskCancel,
        RecordRequest,
        RecordResponse,
    )
}
