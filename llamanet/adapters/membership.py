"""``/llamanet/member/1.0.0`` on streams: a private swarm's members show each other
their membership certificates, one frame each way, then the stream closes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from typing import Final

import trio
from libp2p.custom_types import TProtocol

from llamanet.errors import RemoteProtocolError, StreamBrokenError
from llamanet.protocol.codec import frame
from llamanet.protocol.membership import MAX_CERTIFICATE_SIZE, MEMBER_PROTOCOL

from .stream import ByteStream, read_frame

log = logging.getLogger(__name__)

MEMBER: Final = TProtocol(MEMBER_PROTOCOL)
EXCHANGE_TIMEOUT: Final = 5.0


async def exchange_certificates(stream: ByteStream, ours: bytes) -> bytes:
    """Show ``ours``, return the peer's (unchecked) certificate bytes."""
    try:
        await stream.write(frame(ours))
        return await read_frame(stream, MAX_CERTIFICATE_SIZE, "a membership certificate")
    finally:
        await stream.close()


async def serve_certificate_exchange(
    stream: ByteStream, ours: bytes, admit: Callable[[bytes, bytes], bool]
) -> None:
    """Read the peer's certificate; if ``admit(peer, certificate)`` accepts it,
    answer with ``ours``, else reset (nothing about us goes to a non-member)."""
    with trio.move_on_after(EXCHANGE_TIMEOUT):
        try:
            theirs = await read_frame(stream, MAX_CERTIFICATE_SIZE, "a membership certificate")
            if admit(stream.peer, theirs):
                await stream.write(frame(ours))
                await stream.close()
                return
        except RemoteProtocolError as exc:
            log.info("bad membership exchange: %s", exc)
        except StreamBrokenError:
            pass  # the peer went away mid-exchange: it was not admitted
    with suppress(StreamBrokenError):
        await stream.reset()
