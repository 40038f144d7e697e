"""The dashboard: a live view of the node in a browser, served by the local API.

    GET /dashboard?token=T        sets the dashboard cookie, redirects to /dashboard
    GET /dashboard                the page (static HTML)
    GET /dashboard/dashboard.js   its script, which polls the JSON routes below
    GET /dashboard/dashboard.css  its style sheet
    GET /v1/tasks[?recent=N]      tasks in flight and recent (the newest N), as trees

The page polls ``/v1/status``, ``/v1/peers`` and ``/v1/tasks`` and renders
them; it puts what peers sent into the page only as text.  Its
Content-Security-Policy allows scripts, styles and requests from this origin
only, and no framing.  How the browser authenticates is in :mod:`.auth`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from importlib.resources import files
from pathlib import Path
from typing import Final
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llamanet.errors import DaemonError
from llamanet.node.node import Node

from .auth import DASHBOARD_PATH, ApiAuth
from .client import ApiClient
from .options import ApiError

__all__ = ["PAGE_CSP", "SecurityHeaders", "dashboard_link", "dashboard_routes"]

Handler = Callable[[Request], Awaitable[Response]]
Guard = Callable[[Handler], Handler]

PAGE_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_ASSETS: Final = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
_NO_STORE: Final = {"Cache-Control": "no-store"}


def _static(name: str) -> bytes:
    return files("llamanet.api").joinpath("static", name).read_bytes()


def dashboard_routes(node: Node, guarded: Guard, auth: ApiAuth) -> list[Route]:
    """The page, its assets and ``/v1/tasks``, each behind ``guarded``."""
    page = _static("dashboard.html")
    assets = {name: (_static(name), media) for name, media in _ASSETS.items()}

    async def dashboard(request: Request) -> Response:
        if auth.is_token_exchange(request):
            # A 303 to the bare path takes the token out of the address bar.
            response: Response = RedirectResponse(DASHBOARD_PATH, status_code=303)
            response.headers.update(_NO_STORE)
            response.set_cookie(
                auth.cookie_name(request),
                auth.session,
                path="/",
                httponly=True,
                samesite="strict",
            )
            return response
        return Response(
            page,
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": PAGE_CSP, **_NO_STORE},
        )

    def asset(name: str) -> Handler:
        body, media = assets[name]

        async def serve(request: Request) -> Response:
            return Response(body, media_type=media, headers=_NO_STORE)

        return serve

    async def tasks(request: Request) -> Response:
        recent = request.query_params.get("recent")
        if recent is not None and not (recent.isdigit() and len(recent) <= 6):
            raise ApiError(400, "recent must be a number of tasks")
        return JSONResponse(node.activity.snapshot(recent=None if recent is None else int(recent)))

    return [
        Route(DASHBOARD_PATH, guarded(dashboard), methods=["GET"]),
        *(
            Route(f"{DASHBOARD_PATH}/{name}", guarded(asset(name)), methods=["GET"])
            for name in _ASSETS
        ),
        Route("/v1/tasks", guarded(tasks), methods=["GET"]),
    ]


def dashboard_link(home: Path) -> str:
    """The link that opens the dashboard of ``home``'s running daemon (it holds the
    token, which the first load trades for the dashboard's cookie)."""
    with ApiClient(home) as api:
        api.get("/v1/status")  # the usual errors if no daemon answers
    try:
        info = json.loads((home / "api.json").read_text())
        url, token = str(info["url"]), str(info["token"])
    except (OSError, ValueError, KeyError) as exc:
        raise DaemonError(f"{home / 'api.json'} is unreadable: {exc}") from exc
    return f"{url}{DASHBOARD_PATH}?{urlencode({'token': token})}"


SECURITY_HEADERS: Final = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
)


class SecurityHeaders:
    """ASGI middleware: headers that keep every answer of the API out of other
    origins' pages (no sniffing JSON as script, no framing, no embedding)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
