from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llamanet.errors import DecodeError
from llamanet.protocol.varint import decode_uvarint, encode_uvarint


@given(st.integers(0, 2**63 - 1))
def test_roundtrip(value: int) -> None:
    data = encode_uvarint(value)
    assert decode_uvarint(data) == (value, len(data))
    assert decode_uvarint(data[:-1]) is None


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02")],
)
def test_known_encodings(value: int, encoded: bytes) -> None:
    assert encode_uvarint(value) == encoded


def test_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode_uvarint(-1)
    with pytest.raises(ValueError, match="out of range"):
        encode_uvarint(2**63)


def test_rejects_overlong_and_non_minimal() -> None:
    with pytest.raises(DecodeError, match="longer than 9"):
        decode_uvarint(b"\xff" * 10)
    with pytest.raises(DecodeError, match="non-minimal"):
        decode_uvarint(b"\x80\x00")


def test_offset() -> None:
    assert decode_uvarint(b"xx\xac\x02", 2) == (300, 4)
