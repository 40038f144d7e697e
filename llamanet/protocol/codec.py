"""Messages <-> bytes: one msgpack map per frame, behind an unsigned-varint length.

Decoding is strict.  A bad varint, a length over the limit (refused as soon as
the prefix is seen, before the body is buffered), bad msgpack, trailing bytes, an
unknown ``"t"`` tag, a missing field, a field of the wrong type, or a value type
msgpack-python would not round-trip (ext types, timestamps) each raise a
:class:`DecodeError` or :class:`FrameTooLargeError`.  Unknown *fields* are
ignored, so a later minor version can add optional fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, Final

import msgpack

from llamanet.errors import DecodeError, FrameTooLargeError, LocalProtocolError
from llamanet.protocol.messages import MESSAGE_TYPES, Message, Receipt, TaskResult
from llamanet.protocol.varint import decode_uvarint, encode_uvarint

DEFAULT_MAX_FRAME_SIZE: Final = 4 * 1024 * 1024
MAX_VALUE_DEPTH: Final = 64


class _NeedData:
    """Sentinel returned by :meth:`FrameDecoder.next_frame` when more bytes are needed."""

    _instance: _NeedData | None = None

    def __new__(cls) -> _NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()

_MSGPACK_ERRORS: Final = (ValueError, TypeError, msgpack.exceptions.UnpackException)
_FIELDS: Final = {
    tag: tuple(dataclasses.fields(cls))  # type: ignore[arg-type]
    for tag, cls in MESSAGE_TYPES.items()
}


def _pack(value: Any) -> bytes:
    try:
        return bytes(msgpack.packb(value, use_bin_type=True, datetime=False))
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"value cannot be encoded as msgpack: {exc}") from exc


def pack_value(value: Any) -> bytes:
    """The canonical msgpack encoding of an application value (used in receipts)."""
    return _pack(value)


def _unpack(body: bytes) -> Any:
    try:
        return msgpack.unpackb(
            body, raw=False, strict_map_key=False, use_list=True, ext_hook=_reject_ext
        )
    except _MSGPACK_ERRORS as exc:
        raise DecodeError(f"invalid msgpack: {type(exc).__name__}: {exc}") from exc


def _reject_ext(code: int, data: bytes) -> Any:
    raise DecodeError(f"msgpack ext type {code} is not allowed")


def check_plain_value(value: Any) -> None:
    """Raise :class:`DecodeError` unless ``value`` is built only from nil, bool, int,
    float, str, bytes, arrays and maps with str/int/bytes keys, at most
    :data:`MAX_VALUE_DEPTH` deep."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if item is None or isinstance(item, bool | int | float | str | bytes):
            continue
        if depth >= MAX_VALUE_DEPTH:
            raise DecodeError(f"value nested deeper than {MAX_VALUE_DEPTH} levels")
        if isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, dict):
            for k, v in item.items():
                if not isinstance(k, str | int | bytes) or isinstance(k, bool):
                    raise DecodeError(f"map key of type {type(k).__name__} is not allowed")
                stack.append((v, depth + 1))
        else:
            raise DecodeError(f"value of type {type(item).__name__} is not allowed")


def _to_wire(msg: Message) -> dict[str, Any]:
    wire: dict[str, Any] = {"t": msg.wire_type}
    for f in _FIELDS[msg.wire_type]:
        value = getattr(msg, f.name)
        if isinstance(value, Receipt):
            value = {"t": value.time_ms, "sig": value.signature}
        elif f.name in ("params", "usage", "model", "budget") and value is not None:
            value = dict(value)
        wire[f.name] = value
    return wire


def encode_message(msg: Message) -> bytes:
    """The msgpack body of ``msg`` (no length prefix)."""
    return _pack(_to_wire(msg))


def frame(body: bytes) -> bytes:
    """Prefix ``body`` with its varint length."""
    return encode_uvarint(len(body)) + body


def encode_frame(msg: Message) -> bytes:
    """The complete frame for ``msg``: varint length + msgpack body."""
    return frame(encode_message(msg))


def decode_message(body: bytes) -> Message:
    """Decode one frame body into a message."""
    obj = _unpack(body)
    if not isinstance(obj, dict):
        raise DecodeError(f"frame body must be a map, got {type(obj).__name__}")
    tag = obj.get("t")
    if not isinstance(tag, str) or tag not in MESSAGE_TYPES:
        raise DecodeError(f"unknown message type {tag!r}")
    cls = MESSAGE_TYPES[tag]
    kwargs: dict[str, Any] = {}
    for f in _FIELDS[tag]:
        if f.name in obj:
            kwargs[f.name] = obj[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise DecodeError(f"{tag!r} message is missing field {f.name!r}")
    for value in kwargs.values():
        check_plain_value(value)
    if cls is TaskResult:
        kwargs["receipt"] = _decode_receipt(kwargs.get("receipt"))
    try:
        return cls(**kwargs)
    except LocalProtocolError as exc:
        raise DecodeError(f"invalid {tag!r} message: {exc}") from exc


def _decode_receipt(value: Any) -> Receipt:
    if not isinstance(value, dict) or set(value) != {"t", "sig"}:
        raise DecodeError("receipt must be a map with exactly 't' and 'sig'")
    try:
        return Receipt(time_ms=value["t"], signature=value["sig"])
    except LocalProtocolError as exc:
        raise DecodeError(f"invalid receipt: {exc}") from exc


class FrameDecoder:
    """Splits a byte stream into frame bodies.

    Feed bytes with :meth:`receive_data`; take bodies with :meth:`next_frame` until
    it returns :data:`NEED_DATA`.  The length limit is checked the moment the
    prefix is complete, so an oversized frame is refused after at most nine bytes
    of it have been buffered.
    """

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if max_frame_size <= 0:
            raise ValueError("max_frame_size must be positive")
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._eof = False

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as a frame."""
        return len(self._buffer)

    @property
    def at_eof(self) -> bool:
        return self._eof

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the stream; ``b""`` means the peer closed its side."""
        if not data:
            self._eof = True
            return
        if self._eof:
            raise LocalProtocolError("data received after end of stream")
        self._buffer += data

    def next_frame(self) -> bytes | _NeedData:
        """The next complete frame body, or :data:`NEED_DATA`.

        Raises :class:`FrameTooLargeError` for an oversized length prefix and
        :class:`DecodeError` for a bad prefix or a stream that ended mid-frame.
        """
        header = decode_uvarint(self._buffer)
        if header is None:
            if self._eof and self._buffer:
                raise DecodeError("stream ended inside a frame length prefix")
            return NEED_DATA
        length, start = header
        if length > self.max_frame_size:
            raise FrameTooLargeError(length, self.max_frame_size)
        end = start + length
        if len(self._buffer) < end:
            if self._eof:
                raise DecodeError(
                    f"stream ended inside a frame ({len(self._buffer) - start} of {length} bytes)"
                )
            return NEED_DATA
        body = bytes(self._buffer[start:end])
        del self._buffer[:end]
        return body

    def frames(self) -> Iterator[bytes]:
        """Every complete frame body now buffered."""
        while True:
            body = self.next_frame()
            if isinstance(body, _NeedData):
                return
            yield body
