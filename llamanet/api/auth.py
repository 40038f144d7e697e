"""Who may use the local API: programs with the token, and the dashboard's browser.

Programs send ``Authorization: Bearer <token>`` (the token is in ``api.json``,
mode 0600).  A browser cannot put a header on a navigation, so the dashboard is
opened once as ``/dashboard?token=<token>`` (``llamanet dashboard`` prints that
link): the answer sets a cookie and redirects to ``/dashboard``, so the token
leaves the address bar at once.  The cookie carries a random session secret of
this server's lifetime, never the token itself; it is ``HttpOnly`` (scripts
cannot read it), ``SameSite=Strict`` (other sites' requests do not carry it) and
named after the API's port (cookies ignore ports, and two nodes on one machine
must not overwrite each other's).

A request that only has the cookie may only *look*, and only from the
dashboard's own page; anything else is refused with 403:

* the method must be GET or HEAD, and the path one the dashboard reads
  (:data:`COOKIE_PATHS`), so the cookie can never ask, run or connect;
* ``Host`` must name this server (a page that rebinds its own name to
  127.0.0.1 — DNS rebinding — does not get the cookie, and is refused anyway);
* ``Sec-Fetch-Site``, when the browser sends it, must be ``same-origin`` or
  ``none`` (typed in the address bar): a page on another port of the same
  loopback address is *same-site*, so SameSite alone would let it through;
* ``Origin``, when sent, must be this server's own.

The API sends no CORS headers, so no other origin can read its answers either.
"""

from __future__ import annotations

import secrets
from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llamanet.node.config import is_loopback_host

__all__ = [
    "COOKIE_PATHS",
    "COOKIE_PREFIX",
    "DASHBOARD_PATH",
    "ApiAuth",
    "forbidden",
    "unauthorized",
]

DASHBOARD_PATH: Final = "/dashboard"
ASSETS_PREFIX: Final = "/dashboard/"
COOKIE_PREFIX: Final = "llamanet_dashboard_"
COOKIE_PATHS: Final = frozenset({DASHBOARD_PATH, "/v1/status", "/v1/peers", "/v1/tasks"})
"""What the dashboard reads (besides its own assets under ``/dashboard/``)."""
_BROWSER_OK_SITES: Final = frozenset({"same-origin", "none"})


def unauthorized() -> Response:
    return JSONResponse(
        {"error": {"type": "Unauthorized", "message": "missing or wrong API token"}},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


def forbidden(message: str) -> Response:
    return JSONResponse({"error": {"type": "Forbidden", "message": message}}, status_code=403)


def _same(given: str, expected: bytes) -> bool:
    return secrets.compare_digest(given.encode(), expected)


class ApiAuth:
    """Checks every request against the token (see the module docstring)."""

    def __init__(self, token: str) -> None:
        self._bearer = f"Bearer {token}".encode()
        self._token = token.encode()
        self.session = secrets.token_urlsafe(32)
        """The dashboard cookie's value: good for this server's lifetime only."""

    def refuse(self, request: Request) -> Response | None:
        """The answer refusing ``request``, or ``None`` if it may go ahead."""
        header = request.headers.get("authorization")
        if header is not None:
            return None if _same(header, self._bearer) else unauthorized()
        if self.is_token_exchange(request):
            given = request.query_params["token"]
            return None if _same(given, self._token) else unauthorized()
        cookie = request.cookies.get(self.cookie_name(request))
        if cookie is None or not _same(cookie, self.session.encode()):
            return unauthorized()
        why = self._cookie_refusal(request)
        return None if why is None else forbidden(why)

    @staticmethod
    def is_token_exchange(request: Request) -> bool:
        """The dashboard's first load, with the token in the query."""
        return (
            request.url.path == DASHBOARD_PATH
            and request.method == "GET"
            and "token" in request.query_params
        )

    @staticmethod
    def cookie_name(request: Request) -> str:
        server = request.scope.get("server")
        return f"{COOKIE_PREFIX}{server[1] if server else 0}"

    def _cookie_refusal(self, request: Request) -> str | None:
        path = request.url.path
        if request.method not in ("GET", "HEAD"):
            return f"{request.method} needs the API token: the dashboard's cookie only reads"
        if path not in COOKIE_PATHS and not path.startswith(ASSETS_PREFIX):
            return f"{path} needs the API token: the dashboard's cookie only reads what it shows"
        host = request.headers.get("host", "").lower()
        if host not in own_hosts(request):
            return f"Host {host!r} is not this API's address"
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in _BROWSER_OK_SITES:
            return f"a {site} request cannot use the dashboard's cookie"
        origin = request.headers.get("origin")
        if origin is not None and origin.lower() != f"http://{host}":
            return f"a request from {origin} cannot use the dashboard's cookie"
        return None


def own_hosts(request: Request) -> frozenset[str]:
    """``Host`` values that name this server: the address it answered on, and on
    loopback the other names of loopback too."""
    server = request.scope.get("server")
    if not server:
        return frozenset()
    address, port = str(server[0]).lower(), int(server[1])
    names = {address}
    if is_loopback_host(address):
        names |= {"localhost", "127.0.0.1", "::1"}
    hosts = {f"[{name}]" if ":" in name else name for name in names}
    with_port = {f"{host}:{port}" for host in hosts}
    return frozenset(with_port | hosts if port == 80 else with_port)
