"""``/llamanet/caps/1.0.0``: ask a connected peer for its current signed record.

One request, one answer, then the stream closes.  The answer is only bytes here;
the caller verifies it like a record from any other path (and checks it is the
record of the peer it asked).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from typing import Final

import trio

from llamanet.errors import DecodeError, RemoteProtocolError, StreamBrokenError
from llamanet.protocol.codec import FrameDecoder, encode_frame
from llamanet.protocol.config import MAX_RECORD_SIZE
from llamanet.protocol.messages import ErrorMessage, RecordRequest, RecordResponse
from llamanet.protocol.peer_ids import peer_id_to_text
from llamanet.trust.limits import PeerBuckets

from .stream import ByteStream, read_message, request

log = logging.getLogger(__name__)

REQUEST_LIMIT: Final = 256
"""A ``caps_get`` frame is a few bytes; anything longer is refused unread."""
RESPONSE_LIMIT: Final = MAX_RECORD_SIZE + 256
DEFAULT_TIMEOUT: Final = 5.0
DEFAULT_FETCH_RATE: Final = 2.0


class CapsServer:
    """Answers record requests with whatever ``current_record()`` returns, at most
    ``rate`` a second per peer (ten in a burst); beyond that, ``overloaded``."""

    def __init__(
        self,
        current_record: Callable[[], bytes],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        rate: float = DEFAULT_FETCH_RATE,
    ) -> None:
        self._current_record = current_record
        self.timeout = timeout
        self._buckets = PeerBuckets(rate, 10 * rate)
        self.refused = 0
        """Requests answered ``overloaded``."""

    async def serve(self, stream: ByteStream) -> None:
        peer = peer_id_to_text(stream.peer)
        ok = False
        with trio.move_on_after(self.timeout):
            try:
                msg = await read_message(stream, FrameDecoder(REQUEST_LIMIT))
                wait = self._buckets.try_take(stream.peer, trio.current_time())
                if wait:
                    self.refused += 1
                    await _answer_error(
                        stream, "overloaded", f"too many record requests; retry in {wait:.1f} s"
                    )
                elif isinstance(msg, RecordRequest):
                    await stream.write(encode_frame(RecordResponse(record=self._current_record())))
                    ok = True
                else:
                    what = "nothing" if msg is None else repr(msg.wire_type)
                    await _answer_error(stream, "bad_request", f"expected 'caps_get', got {what}")
            except RemoteProtocolError as exc:
                log.info("bad caps request from %s: %s", peer, exc)
                await _answer_error(stream, exc.code, str(exc))
            except StreamBrokenError:
                pass  # the peer went away; nobody is left to answer
        if ok:
            await stream.close()
        else:
            await stream.reset()


async def _answer_error(stream: ByteStream, code: str, msg: str) -> None:
    with suppress(StreamBrokenError):
        await stream.write(encode_frame(ErrorMessage(code=code, msg=msg[:500])))


async def fetch_record_bytes(stream: ByteStream) -> bytes:
    """Ask for the peer's record on a fresh caps stream; returns the sealed bytes
    (unverified).  Raises :class:`RemoteProtocolError` for anything but a record."""
    try:
        reply = await request(stream, RecordRequest(), max_frame_size=RESPONSE_LIMIT)
    finally:
        await stream.close()
    if isinstance(reply, RecordResponse):
        return reply.record
    if isinstance(reply, ErrorMessage):
        raise DecodeError(f"peer refused the record request: {reply.code}: {reply.msg}")
    raise DecodeError(f"unexpected {reply.wire_type!r} in answer to caps_get")
