"""The sans-I/O protocol core: messages, framing, records, receipts, task state.

Nothing in this package performs I/O, reads a clock or imports trio or libp2p;
time is passed in as ``now`` (unix seconds).
"""

from llamanet.protocol.capabilities import (
    best_match,
    capability_matches,
    capability_prefixes,
    provider_key,
    provider_key_string,
    validate_capability,
)
from llamanet.protocol.codec import (
    NEED_DATA,
    FrameDecoder,
    decode_message,
    encode_frame,
    encode_message,
)
from llamanet.protocol.config import RecordPolicy, SessionConfig
from llamanet.protocol.messages import (
    ErrorMessage,
    Message,
    Receipt,
    RecordRequest,
    RecordResponse,
    TaskAccepted,
    TaskCancel,
    TaskChunk,
    TaskOffer,
    TaskRejected,
    TaskResult,
)
from llamanet.protocol.peer_ids import Signer, peer_id_from_text, peer_id_to_text
from llamanet.protocol.receipts import sign_receipt, verify_receipt
from llamanet.protocol.records import (
    CapabilityRecord,
    ModelInfo,
    SignedRecord,
    check_newer,
    dht_key_for,
    open_record,
    seal_record,
)
from llamanet.protocol.session import TaskSession
from llamanet.protocol.task_state import Role, TaskState

__all__ = [
    "NEED_DATA",
    "CapabilityRecord",
    "ErrorMessage",
    "FrameDecoder",
    "Message",
    "ModelInfo",
    "Receipt",
    "RecordPolicy",
    "RecordRequest",
    "RecordResponse",
    "Role",
    "SessionConfig",
    "SignedRecord",
    "Signer",
    "TaskAccepted",
    "TaskCancel",
    "TaskChunk",
    "TaskOffer",
    "TaskRejected",
    "TaskResult",
    "TaskSession",
    "TaskState",
    "best_match",
    "capability_matches",
    "capability_prefixes",
    "check_newer",
    "decode_message",
    "dht_key_for",
    "encode_frame",
    "encode_message",
    "open_record",
    "peer_id_from_text",
    "peer_id_to_text",
    "provider_key",
    "provider_key_string",
    "seal_record",
    "sign_receipt",
    "validate_capability",
    "verify_receipt",
]
