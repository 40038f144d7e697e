"""Using a running daemon from Python (trio), without the CLI::

    async with llamanet.connect() as client:          # the daemon of $LLAMANET_HOME
        answer = await client.ask("math.eval", "2*(3+4)")
        async for token in client.stream("llm.chat", {"messages": [...]}):
            print(token, end="")
        result = await client.run("review.toml", "the input")

Everything goes through the daemon's local API (``api.json`` holds its address
and token), so the daemon's connections, rankings and sessions are shared by
every program that connects.  To run a node inside the program instead, use
:func:`llamanet.open_node`.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from llamanet.errors import DaemonError, DaemonNotRunningError, RemoteError
from llamanet.node.config import default_home
from llamanet.orchestrator.workflow import load_workflow

StepCallback = Callable[[dict[str, Any]], Awaitable[None]]


class Client:
    """An async client of one daemon; get one from :func:`connect`."""

    def __init__(self, home: Path, http: httpx.AsyncClient) -> None:
        self.home = home
        self._http = http

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise DaemonNotRunningError(
                f"the llamanet daemon for {self.home} is not answering"
            ) from None
        body = _json(response)
        if response.status_code >= 400:
            raise RemoteError((body or {}).get("error", {"message": response.text}))
        return body

    async def _events(
        self, path: str, body: dict[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        try:
            async with self._http.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise RemoteError((_json(response) or {}).get("error", {}))
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("event") == "error":
                        raise RemoteError(event["error"])
                    yield event
        except httpx.ConnectError:
            raise DaemonNotRunningError(
                f"the llamanet daemon for {self.home} is not answering"
            ) from None

    def _not_answering(self) -> str:
        return f"the llamanet daemon for {self.home} is not answering"

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/v1/status")
        return result

    async def peers(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "/v1/peers")
        return result

    async def find(
        self, capability: str, *, limit: int = 20, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        params = {"cap": capability, "limit": limit, "timeout": timeout}
        result: list[dict[str, Any]] = await self._call("GET", "/v1/find", params=params)
        return result

    async def ask(self, capability: str, input: Any, **options: Any) -> dict[str, Any]:
        """Run a task; ``options`` as :meth:`Node.ask` (``params``, ``timeout``,
        ``peer``, ``session``, ``model``, ``max_price``, ``hedge``).  Returns the
        answer: ``output``, ``peer``, ``usage``, ``receipt``, ``elapsed_ms``, ..."""
        body = {"cap": capability, "input": input, **options}
        result: dict[str, Any] = await self._call("POST", "/v1/ask", json=body)
        return result

    async def stream(self, capability: str, input: Any, **options: Any) -> AsyncIterator[Any]:
        """Run a task and yield its streamed chunks (text deltas for model tasks)."""
        body = {"cap": capability, "input": input, "stream": True, **options}
        async with aclosing(self._events("/v1/ask", body)) as events:
            async for event in events:
                if event["event"] == "chunk":
                    yield event["data"]

    async def run(
        self,
        workflow: str | Path | Mapping[str, Any],
        input: Any,
        *,
        on_step: StepCallback | None = None,
    ) -> dict[str, Any]:
        """Run a workflow (a file, or its decoded document); returns ``output``,
        ``steps`` (who ran what, times, tokens, credits) and ``elapsed_ms``."""
        if isinstance(workflow, str | Path):
            workflow = await trio.to_thread.run_sync(_read_workflow, Path(workflow))
        async with aclosing(
            self._events("/v1/run", {"workflow": dict(workflow), "input": input})
        ) as events:
            async for event in events:
                if event["event"] == "step" and on_step is not None:
                    await on_step(event)
                elif event["event"] == "done":
                    return {k: v for k, v in event.items() if k != "event"}
        raise DaemonError("the daemon ended the workflow without a result")

    async def solve(self, goal: str, *, on_step: StepCallback | None = None) -> dict[str, Any]:
        """Have a ``planning.decompose`` peer plan ``goal``, run the plan; returns
        ``plan`` (the workflow), ``output``, ``steps`` and ``elapsed_ms``."""
        plan: dict[str, Any] = {}
        async with aclosing(self._events("/v1/solve", {"goal": goal})) as events:
            async for event in events:
                if event["event"] == "plan":
                    plan = event["workflow"]
                elif event["event"] == "step" and on_step is not None:
                    await on_step(event)
                elif event["event"] == "done":
                    return {"plan": plan, **{k: v for k, v in event.items() if k != "event"}}
        raise DaemonError("the daemon ended without an answer")


@asynccontextmanager
async def connect(
    home: str | Path | None = None, *, timeout: float = 600.0
) -> AsyncIterator[Client]:
    """A :class:`Client` of the daemon whose home is ``home`` (default: the
    ``llamanet node`` default, or ``$LLAMANET_HOME``)."""
    where, url, token = await trio.to_thread.run_sync(_daemon_address, home)
    async with httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx.Timeout(timeout, connect=5.0),
    ) as http:
        yield Client(where, http)


def _daemon_address(home: str | Path | None) -> tuple[Path, str, str]:
    where = Path(home).expanduser() if home is not None else default_home()
    api_file = where / "api.json"
    try:
        info = json.loads(api_file.read_text())
        return where, str(info["url"]), str(info["token"])
    except FileNotFoundError:
        raise DaemonNotRunningError(
            f"no llamanet daemon is running for {where} (no api.json); "
            "start one with: llamanet node"
        ) from None
    except (OSError, ValueError, KeyError) as exc:
        raise DaemonError(f"{api_file} is unreadable: {exc}") from exc


def _read_workflow(path: Path) -> dict[str, Any]:
    load_workflow(path)  # problems reported with the file's name
    text = path.read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    return document


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:  # not JSON: the caller reports the status instead
        return None
