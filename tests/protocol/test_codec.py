from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llamanet.errors import DecodeError, FrameTooLargeError, LlamanetError, LocalProtocolError
from llamanet.protocol.codec import (
    NEED_DATA,
    FrameDecoder,
    decode_message,
    encode_frame,
    encode_message,
    frame,
)
from llamanet.protocol.messages import ErrorMessage, Message, TaskAccepted, TaskOffer
from llamanet.protocol.varint import encode_uvarint

from .strategies import messages


@given(messages)
def test_any_message_roundtrips(msg: Message) -> None:
    assert decode_message(encode_message(msg)) == msg


@given(st.lists(messages, min_size=1, max_size=5), st.integers(1, 7))
def test_frames_survive_any_split(msgs: list[Message], step: int) -> None:
    data = b"".join(encode_frame(m) for m in msgs)
    decoder = FrameDecoder()
    out: list[Message] = []
    for i in range(0, len(data), step):
        decoder.receive_data(data[i : i + step])
        out.extend(decode_message(body) for body in decoder.frames())
    assert out == msgs
    assert decoder.buffered == 0


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_typed_errors(data: bytes) -> None:
    decoder = FrameDecoder(max_frame_size=256)
    decoder.receive_data(data)
    decoder.receive_data(b"")
    with contextlib.suppress(LlamanetError):
        for body in decoder.frames():
            decode_message(body)


@given(st.binary(max_size=300))
def test_arbitrary_bodies_raise_only_decode_errors(body: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_message(body)


@given(
    st.dictionaries(
        st.sampled_from(["t", "id", "cap", "input", "deadline", "code", "seq"]),
        st.none() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5) | st.binary(max_size=16),
    )
)
def test_arbitrary_maps_raise_only_decode_errors(obj: dict[str, object]) -> None:
    with contextlib.suppress(DecodeError):
        decode_message(msgpack.packb(obj))


def test_oversized_prefix_is_refused_before_the_body() -> None:
    decoder = FrameDecoder(max_frame_size=1024)
    decoder.receive_data(encode_uvarint(2**60))
    with pytest.raises(FrameTooLargeError) as info:
        decoder.next_frame()
    assert info.value.length == 2**60
    assert info.value.code == "too_large"


def test_limit_is_inclusive() -> None:
    decoder = FrameDecoder(max_frame_size=3)
    decoder.receive_data(frame(b"abc"))
    assert decoder.next_frame() == b"abc"
    decoder.receive_data(frame(b"abcd"))
    with pytest.raises(FrameTooLargeError):
        decoder.next_frame()


def test_need_data_until_complete() -> None:
    data = encode_frame(TaskAccepted())
    decoder = FrameDecoder()
    decoder.receive_data(data[:1])
    assert decoder.next_frame() is NEED_DATA
    decoder.receive_data(data[1:])
    assert decode_message(decoder.next_frame()) == TaskAccepted()  # type: ignore[arg-type]


def test_eof_mid_frame_is_an_error() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(encode_frame(TaskAccepted())[:-1])
    decoder.receive_data(b"")
    with pytest.raises(DecodeError, match="ended inside a frame"):
        decoder.next_frame()


def test_clean_eof_between_frames() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"")
    assert decoder.next_frame() is NEED_DATA
    assert decoder.at_eof


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ([1, 2], "must be a map"),
        ({"t": "nope"}, "unknown message type"),
        ({"x": 1}, "unknown message type"),
        ({"t": "error"}, "missing field 'code'"),
        ({"t": "error", "code": "no_such_code"}, "unknown error code"),
        ({"t": "error", "code": 5}, "unknown error code"),
        ({"t": "chunk", "seq": -1, "data": None}, "seq"),
        ({"t": "chunk", "seq": True, "data": None}, "seq"),
        ({"t": "task", "id": b"short", "cap": "a", "input": 1, "deadline": 1}, "16 bytes"),
        ({"t": "task", "id": b"x" * 16, "cap": "Bad Cap", "input": 1, "deadline": 1}, "capability"),
        (
            {"t": "task", "id": b"x" * 16, "cap": "a", "input": 1, "deadline": 1, "params": None},
            "params",
        ),
        ({"t": "result", "output": 1, "receipt": {"t": 1}}, "receipt"),
        ({"t": "result", "output": 1, "receipt": {"t": 1, "sig": b"x"}}, "64 bytes"),
        ({"t": "chunk", "seq": 0, "data": msgpack.Timestamp(1)}, "Timestamp"),
    ],
)
def test_strict_decoding(obj: object, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode_message(msgpack.packb(obj, datetime=False))


def test_trailing_bytes_are_rejected() -> None:
    with pytest.raises(DecodeError, match="msgpack"):
        decode_message(encode_message(TaskAccepted()) + b"\x00")


def test_ext_types_are_rejected() -> None:
    body = msgpack.packb({"t": "chunk", "seq": 0, "data": msgpack.ExtType(5, b"x")})
    with pytest.raises(DecodeError, match="ext type"):
        decode_message(body)


def test_deep_nesting_is_rejected() -> None:
    value: object = 1
    for _ in range(100):
        value = [value]
    body = msgpack.packb({"t": "chunk", "seq": 0, "data": value})
    with pytest.raises(DecodeError, match="nested deeper"):
        decode_message(body)


def test_unknown_fields_are_ignored() -> None:
    body = msgpack.packb({"t": "error", "code": "internal", "msg": "", "future_field": 1})
    assert decode_message(body) == ErrorMessage(code="internal")


def test_unencodable_values_are_local_errors() -> None:
    offer = TaskOffer(id=b"x" * 16, cap="a", input=2**70, deadline=1)
    with pytest.raises(LocalProtocolError, match="msgpack"):
        encode_message(offer)
