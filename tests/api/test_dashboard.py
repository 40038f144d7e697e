"""The dashboard's routes on a real node: /v1/tasks, the cookie that a browser trades
the token for, what that cookie may and may not do, and the page's headers.
(The page itself, in a real browser: test_dashboard_browser.py.)"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from llamanet.api.auth import COOKIE_PATHS, COOKIE_PREFIX
from llamanet.api.dashboard import dashboard_link
from llamanet.backends.base import Backend
from llamanet.backends.builtin import BuiltinBackend
from llamanet.errors import DaemonNotRunningError
from llamanet.node.node import Node

from ..doubles import PlannerDouble, RelaySkillDouble, SlowSkillDouble
from ..nodes import eventually, providers_of, start_node
from .test_server import Api, routes, serving

WORKFLOW = {
    "name": "sums",
    "steps": [
        {"id": "a", "capability": "math.eval", "input": "2*3"},
        {"id": "b", "capability": "math.eval", "input": "{{a}}+1"},
    ],
    "output": "b",
}


@dataclass(frozen=True)
class Browser:
    """What a browser holding the dashboard's cookie sends (no token)."""

    api: Api
    anonymous: httpx.AsyncClient
    cookie: str
    """``name=value``, as a Cookie header."""
    host: str

    async def get(self, path: str, **headers: str) -> httpx.Response:
        return await self.anonymous.get(path, headers={"Cookie": self.cookie, **headers})


@asynccontextmanager
async def browser_of(node: Node) -> AsyncIterator[Browser]:
    async with serving(node) as api, httpx.AsyncClient(base_url=api.url, timeout=30) as anonymous:
        response = await anonymous.get("/dashboard", params={"token": api.token})
        assert response.status_code == 303
        anonymous.cookies.clear()  # each request says which cookie it sends
        cookie = response.headers["set-cookie"].split(";")[0]
        yield Browser(api, anonymous, cookie, urlsplit(api.url).netloc)


def tree(task: dict[str, Any]) -> Any:
    """(kind, capability or label, state, children) of a /v1/tasks tree."""
    name = task["label"] if task["kind"] in ("workflow", "step") else task["capability"]
    return (task["kind"], name, task["state"], [tree(c) for c in task["children"]])


# --- /v1/tasks ---------------------------------------------------------------------------


@asynccontextmanager
async def worker_and_asker(
    tmp_path: Path, *more: Backend
) -> AsyncIterator[tuple[Node, Node, Api, SlowSkillDouble]]:
    """A worker serving the built-in skills, ``test.slow`` and ``more``; a node
    asking it, through its API."""
    slow = SlowSkillDouble()
    async with (
        start_node(tmp_path / "worker", backends=[BuiltinBackend(), slow, *more]) as worker,
        start_node(tmp_path / "asker", bootstrap=(worker.addrs()[0],)) as asker,
        serving(asker) as api,
    ):
        await providers_of(asker, "math.eval", 1)
        yield worker, asker, api, slow


async def test_tasks_show_an_ask_and_a_workflow_as_trees(tmp_path: Path) -> None:
    async with worker_and_asker(tmp_path) as (worker, asker, api, _):
        assert (await api.client.get("/v1/tasks")).json() == {"in_flight": [], "recent": []}
        answer = await api.client.post("/v1/ask", json={"cap": "math.eval", "input": "6*7"})
        assert answer.status_code == 200, answer.text

        (ask,) = (await api.client.get("/v1/tasks")).json()["recent"]
        assert tree(ask) == ("ask", "math.eval", "ok", [("attempt", "math.eval", "ok", [])])
        assert ask["peer"] == ask["children"][0]["peer"] == worker.peer_id_text
        assert ask["duration_ms"] >= ask["children"][0]["duration_ms"] > 0
        assert ask["started_at"] == pytest.approx(time.time(), abs=30)
        # The worker recorded the same task under the id it was sent with.
        (served,) = worker.activity.recent()
        assert (served.kind, served.state, served.peer) == ("served", "ok", asker.peer_id_text)
        assert served.id == ask["children"][0]["id"]

        async with api.client.stream("POST", "/v1/run", json={"workflow": WORKFLOW}) as run:
            events = [json.loads(line) async for line in run.aiter_lines() if line]
        assert events[-1]["event"] == "done" and events[-1]["output"] == 7

        workflow, _ = (await api.client.get("/v1/tasks")).json()["recent"]
        attempt: Any = ("attempt", "math.eval", "ok", [])
        step_ask = ("ask", "math.eval", "ok", [attempt])
        assert tree(workflow) == (
            "workflow",
            "sums",
            "ok",
            [("step", "a", "ok", [step_ask]), ("step", "b", "ok", [step_ask])],
        )
        assert workflow["children"][0]["capability"] == "math.eval"

        newest = (await api.client.get("/v1/tasks", params={"recent": 1})).json()["recent"]
        assert [t["kind"] for t in newest] == ["workflow"]
        for bad in ("all", "-1", "1e9"):
            response = await api.client.get("/v1/tasks", params={"recent": bad})
            assert response.status_code == 400


async def test_a_failed_ask_is_recent_with_its_error(tmp_path: Path) -> None:
    async with start_node(tmp_path / "n0") as node, serving(node) as api:
        response = await api.client.post(
            "/v1/ask", json={"cap": "image.generate", "input": "a llama", "timeout": 1}
        )
        assert response.status_code == 404
        (ask,) = (await api.client.get("/v1/tasks")).json()["recent"]
        assert (ask["kind"], ask["state"]) == ("ask", "failed")
        assert "image.generate" in ask["error"]


async def test_a_running_task_is_in_flight_then_cancelled(tmp_path: Path) -> None:
    async with worker_and_asker(tmp_path) as (worker, asker, api, slow):
        await providers_of(asker, "test.slow", 1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(asker.ask, "test.slow", None)
            with trio.fail_after(10):
                await slow.first_chunk_sent.wait()
            (ask,) = (await api.client.get("/v1/tasks")).json()["in_flight"]
            assert tree(ask) == (
                "ask",
                "test.slow",
                "running",
                [("attempt", "test.slow", "running", [])],
            )
            assert ask["children"][0]["peer"] == worker.peer_id_text
            (served,) = worker.activity.in_flight()
            assert (served.capability, served.state) == ("test.slow", "running")
            # A cancel reaching the worker in a task's first few milliseconds can
            # be lost in the task transport (the task then runs to its end); what
            # is tested here is what the activity records, so cancel later.
            await trio.sleep(0.3)
            nursery.cancel_scope.cancel()
        # Cancelled here, the task is cancelled on the worker too.
        await eventually(lambda: not asker.activity.in_flight() and not worker.activity.in_flight())
        assert [e.state for e in asker.activity.recent()] == ["cancelled"]
        assert [e.state for e in worker.activity.recent()] == ["cancelled"]


# --- the dashboard's cookie --------------------------------------------------------------


async def test_the_token_in_the_link_is_traded_for_a_cookie(tmp_path: Path) -> None:
    async with (
        start_node(tmp_path / "n0") as node,
        serving(node) as api,
        httpx.AsyncClient(base_url=api.url, timeout=30) as anonymous,
    ):
        response = await anonymous.get("/dashboard", params={"token": api.token})
        anonymous.cookies.clear()  # each request says which cookie it sends
        assert response.status_code == 303
        assert response.headers["location"] == "/dashboard"  # the token leaves the URL
        assert response.headers["cache-control"] == "no-store"
        set_cookie = response.headers["set-cookie"]
        name, _, rest = set_cookie.partition("=")
        value, *attributes = rest.split("; ")
        assert name == f"{COOKIE_PREFIX}{urlsplit(api.url).port}"
        assert api.token not in set_cookie
        assert len(value) >= 32
        assert {a.lower() for a in attributes} == {"httponly", "path=/", "samesite=strict"}

        page = await anonymous.get("/dashboard", headers={"Cookie": f"{name}={value}"})
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"

        wrong = await anonymous.get("/dashboard", params={"token": api.token[:-1] + "x"})
        assert wrong.status_code == 401
        assert "set-cookie" not in wrong.headers
        # The token is traded on the dashboard's own link only.
        elsewhere = await anonymous.get("/v1/status", params={"token": api.token})
        assert elsewhere.status_code == 401


async def test_the_cookie_only_reads_what_the_dashboard_shows(tmp_path: Path) -> None:
    async with (
        start_node(tmp_path / "other") as other,
        start_node(tmp_path / "n0") as node,
        browser_of(node) as browser,
    ):
        for method, path, body in routes(other.addrs()[0]):
            response = await browser.anonymous.request(
                method, path, json=body, headers={"Cookie": browser.cookie}
            )
            route = urlsplit(path).path
            shown = route in COOKIE_PATHS or route.startswith("/dashboard/")
            if method == "GET" and shown:
                assert response.status_code == 200, (method, path)
            else:
                assert response.status_code == 403, (method, path)
                assert response.json()["error"]["type"] == "Forbidden"
        # Even from the page itself, a cookie cannot ask.
        same_origin = {"Origin": f"http://{browser.host}", "Sec-Fetch-Site": "same-origin"}
        ask = await browser.anonymous.post(
            "/v1/ask",
            json={"cap": "text.echo", "input": "hi"},
            headers={"Cookie": browser.cookie, **same_origin},
        )
        assert ask.status_code == 403
        assert "POST needs the API token" in ask.json()["error"]["message"]
        # Nothing was asked or dialled on behalf of the cookie.
        assert node.tasks_sent == {}
        assert node.status().connected_peers == 0


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({}, True),
        ({"Sec-Fetch-Site": "same-origin"}, True),
        ({"Sec-Fetch-Site": "none"}, True),  # typed in the address bar
        ({"Origin": "http://{host}", "Sec-Fetch-Site": "same-origin"}, True),
        ({"Host": "localhost:{port}"}, True),
        ({"Sec-Fetch-Site": "cross-site"}, False),
        # Another port of loopback is the same *site*: SameSite does not stop it.
        ({"Sec-Fetch-Site": "same-site"}, False),
        ({"Origin": "https://evil.example"}, False),
        ({"Origin": "http://127.0.0.1:1"}, False),
        ({"Origin": "null"}, False),
        # DNS rebinding: a name that now points at 127.0.0.1.
        ({"Host": "evil.example:{port}"}, False),
        ({"Host": "evil.example:{port}", "Origin": "http://evil.example:{port}"}, False),
    ],
)
async def test_cookie_requests_from_other_sites_are_refused(
    tmp_path: Path, headers: dict[str, str], allowed: bool
) -> None:
    async with start_node(tmp_path / "n0") as node, browser_of(node) as browser:
        port = str(urlsplit(browser.api.url).port)
        sent = {k: v.format(host=browser.host, port=port) for k, v in headers.items()}
        for path in ("/dashboard", "/v1/status", "/v1/tasks", "/dashboard/dashboard.js"):
            response = await browser.get(path, **sent)
            assert response.status_code == (200 if allowed else 403), (path, sent)


async def test_a_wrong_or_stale_cookie_is_no_cookie(tmp_path: Path) -> None:
    async with start_node(tmp_path / "n0") as node:
        async with browser_of(node) as before:
            stale = before.cookie
        async with browser_of(node) as browser:
            name, _, value = browser.cookie.partition("=")
            other_port = f"{COOKIE_PREFIX}1={value}"
            for cookie in (stale, f"{name}={value[:-1]}x", f"{name}=", other_port):
                response = await browser.anonymous.get("/v1/status", headers={"Cookie": cookie})
                assert response.status_code == 401, cookie
            # A wrong token is not rescued by a good cookie.
            response = await browser.get("/v1/status", Authorization="Bearer nope")
            assert response.status_code == 401


async def test_the_page_allows_no_inline_script_no_framing_and_no_other_origins(
    tmp_path: Path,
) -> None:
    async with start_node(tmp_path / "n0") as node, browser_of(node) as browser:
        page = await browser.get("/dashboard")
        policy = dict(
            d.strip().split(" ", 1) for d in page.headers["content-security-policy"].split(";")
        )
        assert policy["default-src"] == "'none'"
        assert policy["script-src"] == "'self'"
        assert policy["connect-src"] == "'self'"
        assert policy["frame-ancestors"] == "'none'"
        assert policy["form-action"] == "'none'"
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["cache-control"] == "no-store"
        scripts = re.findall(r"<script\b[^>]*>", page.text)
        assert scripts == ['<script src="/dashboard/dashboard.js" defer>']

        script = await browser.get("/dashboard/dashboard.js")
        assert script.headers["content-type"] == "text/javascript; charset=utf-8"
        style = await browser.get("/dashboard/dashboard.css")
        assert style.headers["content-type"] == "text/css; charset=utf-8"
        status = await browser.api.client.get("/v1/status")
        for response in (page, script, style, status):
            assert response.status_code == 200
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["cross-origin-resource-policy"] == "same-origin"
            assert not any(h.startswith("access-control-") for h in response.headers)


def test_the_script_never_parses_text_as_html() -> None:
    # Peers' records are untrusted: everything reaches the page as text nodes.
    script = files("llamanet.api").joinpath("static", "dashboard.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script
    assert "new Function" not in script


# --- llamanet dashboard ------------------------------------------------------------------


async def test_the_link_of_a_running_daemon_opens_the_dashboard(tmp_path: Path) -> None:
    async with start_node(tmp_path / "n0") as node, serving(node) as api:
        link = await trio.to_thread.run_sync(dashboard_link, node.config.home)
        assert link == f"{api.url}/dashboard?token={api.token}"
        async with httpx.AsyncClient(timeout=30) as anonymous:
            response = await anonymous.get(link)
        assert response.status_code == 303
    with pytest.raises(DaemonNotRunningError):
        dashboard_link(node.config.home)


async def test_a_solve_holds_its_planning_and_its_workflow(tmp_path: Path) -> None:
    plan = {**WORKFLOW, "name": "planned"}
    async with worker_and_asker(tmp_path, PlannerDouble(json.dumps(plan))) as (_, _, api, _):
        goal = "add one to two times three"
        async with api.client.stream("POST", "/v1/solve", json={"goal": goal}) as run:
            events = [json.loads(line) async for line in run.aiter_lines() if line]
        assert events[-1]["event"] == "done" and events[-1]["output"] == 7

        (solve,) = (await api.client.get("/v1/tasks")).json()["recent"]
        assert (solve["kind"], solve["label"], solve["state"]) == ("solve", goal, "ok")
        planning, workflow = solve["children"]
        assert (planning["kind"], planning["capability"]) == ("ask", "planning.decompose")
        assert tree(workflow)[:3] == ("workflow", "planned", "ok")
        assert [s["label"] for s in workflow["children"]] == ["a", "b"]


async def test_a_served_task_holds_the_sub_tasks_it_delegated(tmp_path: Path) -> None:
    async with (
        start_node(tmp_path / "a", backends=[RelaySkillDouble()]) as a,
        start_node(tmp_path / "b", backends=[RelaySkillDouble()], bootstrap=(a.addrs()[0],)) as b,
        start_node(tmp_path / "asker", bootstrap=(a.addrs()[0],)) as asker,
        serving(a) as api,
    ):
        await providers_of(a, "test.relay", 1)
        answer = await asker.ask("test.relay", {"hops": 1}, peer=a.peer_id_text)
        assert answer.output == [0, [1]]

        (served,) = (await api.client.get("/v1/tasks")).json()["recent"]
        assert tree(served) == (
            "served",
            "test.relay",
            "ok",
            [("ask", "test.relay", "ok", [("attempt", "test.relay", "ok", [])])],
        )
        assert served["peer"] == asker.peer_id_text
        assert served["children"][0]["peer"] == b.peer_id_text
        # On b, the sub-task names its parent: the task a served.
        (leaf,) = b.activity.recent()
        assert (leaf.kind, leaf.parent) == ("served", served["id"])


async def test_a_verified_ask_holds_its_copies(tmp_path: Path) -> None:
    async with (
        start_node(tmp_path / "w0") as w0,
        start_node(tmp_path / "w1", bootstrap=(w0.addrs()[0],)) as w1,
        start_node(tmp_path / "asker", bootstrap=(w0.addrs()[0],)) as asker,
        serving(asker) as api,
    ):
        await providers_of(asker, "math.eval", 2)
        body = {"cap": "math.eval", "input": "6*7", "verify": 2}
        assert (await api.client.post("/v1/ask", json=body)).json()["output"] == 42

        (verified,) = (await api.client.get("/v1/tasks")).json()["recent"]
        assert (verified["kind"], verified["label"], verified["state"]) == ("ask", "verify 2", "ok")
        copies = verified["children"]
        assert sorted(c["peer"] for c in copies) == sorted([w0.peer_id_text, w1.peer_id_text])
        for copy in copies:
            assert tree(copy) == ("ask", "math.eval", "ok", [("attempt", "math.eval", "ok", [])])
