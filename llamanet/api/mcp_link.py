"""The MCP server's link to the node's daemon: connected on first use, and
reconnected when the daemon restarts (a new address and token in api.json)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

import httpx
import trio

from llamanet.api.connect import Client, connect
from llamanet.errors import DaemonError, DaemonNotRunningError, RemoteError

if TYPE_CHECKING:
    pass

from .mcp_catalogue import (
    SOLVE_TIMEOUT,
)

log = logging.getLogger(__name__)

STATUS_TIMEOUT: Final = 10.0


_T = TypeVar("_T")


class NodeLink:
    """The running node, through its local API (:mod:`llamanet.api.connect`).

    Every call is bounded by a deadline.  When the node stops answering or refuses
    the token, ``api.json`` is read again and the call tried once more, so a
    long-lived MCP server follows a node that restarted.
    """

    def __init__(self, home: Path) -> None:
        self.home = home
        self.peer_id = ""
        self._client: Client | None = None
        self._connection: contextlib.AsyncExitStack | None = None
        self._reconnecting = trio.Lock()

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, home: Path) -> AsyncIterator[NodeLink]:
        """Connected, or a :class:`DaemonError` saying why not."""
        link = cls(home)
        await link.call("status", _connected, timeout=STATUS_TIMEOUT)
        try:
            yield link
        finally:
            if link._connection is not None:
                await link._connection.aclose()

    async def _connect(self) -> Client:
        stack = contextlib.AsyncExitStack()
        async with stack:
            client = await stack.enter_async_context(connect(self.home, timeout=SOLVE_TIMEOUT))
            status = await client.status()
            previous, self._connection = self._connection, stack.pop_all()
        self._client, self.peer_id = client, str(status.get("peer_id", ""))
        if previous is not None:
            await previous.aclose()
        return client

    async def _reconnect(self, stale: Client | None) -> Client:
        async with self._reconnecting:
            # Calls that failed together reconnect once.
            if self._client is not None and self._client is not stale:
                return self._client
            return await self._connect()

    async def call(
        self, what: str, request: Callable[[Client], Awaitable[_T]], *, timeout: float
    ) -> _T:
        """``request`` on the node, within ``timeout`` seconds; every failure is a
        :class:`DaemonError` whose message says what went wrong."""
        try:
            with trio.fail_after(timeout):
                client = self._client
                if client is not None:
                    try:
                        return await request(client)
                    except DaemonError as exc:
                        if not _worth_reconnecting(exc):
                            raise
                        log.info("connecting to the node again: %s", exc)
                return await request(await self._reconnect(client))
        except trio.TooSlowError:
            raise DaemonError(f"the node did not answer ({what}) within {timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise DaemonError(f"the node's API failed ({what}): {exc!r}") from exc


async def _connected(client: Client) -> Client:
    return client


def _worth_reconnecting(exc: DaemonError) -> bool:
    if isinstance(exc, RemoteError):
        return exc.type == "Unauthorized"
    return isinstance(exc, DaemonNotRunningError)
