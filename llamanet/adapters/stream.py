"""Byte streams as the task and caps protocols see them, and helpers to drive them.

Everything in the adapters that speaks a llamanet protocol is written against
:class:`ByteStream`, so it runs the same over a libp2p stream
(:class:`~llamanet.adapters.libp2p_host.Libp2pByteStream`) and over
``trio.testing.memory_stream_pair()`` (:class:`TrioByteStream`) in tests that need
no sockets and run in virtual time.
"""

from __future__ import annotations

from typing import Final, Protocol

import trio

from llamanet.errors import DecodeError, StreamBrokenError
from llamanet.protocol.codec import FrameDecoder, _NeedData, decode_message, encode_frame
from llamanet.protocol.messages import Message

READ_SIZE: Final = 65536


class ByteStream(Protocol):
    """A bidirectional byte stream to one peer."""

    @property
    def peer(self) -> bytes:
        """The remote peer's ID."""
        ...

    async def read(self, max_bytes: int = READ_SIZE) -> bytes:
        """Some bytes, ``b""`` at end of stream; :class:`StreamBrokenError` on reset."""
        ...

    async def write(self, data: bytes) -> None:
        """Send all of ``data``; :class:`StreamBrokenError` if the stream broke."""
        ...

    async def close(self) -> None:
        """Close gracefully.  Never raises."""
        ...

    async def reset(self) -> None:
        """Abort.  Never raises."""
        ...


class TrioByteStream:
    """A :class:`ByteStream` over any ``trio.abc.Stream`` (tests, in-memory links)."""

    def __init__(self, stream: trio.abc.Stream, peer: bytes) -> None:
        self._stream = stream
        self._peer = peer
        self.closed = False

    @property
    def peer(self) -> bytes:
        return self._peer

    async def read(self, max_bytes: int = READ_SIZE) -> bytes:
        try:
            return await self._stream.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise StreamBrokenError(f"stream broke: {type(exc).__name__}") from exc

    async def write(self, data: bytes) -> None:
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise StreamBrokenError(f"stream broke: {type(exc).__name__}") from exc

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            with trio.CancelScope(shield=True):
                await self._stream.aclose()

    async def reset(self) -> None:
        await self.close()


async def next_body(stream: ByteStream, decoder: FrameDecoder) -> bytes | None:
    """The next frame body on ``stream``, or ``None`` at a clean end of stream
    (between frames).  Raises :class:`DecodeError`/:class:`FrameTooLargeError` for a
    bad or oversized prefix and for a stream that ends inside a frame."""
    while True:
        body = decoder.next_frame()
        if not isinstance(body, _NeedData):
            return body
        if decoder.at_eof:
            return None
        decoder.receive_data(await stream.read())


async def read_message(stream: ByteStream, decoder: FrameDecoder) -> Message | None:
    """The next message on ``stream``, or ``None`` at a clean end of stream.

    For request/response protocols without a state machine (caps).  Raises
    :class:`DecodeError`/:class:`FrameTooLargeError` for bad bytes.
    """
    body = await next_body(stream, decoder)
    return None if body is None else decode_message(body)


async def read_frame(stream: ByteStream, max_frame_size: int, what: str) -> bytes:
    """The body of the one frame a one-shot protocol expects (bids, membership);
    :class:`DecodeError` if the stream ends first, naming ``what`` was expected."""
    body = await next_body(stream, FrameDecoder(max_frame_size))
    if body is None:
        raise DecodeError(f"the stream ended before {what}")
    return body


async def request(stream: ByteStream, msg: Message, *, max_frame_size: int) -> Message:
    """Send ``msg`` and read exactly one reply."""
    await stream.write(encode_frame(msg))
    reply = await read_message(stream, FrameDecoder(max_frame_size))
    if reply is None:
        raise DecodeError("stream closed before the reply")
    return reply
