"""The CLI's side of the local API: find the daemon through ``api.json`` and call it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from llamanet.errors import DaemonError, DaemonNotRunningError


class ApiClient:
    def __init__(self, home: Path, *, timeout: float = 60.0) -> None:
        self.home = home
        api_file = home / "api.json"
        try:
            info = json.loads(api_file.read_text())
            self.url = str(info["url"])
            token = str(info["token"])
        except FileNotFoundError:
            raise DaemonNotRunningError(
                f"no llamanet daemon is running for {home} (no api.json); "
                f"start one with: llamanet node --home {home}"
            ) from None
        except PermissionError:
            raise DaemonError(f"{api_file} is not readable by this user") from None
        except (OSError, ValueError, KeyError) as exc:
            raise DaemonError(f"{api_file} is unreadable: {exc}") from exc
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, connect=5.0),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:  # not JSON: the status decides below
            body = None
        if response.status_code >= 400:
            err = (body or {}).get("error", {}) if isinstance(body, dict) else {}
            message = err.get("message") or response.text or f"HTTP {response.status_code}"
            raise DaemonError(f"{err.get('type', 'Error')}: {message}")
        return body

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return self._check(self._http.request(method, path, **kwargs))
        except httpx.ConnectError:
            raise DaemonNotRunningError(
                f"the llamanet daemon for {self.home} is not answering at {self.url} "
                "(stale api.json?); start it with: llamanet node"
            ) from None
        except httpx.TimeoutException as exc:
            raise DaemonError(f"the daemon did not answer in time: {exc}") from exc

    def get(self, path: str, **params: Any) -> Any:
        return self._request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._request("POST", path, json=body)

    def stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST and yield each NDJSON line as it arrives."""
        try:
            with self._http.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    self._check(response)
                for line in response.iter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.ConnectError:
            raise DaemonNotRunningError(
                f"the llamanet daemon at {self.url} is not answering"
            ) from None
