"""``llamanet mcp``: the swarm's capabilities as MCP tools, so any MCP client can
delegate work to the swarm.

The MCP server is a client of a running node's local API (found through
``api.json`` in the node's home, like every other CLI command), so it works
against any ``llamanet node`` and holds no network state of its own.  It speaks
MCP with the official SDK's low-level server, run under trio through anyio, over
stdio (the MCP client spawns ``llamanet mcp``) or over streamable HTTP
(``llamanet mcp --transport http``, loopback only unless ``--remote``).

Tools::

    <capability>  one per capability a verified peer offers, named with "-" for "."
                  (math.eval -> math-eval): {input, params?, verify?, compare?, timeout?, peer?}
    ask           any capability by name: {capability, input, params?, ...}
    find          verified peers offering a capability: {capability, limit?, timeout?}
    solve         a goal, turned into a workflow by a planner peer and run: {goal, timeout?}
    status        the node's status

A result's text is the task's output (JSON unless it is a string); its structured
content adds who computed it.  An error the node reports (no peer offers the
capability, the peer failed, bad arguments, the node is not running) is a tool
result with ``isError`` and the node's message, never a protocol failure.

The tool list is computed from the node's verified records on every
``tools/list``.  A watcher compares it every ``refresh_interval`` seconds and, when
it changed, tells the clients that listed tools: ``notifications/tools/list_changed``
on handshake-era connections, a ``subscriptions/listen`` event on 2026-07-28 ones.

Over HTTP the endpoint is ``/mcp`` and every request needs
``Authorization: Bearer <token>``.  The token is kept in ``HOME/mcp.token``
(mode 0600, made on first use and kept, so a client's configuration survives
restarts); while serving, ``HOME/mcp.json`` (mode 0600) holds ``url`` and
``token``.  The token is this server's own, not the node's API token: an MCP
client gets the tools, not the node's whole control API.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import stat
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import anyio
import mcp.types as mt
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from mcp.server import InitializationOptions, NotificationOptions, Server
from mcp.server.caching import CacheHint
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.session import ServerSession
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp.types.version import MODERN_PROTOCOL_VERSIONS
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from llamanet.api.connect import Client
from llamanet.api.server import remove_api_file, write_api_file
from llamanet.errors import ConfigError, DaemonError
from llamanet.node.config import is_loopback_host
from llamanet.version import __version__

if TYPE_CHECKING:
    from trio_typing import TaskStatus

from .mcp_catalogue import (
    ASK_TIMEOUT,
    CAPABILITY_SCHEMA,
    GENERAL_SCHEMAS,
    SOLVE_TIMEOUT,
    Offer,
    _ArgumentError,
    _check_arguments,
    _explain,
    _failure,
    _seconds,
    _success,
    answer_result,
    as_text,
    ask_options,
    capability_of,
    capability_tool,
    describe,
    general_tools,
    offers_from,
    shape_input,
)
from .mcp_link import STATUS_TIMEOUT, NodeLink

log = logging.getLogger(__name__)

MCP_PATH: Final = "/mcp"
TOKEN_FILE: Final = "mcp.token"
ENDPOINT_FILE: Final = "mcp.json"
DEFAULT_REFRESH_INTERVAL: Final = 5.0


FIND_TIMEOUT: Final = 10.0
# The node reports its own deadline errors; this is how long we wait beyond a
# task's timeout to hear them, rather than a bare "no answer".
ANSWER_GRACE: Final = 10.0
NOTIFY_TIMEOUT: Final = 5.0
# Handshake-era connections told about tool-list changes (the newest ones kept).
MAX_LISTERS: Final = 256
HTTP_SESSION_IDLE_TIMEOUT: Final = 30 * 60.0


# -- the MCP server ------------------------------------------------------------------------

ToolHandler = Callable[[ServerRequestContext[Any], Mapping[str, Any]], Awaitable[mt.CallToolResult]]


class _SwarmServer(Server[Any]):
    # The streamable HTTP manager initializes handshake-era sessions with the
    # defaults, and those would not advertise tools.listChanged.
    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True),
            experimental_capabilities,
            extensions,
        )


class SwarmTools:
    """The swarm, as MCP tools, through one node's API (see the module docstring)."""

    def __init__(
        self, node: NodeLink, *, refresh_interval: float = DEFAULT_REFRESH_INTERVAL
    ) -> None:
        self.node = node
        self.refresh_interval = refresh_interval
        self._offers: dict[str, Offer] = {}
        self._signature: tuple[tuple[str, str], ...] | None = None
        self._bus = InMemorySubscriptionBus()
        self._listen = ListenHandler(self._bus)
        self._listers: dict[str, ServerSession] = {}
        self._general: dict[str, ToolHandler] = {
            "ask": self._ask,
            "find": self._find,
            "solve": self._solve,
            "status": self._status,
        }

    def build_server(self) -> Server[Any]:
        server = _SwarmServer(
            "llamanet",
            version=__version__,
            title="llamanet swarm",
            instructions=(
                "These tools delegate work to a peer-to-peer swarm of LLM agents and skills "
                f"through the llamanet node {self.node.peer_id}. Each capability tool runs "
                "that capability on a verified peer; `ask` runs any capability by name, "
                "`find` shows who offers one, `solve` turns a goal into a multi-step "
                "workflow run across the swarm. The list changes as peers come and go."
            ),
            # The list follows the swarm, so a client must never reuse an old one.
            cache_hints={"tools/list": CacheHint(ttl_ms=0, scope="private")},
            get_tool_input_schema=self.input_schema,
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_subscriptions_listen=self._listen,
        )
        server.middleware.append(self._note_lister)
        return server

    def input_schema(self, name: str) -> Mapping[str, Any] | None:
        # Lets the SDK check a call's headers without running tools/list per call.
        schema: dict[str, Any] = GENERAL_SCHEMAS.get(name) or CAPABILITY_SCHEMA
        return schema

    # -- listing ----------------------------------------------------------------------------

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: mt.PaginatedRequestParams | None
    ) -> mt.ListToolsResult:
        try:
            offers = await self.refresh()
        except DaemonError as exc:
            # The general tools still work once the node is back (and say why not until then).
            log.warning("listing only the general tools: %s", exc)
            offers = {}
        return mt.ListToolsResult(
            tools=general_tools() + [capability_tool(o) for o in offers.values()]
        )

    async def refresh(self) -> dict[str, Offer]:
        """The offers as the node knows them now; announces a change to clients."""
        peers = await self.node.call("peers", Client.peers, timeout=STATUS_TIMEOUT)
        offers = offers_from(peers, own_peer_id=self.node.peer_id)
        signature = tuple((name, describe(o)) for name, o in offers.items())
        changed = self._signature is not None and signature != self._signature
        self._offers, self._signature = offers, signature
        if changed:
            log.info("the swarm's tools changed: %s", ", ".join(offers) or "(none)")
            await self._announce()
        return offers

    async def watch(self) -> None:
        """Look for changes in the swarm's tools every ``refresh_interval`` seconds."""
        while True:
            await trio.sleep(self.refresh_interval)
            try:
                await self.refresh()
            except DaemonError as exc:
                log.debug("cannot refresh the tool list: %s", exc)

    async def _note_lister(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        # A handshake-era connection hears of changes by a notification on its
        # standalone channel, which only a request's session can reach.
        if ctx.method == "tools/list" and ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            key = _connection_key(ctx)
            self._listers.pop(key, None)
            self._listers[key] = ctx.session
            while len(self._listers) > MAX_LISTERS:
                del self._listers[next(iter(self._listers))]
        return await call_next(ctx)

    async def _announce(self) -> None:
        await self._bus.publish(ToolsListChanged())
        for key, session in list(self._listers.items()):
            with trio.move_on_after(NOTIFY_TIMEOUT) as waited:
                try:
                    await session.send_tool_list_changed()
                    continue
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    log.debug("MCP connection %s is gone", key)
            if waited.cancelled_caught:
                log.info("MCP connection %s does not take notifications; forgetting it", key)
            self._listers.pop(key, None)

    def close(self) -> None:
        """End open ``subscriptions/listen`` streams gracefully."""
        self._listen.close()

    # -- calls ------------------------------------------------------------------------------

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: mt.CallToolRequestParams
    ) -> mt.CallToolResult:
        args = params.arguments or {}
        handler = self._general.get(params.name)
        try:
            if handler is not None:
                _check_arguments(args, GENERAL_SCHEMAS[params.name])
                return await handler(ctx, args)
            offer = self._offers.get(params.name)
            # A tool listed before the swarm changed still names its capability.
            capability = offer.capability if offer else capability_of(params.name)
            if capability is None:
                raise MCPError(
                    mt.INVALID_PARAMS,
                    f"unknown tool {params.name!r}: list the tools again, or use 'ask'",
                )
            _check_arguments(args, CAPABILITY_SCHEMA)
            return await self._run(capability, args)
        except (DaemonError, _ArgumentError) as exc:
            return _failure(_explain(exc))

    async def _run(self, capability: str, args: Mapping[str, Any]) -> mt.CallToolResult:
        task_input = shape_input(capability, args["input"])
        options = ask_options(args)
        answer = await self.node.call(
            f"ask {capability}",
            lambda client: client.ask(capability, task_input, **options),
            timeout=_seconds(args.get("timeout"), ASK_TIMEOUT) + ANSWER_GRACE,
        )
        return answer_result(answer)

    async def _ask(
        self, ctx: ServerRequestContext[Any], args: Mapping[str, Any]
    ) -> mt.CallToolResult:
        capability = args["capability"]
        if not isinstance(capability, str):
            raise _ArgumentError("'capability' must be a capability name, e.g. math.eval")
        return await self._run(capability, args)

    async def _find(
        self, ctx: ServerRequestContext[Any], args: Mapping[str, Any]
    ) -> mt.CallToolResult:
        capability = args["capability"]
        limit = args.get("limit", 20)
        timeout = args.get("timeout", FIND_TIMEOUT)
        found = await self.node.call(
            f"find {capability}",
            lambda client: client.find(capability, limit=limit, timeout=timeout),
            timeout=_seconds(timeout, FIND_TIMEOUT) + ANSWER_GRACE,
        )
        if not found:
            return _success(f"no verified peer offers {capability!r}", {"peers": []})
        return _success(json.dumps(found, indent=1, ensure_ascii=False), {"peers": found})

    async def _status(
        self, ctx: ServerRequestContext[Any], args: Mapping[str, Any]
    ) -> mt.CallToolResult:
        status = await self.node.call("status", Client.status, timeout=STATUS_TIMEOUT)
        return _success(json.dumps(status, indent=1, ensure_ascii=False), status)

    async def _solve(
        self, ctx: ServerRequestContext[Any], args: Mapping[str, Any]
    ) -> mt.CallToolResult:
        goal = args["goal"]
        if not isinstance(goal, str) or not goal.strip():
            raise _ArgumentError("'goal' must be a non-empty string")
        finished = 0

        async def on_step(event: dict[str, Any]) -> None:
            # A no-op unless the client asked for progress.
            nonlocal finished
            if event.get("state") == "done":
                finished += 1
                await ctx.session.report_progress(finished, None, f"step {event.get('step')} done")

        run = await self.node.call(
            "solve",
            lambda client: client.solve(goal, on_step=on_step),
            timeout=_seconds(args.get("timeout"), SOLVE_TIMEOUT),
        )
        plan = [
            {"id": step.get("id"), "capability": step.get("capability") or step.get("aggregate")}
            for step in run.get("plan", {}).get("steps", [])
            if isinstance(step, dict)
        ]
        structured = {
            "output": run.get("output"),
            "plan": plan,
            "steps": run.get("steps", []),
            "elapsed_ms": run.get("elapsed_ms"),
        }
        return _success(as_text(run.get("output")), structured)


def _connection_key(ctx: ServerRequestContext[Any, Any]) -> str:
    request = ctx.request
    headers = getattr(request, "headers", None)
    session_id = headers.get("mcp-session-id") if headers is not None else None
    return f"http:{session_id}" if session_id else "stdio"


# -- transports ------------------------------------------------------------------------------


@dataclass(frozen=True)
class McpOptions:
    transport: Literal["stdio", "http"] = "stdio"
    host: str = "127.0.0.1"
    """Address the HTTP transport listens on."""
    port: int = 0
    """HTTP port (0: any free port; the address is in ``mcp.json``)."""
    remote: bool = False
    """Allow a non-loopback ``host`` (the token is still required)."""
    refresh_interval: float = DEFAULT_REFRESH_INTERVAL
    """Seconds between looks at the swarm for tool-list changes."""

    def __post_init__(self) -> None:
        if self.transport not in ("stdio", "http"):
            raise ConfigError("the MCP transport is stdio or http")
        if not 0 <= self.port <= 65535:
            raise ConfigError("the MCP port must be a TCP port number")
        if not self.refresh_interval > 0:
            raise ConfigError("the refresh interval must be a positive number of seconds")
        if not self.remote and not is_loopback_host(self.host):
            raise ConfigError(
                f"{self.host!r} is not a loopback address: pass --remote to serve MCP on the "
                "network (every request still needs the token)"
            )


def load_or_create_token(home: Path) -> str:
    """The HTTP transport's bearer token, kept in ``home/mcp.token`` (mode 0600)."""
    path = home / TOKEN_FILE
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        home.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
        except FileExistsError:
            return load_or_create_token(home)  # another `llamanet mcp` made it first
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        return token
    if mode & 0o077:
        raise ConfigError(f"{path} is accessible by group or others; chmod 600 it")
    token = path.read_text().strip()
    if len(token) < 16:
        raise ConfigError(f"{path} holds no usable token; delete it to make a new one")
    return token


class RequireBearer:
    """ASGI middleware: refuses any HTTP request without ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = Headers(scope=scope).get("authorization", "").encode()
            if not secrets.compare_digest(given, self._expected):
                refusal = JSONResponse(
                    {
                        "jsonrpc": "2.0",
                        "id": None,
                        "error": {"code": -32001, "message": "missing or wrong bearer token"},
                    },
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _transport_security(host: str) -> TransportSecuritySettings:
    if not is_loopback_host(host):
        # The Host header is whatever name the network knows us by; the token guards.
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    loopback = ("127.0.0.1", "localhost", "[::1]")
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{h}:*" for h in loopback],
        allowed_origins=[f"http://{h}:*" for h in loopback],
    )


async def serve_stdio(tools: SwarmTools) -> None:
    """Serve one MCP client on stdin/stdout until it closes stdin."""
    server = tools.build_server()
    async with stdio_server() as (read, write), trio.open_nursery() as nursery:
        nursery.start_soon(tools.watch)
        # stdout is the protocol channel: a stray print() would be buffered and
        # land on it when the SDK gives the descriptor back at exit.
        with contextlib.redirect_stdout(sys.stderr):
            await server.run(read, write, server.create_initialization_options())
        tools.close()
        nursery.cancel_scope.cancel()


async def serve_http(
    tools: SwarmTools,
    options: McpOptions,
    *,
    task_status: TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve streamable HTTP at ``/mcp`` until cancelled; ``started`` with the URL
    once ``mcp.json`` is written."""
    home = tools.node.home
    token = load_or_create_token(home)
    manager = StreamableHTTPSessionManager(
        app=tools.build_server(),
        security_settings=_transport_security(options.host),
        session_idle_timeout=HTTP_SESSION_IDLE_TIMEOUT,
    )
    app = RequireBearer(
        Starlette(routes=[Route(MCP_PATH, endpoint=StreamableHTTPASGIApp(manager))]), token
    )
    config = HypercornConfig()
    host = f"[{options.host}]" if ":" in options.host else options.host
    config.bind = [f"{host}:{options.port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("llamanet.api.mcp.http")
    config.graceful_timeout = 1.0
    endpoint_file = home / ENDPOINT_FILE
    async with manager.run(), trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, config)
        url = binds[0] + MCP_PATH
        write_api_file(endpoint_file, url, token, tools.node.peer_id)
        try:
            nursery.start_soon(tools.watch)
            task_status.started(url)
            await trio.sleep_forever()
        finally:
            tools.close()
            remove_api_file(endpoint_file)


async def _cancel_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def run_mcp(home: Path, options: McpOptions) -> None:
    """``llamanet mcp``: serve the swarm of the node of ``home`` as MCP tools."""
    # Fails now, with the reason, rather than hand a client a server with no node.
    async with NodeLink.open(home) as node:
        tools = SwarmTools(node, refresh_interval=options.refresh_interval)
        if options.transport == "stdio":
            await serve_stdio(tools)
            return
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_http, tools, options)
            print(
                f"llamanet mcp: streamable HTTP at {url} for node {node.peer_id}; "
                f"bearer token in {home / ENDPOINT_FILE} and {home / TOKEN_FILE}",
                file=sys.stderr,
                flush=True,
            )
            nursery.start_soon(_cancel_on_signal, nursery.cancel_scope)


def main(home: Path, options: McpOptions) -> None:
    """Run ``llamanet mcp`` until the client leaves (stdio) or a signal (HTTP)."""
    if options.transport == "stdio":
        # Nothing here needs unwinding, and a read of stdin blocked in a thread
        # cannot be cancelled: let SIGINT end the process as SIGTERM does.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    trio.run(run_mcp, home, options)
