"""The few protobuf rules the RFC 0002 envelope needs, without a protobuf runtime.

Only varint (wire type 0) and length-delimited (wire type 2) fields occur.
Unknown fields are skipped, as protobuf requires; a field that repeats keeps its
last value, as protobuf does for scalar fields.
"""

from __future__ import annotations

from llamanet.errors import DecodeError
from llamanet.protocol.varint import decode_uvarint, encode_uvarint


def encode_bytes_field(number: int, value: bytes) -> bytes:
    return encode_uvarint(number << 3 | 2) + encode_uvarint(len(value)) + value


def encode_varint_field(number: int, value: int) -> bytes:
    return encode_uvarint(number << 3) + encode_uvarint(value)


def decode_fields(data: bytes) -> dict[int, int | bytes]:
    fields: dict[int, int | bytes] = {}
    pos = 0
    while pos < len(data):
        key = decode_uvarint(data, pos)
        if key is None:
            raise DecodeError("truncated protobuf field key")
        tag, pos = key
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise DecodeError("protobuf field number 0")
        value = decode_uvarint(data, pos)
        if value is None:
            raise DecodeError("truncated protobuf field")
        if wire_type == 0:
            fields[number], pos = value
        elif wire_type == 2:
            length, pos = value
            if pos + length > len(data):
                raise DecodeError("protobuf field runs past the end")
            fields[number] = data[pos : pos + length]
            pos += length
        else:
            raise DecodeError(f"unsupported protobuf wire type {wire_type}")
    return fields
