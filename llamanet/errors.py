"""Every exception llamanet raises on purpose.

::

    LlamanetError
    ├── ProtocolError                 (abstract)
    │   ├── LocalProtocolError        we tried to send something the protocol forbids
    │   │   └── MessageTooLargeError  our message would exceed the frame limit
    │   └── RemoteProtocolError       a peer sent something the protocol forbids
    │       ├── FrameTooLargeError    length prefix over the limit (checked before reading)
    │       ├── DecodeError           bytes that are not a valid message
    │       ├── InvalidReceiptError   a result whose receipt does not verify
    │       └── KadRequestRefused     a DHT request the server will not answer
    ├── RecordError                   a signed record was refused
    │   ├── MalformedRecordError
    │   ├── RecordTooLargeError
    │   ├── InvalidSignatureError
    │   ├── PeerMismatchError
    │   ├── ExpiredRecordError
    │   ├── FutureRecordError
    │   ├── CrowdedAddressError       too many identities already hold records at one address
    │   ├── StaleRecordError
    │   ├── InsufficientWorkError
    │   └── UntrustedIssuerError
    ├── MembershipError               a private swarm's membership certificate was refused
    ├── IdentityError                 the identity key file is missing, unreadable or exposed
    ├── ConfigError                   a configuration or bootstrap file is invalid
    │   └── ModelFileError            a model file is missing, unreadable or not GGUF
    ├── TransportError                (original libp2p/trio error in ``__cause__``)
    │   ├── PeerUnreachableError
    │   ├── StreamBrokenError
    │   └── RequestTimeoutError
    ├── TaskError                     the worker answered ``reject`` or ``error``
    │   ├── TaskRejectedError
    │   └── TaskFailedError
    ├── VerificationError             no answer reached the quorum a verified task asked for
    ├── NoCandidatesError             no verified peer offers the capability
    ├── WorkflowError                 a workflow that cannot run (every problem listed)
    ├── WorkflowFailed                a workflow step failed for good
    ├── BackendError                  a model backend or skill failed
    │   ├── BackendUnavailableError
    │   ├── ModelNotFoundError
    │   ├── ContextOverflowError
    │   ├── BackendRequestError
    │   ├── SessionUnknownError
    │   ├── SkillInputError
    │   ├── UnsupportedCapabilityError  a capability this backend does not serve
    │   ├── BudgetExceededError       a sub-task would exceed the task's budget
    │   └── DelegatedTaskError        a sub-task failed (its code carried up)
    ├── DaemonError                   the CLI could not talk to the local daemon
    │   ├── DaemonNotRunningError
    │   └── RemoteError               the daemon answered with an error
    └── NodeClosedError               *we* closed the node; not a peer's fault

Each class says when it is raised.  Code that handles "a peer misbehaved"
catches :class:`RemoteProtocolError` or :class:`RecordError`; code that handles
"the network let us down" catches :class:`TransportError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

# Error codes carried in ``reject`` and ``error`` frames (docs/PROTOCOL.md).
TASK_ERROR_CODES: Final = frozenset(
    {
        "bad_request",
        "unsupported",
        "overloaded",
        "deadline_exceeded",
        "cancelled",
        "backend_error",
        "forbidden",
        "too_large",
        "depth_exceeded",
        "internal",
        "session_unknown",
    }
)


class LlamanetError(Exception):
    """Base class of every error llamanet raises deliberately."""


# --- protocol -------------------------------------------------------------


class ProtocolError(LlamanetError):
    """A violation of the wire protocol.  Never raised directly."""

    def __init__(self, msg: str, *, hint: str = "") -> None:
        if type(self) is ProtocolError:
            raise TypeError("ProtocolError is abstract; raise a subclass")
        super().__init__(msg)
        self.hint = hint


class LocalProtocolError(ProtocolError):
    """Raised when *our* code tries to send a message the task state machine forbids
    (for example a second ``task`` before the first one finished)."""


class MessageTooLargeError(LocalProtocolError):
    """Raised when a message we are about to send is larger than the frame limit
    (for example a backend's output); nothing was sent."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes exceeds the {limit}-byte frame limit")
        self.size = size
        self.limit = limit


class RemoteProtocolError(ProtocolError):
    """Raised at the receive boundary when a peer sent bytes or messages the protocol
    forbids.  ``peer_id`` names the peer when the adapter knows it."""

    #: The error code we answer with before closing the stream, if we can.
    code: str = "bad_request"

    def __init__(self, msg: str, *, hint: str = "", peer_id: str | None = None) -> None:
        super().__init__(msg, hint=hint)
        self.peer_id = peer_id


class FrameTooLargeError(RemoteProtocolError):
    """Raised when a frame's length prefix exceeds the configured limit.  The body is
    never read into memory."""

    code = "too_large"

    def __init__(self, length: int, limit: int, *, peer_id: str | None = None) -> None:
        super().__init__(f"frame of {length} bytes exceeds the {limit}-byte limit", peer_id=peer_id)
        self.length = length
        self.limit = limit


class DecodeError(RemoteProtocolError):
    """Raised when bytes are not a valid message: bad varint, bad msgpack, unknown
    message type, missing field, wrong field type or trailing bytes."""


class InvalidReceiptError(RemoteProtocolError):
    """Raised by a requester when a worker's result carries a receipt that does not
    verify against the worker's key, the task we sent and the output we got."""


class KadRequestRefused(RemoteProtocolError):
    """Raised by the DHT server for an inbound Kademlia request it will not answer
    (bad protobuf, a key too long, a sender record of another peer, a value the
    validator refuses, over the ADD_PROVIDER rate).  The kad-dht spec answers any
    error by resetting the stream, which is what the server then does.  ``reason``
    is a short stable tag for logs and counters."""

    def __init__(self, reason: str, msg: str, *, peer_id: str | None = None) -> None:
        super().__init__(msg, peer_id=peer_id)
        self.reason = reason


# --- records --------------------------------------------------------------


class RecordError(LlamanetError):
    """A signed capability record was refused.  ``reason`` is a short stable tag used
    in logs and metrics."""

    reason: str = "invalid"


class MalformedRecordError(RecordError):
    """Raised when a record's envelope or payload cannot be decoded or lacks a field."""

    reason = "malformed"


class RecordTooLargeError(RecordError):
    """Raised when a sealed record is larger than the record size limit (8 KiB)."""

    reason = "too_large"


class InvalidSignatureError(RecordError):
    """Raised when a signature does not verify (record, receipt or bid)."""

    reason = "bad_signature"


class PeerMismatchError(RecordError):
    """Raised when a record's ``peer`` field, its signing key and the key it was
    published under do not all name the same peer."""

    reason = "peer_mismatch"


class ExpiredRecordError(RecordError):
    """Raised when a record's ``exp`` is in the past, or its lifetime is longer than
    the 24 h maximum."""

    reason = "expired"


class FutureRecordError(RecordError):
    """Raised when a record claims to be issued in the future (beyond clock skew)."""

    reason = "future"


class CrowdedAddressError(RecordError):
    """Raised when a new identity's record names an address that already has as many
    identities in the registry as one address may (cheap sybils share hosts)."""

    reason = "crowded_address"


class StaleRecordError(RecordError):
    """Raised when a record's ``seq`` is not higher than one already held for that peer
    (a replay, or an old copy)."""

    reason = "stale_seq"


class InsufficientWorkError(RecordError):
    """Raised when a record's proof-of-work nonce has fewer leading zero bits than the
    swarm's difficulty requires."""

    reason = "insufficient_pow"


class UntrustedIssuerError(RecordError):
    """Raised when a correctly signed record comes from a peer local policy refuses."""

    reason = "untrusted"


class MembershipError(LlamanetError):
    """A peer's membership certificate for a private swarm was refused.  ``reason``
    is a short stable tag (``wrong_admin``, ``wrong_swarm``, ``wrong_member``,
    ``bad_signature``, ``future``, ``expired``, ``missing``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"membership certificate refused ({reason}): {message}")
        self.reason = reason


# --- local environment ----------------------------------------------------


class IdentityError(LlamanetError):
    """Raised when the identity key file cannot be created or read, is not a valid key,
    or is readable by users other than its owner."""


class ConfigError(LlamanetError):
    """Raised when a configuration file, bootstrap file or command-line value is
    invalid.  The message names the file and, where known, the line."""


class ModelFileError(ConfigError):
    """Raised when a model file is missing, unreadable or not a GGUF file."""


# --- transport ------------------------------------------------------------


class TransportError(LlamanetError):
    """The network failed us.  The libp2p or trio exception is in ``__cause__``."""

    def __init__(self, msg: str, *, peer_id: str | None = None) -> None:
        super().__init__(msg)
        self.peer_id = peer_id


class PeerUnreachableError(TransportError):
    """Raised when we cannot connect to a peer or open a stream to it."""


class StreamBrokenError(TransportError):
    """Raised when an open stream is reset or closed before the exchange finished
    (for example because the worker process died)."""


class RequestTimeoutError(TransportError):
    """Raised when a request's deadline passes before the peer answered."""


# --- tasks ----------------------------------------------------------------


class TaskError(LlamanetError):
    """A worker answered a task with ``reject`` or ``error``.  ``code`` is one of
    :data:`TASK_ERROR_CODES`; ``peer_id`` names the worker."""

    def __init__(
        self,
        code: str,
        msg: str,
        *,
        peer_id: str | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(f"{code}: {msg}" if msg else code)
        self.code = code
        self.msg = msg
        self.peer_id = peer_id
        self.retry_after_ms = retry_after_ms


class TaskRejectedError(TaskError):
    """Raised when a worker refused a task before starting it (``reject``)."""


class TaskFailedError(TaskError):
    """Raised when a worker accepted a task and then ended it with ``error``."""


class VerificationError(LlamanetError):
    """Raised when the peers asked to verify a task did not agree (no answer had a
    majority)."""


class NoCandidatesError(LlamanetError):
    """Raised when no verified peer offers a capability, or every candidate failed.
    ``attempts`` lists what was tried, as ``(peer_id, error)`` pairs."""

    def __init__(
        self, capability: str, msg: str = "", attempts: list[tuple[str, Exception]] | None = None
    ) -> None:
        self.capability = capability
        self.attempts = attempts or []
        text = msg or f"no verified peer offers capability {capability!r}"
        if self.attempts:
            tried = "; ".join(f"{p[:16]}…: {e}" for p, e in self.attempts)
            text = f"{text} (tried {tried})"
        super().__init__(text)


class WorkflowError(LlamanetError):
    """Raised for a workflow that cannot run; ``problems`` lists every reason."""

    def __init__(self, problems: Sequence[str], source: str = "workflow") -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source} has {len(self.problems)} problem(s):\n{lines}")


class WorkflowFailed(LlamanetError):
    """Raised when a step failed for good; ``reports`` holds what finished, by step
    (the orchestrator's ``StepReport``s)."""

    def __init__(self, step: str, reason: str, reports: Mapping[str, Any]) -> None:
        super().__init__(f"step {step!r} failed: {reason}")
        self.step = step
        self.reports = dict(reports)


# --- backends -------------------------------------------------------------


class BackendError(LlamanetError):
    """Raised when a model backend or built-in skill fails to produce an answer.
    ``code`` is the task error code the worker reports for it."""

    code: str = "backend_error"


class BackendUnavailableError(BackendError):
    """Raised when a model server cannot be reached."""


class ModelNotFoundError(BackendError):
    """Raised when no model here can serve the task (name, family, digest or
    context window asked for, or the capability itself).  Reported as ``unsupported``."""

    code = "unsupported"


class ContextOverflowError(BackendError):
    """Raised when the prompt does not fit the model's context window.  Reported as
    ``too_large``."""

    code = "too_large"


class BackendRequestError(BackendError):
    """Raised when the model server refuses the request as malformed (HTTP 400 or
    422).  Reported as ``bad_request``."""

    code = "bad_request"


class SessionUnknownError(BackendError):
    """Raised by a worker that holds no history for the session a follow-up names
    (never seen, expired or evicted).  Reported as ``session_unknown``: the requester
    resends the whole conversation."""

    code = "session_unknown"


class SkillInputError(BackendError):
    """Raised when a skill's input is invalid (for example an arithmetic expression
    that does not parse, or one over the size bounds).  Reported as ``bad_request``."""

    code = "bad_request"


class UnsupportedCapabilityError(BackendError):
    """Raised when a task names a capability this backend does not serve (not a
    built-in skill, or one left out of the skills it was configured with)."""

    code = "unsupported"


class BudgetExceededError(BackendError):
    """Raised when a sub-task would go over what is left of the task's budget."""

    code = "too_large"


class DelegatedTaskError(BackendError):
    """A sub-task failed; carries the sub-task's error code up the tree."""

    def __init__(self, error: TaskError) -> None:
        super().__init__(f"sub-task {error.code}: {error}")
        self.code = error.code


# --- daemon ---------------------------------------------------------------


class DaemonError(LlamanetError):
    """Raised by the CLI when the local daemon's API answered with an error."""


class DaemonNotRunningError(DaemonError):
    """Raised by the CLI when no daemon is running for the chosen home directory."""


class RemoteError(DaemonError):
    """The daemon answered with an error; ``type`` names llamanet's exception
    (``NoCandidatesError``, ``TaskRejectedError``, ``WorkflowError``, ...)."""

    def __init__(self, error: Mapping[str, Any]) -> None:
        self.type = str(error.get("type", "Error"))
        self.code = error.get("code")
        self.problems = list(error.get("problems", ()))
        super().__init__(f"{self.type}: {error.get('message', '')}")


class NodeClosedError(LlamanetError):
    """Raised when an operation is attempted on a node we already closed."""
