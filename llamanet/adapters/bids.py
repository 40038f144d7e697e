"""``/llamanet/bid/1.0.0`` on streams: answering calls for proposals and awards,
and asking for them.  One exchange per stream, one frame each way."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Final

import trio

from llamanet.errors import DecodeError, RemoteProtocolError, StreamBrokenError
from llamanet.protocol.bids import (
    Award,
    AwardAccepted,
    BidMessage,
    CallForProposals,
    Decline,
    decode_bid_message,
    encode_bid_message,
)
from llamanet.protocol.codec import frame

from .stream import ByteStream, read_frame

log = logging.getLogger(__name__)

FRAME_LIMIT: Final = 8 * 1024
SERVE_TIMEOUT: Final = 10.0

CfpHandler = Callable[[CallForProposals, bytes], Awaitable[BidMessage]]
AwardHandler = Callable[[Award, bytes], Awaitable[BidMessage]]


async def read_bid_message(stream: ByteStream) -> BidMessage:
    return decode_bid_message(await read_frame(stream, FRAME_LIMIT, "a bid message"))


async def exchange(stream: ByteStream, message: BidMessage) -> BidMessage:
    """Send ``message``, read the one answer, close the stream."""
    try:
        await stream.write(frame(encode_bid_message(message)))
        return await read_bid_message(stream)
    finally:
        await stream.close()


class BidServer:
    """Answers calls for proposals and awards with the node's handlers."""

    def __init__(self, on_cfp: CfpHandler, on_award: AwardHandler) -> None:
        self._on_cfp = on_cfp
        self._on_award = on_award

    async def serve(self, stream: ByteStream) -> None:
        with trio.move_on_after(SERVE_TIMEOUT):
            try:
                message = await read_bid_message(stream)
                if isinstance(message, CallForProposals):
                    answer = await self._on_cfp(message, stream.peer)
                elif isinstance(message, Award):
                    answer = await self._on_award(message, stream.peer)
                else:
                    raise DecodeError(f"unexpected {message.wire_type!r} on the bid protocol")
                await stream.write(frame(encode_bid_message(answer)))
                await stream.close()
                return
            except (RemoteProtocolError, DecodeError) as exc:
                log.info("bad bid request: %s", exc)
            except StreamBrokenError:
                pass  # the requester went away; nobody is left to answer
        with suppress(StreamBrokenError):
            await stream.reset()


__all__ = ["AwardAccepted", "BidServer", "Decline", "exchange", "read_bid_message"]
