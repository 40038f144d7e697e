"""Unsigned LEB128 varints as libp2p uses them (multiformats unsigned-varint).

The multiformats spec caps a varint at 9 bytes (63 bits of value) and forbids
non-minimal encodings; both rules are enforced so that one length has exactly one
encoding.
"""

from __future__ import annotations

from typing import Final

from llamanet.errors import DecodeError

MAX_VARINT_BYTES: Final = 9


def encode_uvarint(value: int) -> bytes:
    """Encode a non-negative integer below 2**63."""
    if value < 0 or value >= 1 << 63:
        raise ValueError(f"uvarint out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_uvarint(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int] | None:
    """Decode a varint starting at ``offset``.

    Returns ``(value, next_offset)``, or ``None`` when ``data`` ends before the
    varint does.  Raises :class:`DecodeError` for an over-long or non-minimal varint.
    """
    value = 0
    shift = 0
    for i in range(MAX_VARINT_BYTES):
        pos = offset + i
        if pos >= len(data):
            return None
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise DecodeError("non-minimal varint encoding")
            return value, pos + 1
        shift += 7
    raise DecodeError(f"varint longer than {MAX_VARINT_BYTES} bytes")
