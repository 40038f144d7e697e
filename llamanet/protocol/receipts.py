"""Task receipts: a worker's signature over what it was asked and what it answered.

The signed bytes are::

    varint(len(domain)) ‖ "llamanet/receipt/v1"
    ‖ sha256(task frame body)            the exact msgpack body the worker received
    ‖ sha256(msgpack(output))            canonical msgpack-python encoding of output
    ‖ varint(len(model_digest)) ‖ model_digest (UTF-8)
    ‖ time (unix ms, 8 bytes big-endian)

so a requester can later prove to anyone what a peer returned for a task.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from llamanet.protocol.codec import pack_value
from llamanet.protocol.messages import Receipt
from llamanet.protocol.peer_ids import Signer, public_key_from_peer_id, verify_signature
from llamanet.protocol.varint import encode_uvarint

RECEIPT_DOMAIN: Final = b"llamanet/receipt/v1"


def receipt_message(task_body: bytes, output: Any, model_digest: str, time_ms: int) -> bytes:
    digest = model_digest.encode()
    return (
        encode_uvarint(len(RECEIPT_DOMAIN))
        + RECEIPT_DOMAIN
        + hashlib.sha256(task_body).digest()
        + hashlib.sha256(pack_value(output)).digest()
        + encode_uvarint(len(digest))
        + digest
        + time_ms.to_bytes(8, "big")
    )


def sign_receipt(
    signer: Signer, task_body: bytes, output: Any, model_digest: str, time_ms: int
) -> Receipt:
    return Receipt(
        time_ms=time_ms,
        signature=signer.sign(receipt_message(task_body, output, model_digest, time_ms)),
    )


def verify_receipt(
    worker: bytes, receipt: Receipt, task_body: bytes, output: Any, model_digest: str
) -> bool:
    """True when ``receipt`` is ``worker``'s (a peer ID) signature over this exchange."""
    return verify_signature(
        public_key_from_peer_id(worker),
        receipt_message(task_body, output, model_digest, receipt.time_ms),
        receipt.signature,
    )
