"""The dashboard in a real browser: Debian's Chromium, headless, driven through
chromedriver with selenium, against a small swarm on loopback.

The browser is found at /usr/bin (or on PATH); when it is missing and the tests
run as root with apt-get, Debian's ``chromium`` and ``chromium-driver`` are
installed first.  Otherwise the test is skipped, saying why.  Selenium's calls
block, so they run in a worker thread (``trio.to_thread``) while the swarm and
the API keep running on trio.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest
import trio

from llamanet.backends.base import Chunk, Completion, TaskRequest
from llamanet.backends.builtin import BuiltinBackend
from llamanet.errors import BackendError
from llamanet.protocol.records import ModelInfo

from ..doubles import SlowSkillDouble
from ..nodes import providers_of, start_node
from .test_dashboard import WORKFLOW
from .test_server import serving

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement

CHROMIUM_FLAGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
APT_PACKAGES: Final = ("chromium", "chromium-driver")
APT_INSTALL_TIMEOUT: Final = 900
APT_UPDATE_TIMEOUT: Final = 300
WAIT: Final = 15.0
"""Seconds the page gets to show something (it polls every 1.5 s)."""

# Peer-supplied text with HTML in it: a model name travels in the worker's signed
# record, an error message in its answer.  Both must reach the page as text.
HOSTILE_MODEL: Final = '<img src=x onerror="window.__pwned = 1">'
HOSTILE_ERROR: Final = '<b id="injected">boom</b>'


@dataclass(frozen=True)
class Chromium:
    browser: str
    driver: str


def _installed() -> Chromium | None:
    browser = next(
        (p for p in ("/usr/bin/chromium", shutil.which("chromium")) if p and os.access(p, os.X_OK)),
        None,
    )
    driver = next(
        (
            p
            for p in ("/usr/bin/chromedriver", shutil.which("chromedriver"))
            if p and os.access(p, os.X_OK)
        ),
        None,
    )
    return Chromium(browser, driver) if browser and driver else None


def _apt_get(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apt-get", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        check=False,
    )


def _install_chromium() -> str | None:
    """Install Debian's packages; ``None`` on success, else why not."""
    install = ("install", "-y", "--no-install-recommends", *APT_PACKAGES)
    try:
        done = _apt_get(*install, timeout=APT_INSTALL_TIMEOUT)
        if done.returncode != 0:
            # Most often a stale or empty package list: refresh it once.
            _apt_get("update", timeout=APT_UPDATE_TIMEOUT)
            done = _apt_get(*install, timeout=APT_INSTALL_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        return f"`apt-get {' '.join(exc.cmd[1:])}` took over {exc.timeout:.0f} s"
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        return f"`apt-get install {' '.join(APT_PACKAGES)}` failed: {tail}"
    return None


@pytest.fixture(scope="session")
def chromium() -> Chromium:
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
    found = _installed()
    if found is not None:
        return found
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(
            "needs Debian's chromium and chromium-driver (apt-get install chromium "
            "chromium-driver); they are missing and this user cannot install them"
        )
    failure = _install_chromium()
    if failure is not None:
        pytest.skip(f"could not install Chromium: {failure}")
    found = _installed()
    if found is None:
        pytest.skip("apt-get installed chromium and chromium-driver, but they are not on PATH")
    return found


def _open_browser(chromium: Chromium, profile: str) -> WebDriver:
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = chromium.browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    service = webdriver.ChromeService(executable_path=chromium.driver)
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    return driver


@asynccontextmanager
async def browser(chromium: Chromium, artifacts: Path) -> AsyncIterator[WebDriver]:
    """A fresh headless Chromium with its own profile, quit and removed at the end
    (a screenshot and the page's HTML are left in ``artifacts`` if the test fails)."""
    profile = tempfile.mkdtemp(prefix="llamanet-chromium-")
    try:
        driver = await trio.to_thread.run_sync(_open_browser, chromium, profile)
        try:
            yield driver
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_keep_evidence, driver, artifacts)
            raise
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(driver.quit)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _keep_evidence(driver: WebDriver, artifacts: Path) -> None:
    from selenium.common.exceptions import WebDriverException

    try:
        driver.get_screenshot_as_file(str(artifacts / "dashboard.png"))
        (artifacts / "dashboard.html").write_text(driver.page_source)
    except WebDriverException:
        pass


class NamedModelDouble:
    """TEST DOUBLE: advertises a model whose name is HTML; ``test.named`` fails
    with an error message that is HTML too."""

    name = "named-model-double"

    def capabilities(self) -> Sequence[str]:
        return ("test.named",)

    def models(self) -> Sequence[ModelInfo]:
        return (ModelInfo(name=HOSTILE_MODEL),)

    async def execute(self, request: TaskRequest) -> AsyncGenerator[Chunk | Completion, None]:
        if request.capability == "test.named":
            raise BackendError(HOSTILE_ERROR)
        yield Completion(output=None)


# --- reading the page (in the selenium thread) -------------------------------------------


def _wait_for(driver: WebDriver, what: str, found: Callable[[WebDriver], Any]) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(found)
    except TimeoutException:
        raise AssertionError(f"the dashboard never showed {what}") from None


def _css(selector: str) -> Callable[[WebDriver], WebElement | None]:
    from selenium.webdriver.common.by import By

    def find(driver: WebDriver) -> WebElement | None:
        elements = driver.find_elements(By.CSS_SELECTOR, selector)
        return elements[0] if elements else None

    return find


def _text(element: WebElement, selector: str) -> str:
    from selenium.webdriver.common.by import By

    return str(element.find_element(By.CSS_SELECTOR, selector).text)


@dataclass(frozen=True)
class Expected:
    link: str
    page: str
    node: str
    worker: str
    reputation: float


def check_first_view(driver: WebDriver, expected: Expected) -> None:
    from selenium.webdriver.common.by import By

    driver.get(expected.link)
    assert driver.current_url == expected.page  # the token left the address bar
    assert "token" not in str(driver.execute_script("return location.href + document.referrer"))

    _wait_for(
        driver,
        "this node's peer ID",
        lambda d: d.find_element(By.ID, "node-peer-id").text == expected.node,
    )
    info = driver.find_element(By.ID, "node-info").text
    assert "math.eval" in info and "/ip4/127.0.0.1/tcp/" in info

    row = _wait_for(driver, "the worker's row", _css(f'#peers tr[data-peer="{expected.worker}"]'))
    assert {"math.eval", "test.slow", "test.named"} <= set(_text(row, ".capabilities").split())
    assert float(_text(row, ".reputation")) == pytest.approx(expected.reputation, abs=0.011)
    assert "alive" in row.text
    assert "seq " in row.text  # its record

    # Peer-supplied HTML is shown as text, never parsed or run.
    assert _text(row, ".models") == HOSTILE_MODEL
    swarm_models = driver.find_element(By.ID, "swarm-models").text
    assert HOSTILE_MODEL in swarm_models
    assert _css('#swarm-capabilities li[data-name="math.eval"]')(driver) is not None

    running = _wait_for(
        driver,
        "the slow task in flight",
        _css('#tasks-in-flight li[data-kind="ask"][data-capability="test.slow"]'),
    )
    assert running.get_attribute("data-state") == "running"
    assert running.find_elements(By.CSS_SELECTOR, f'.peer[data-peer="{expected.worker}"]')

    workflow = _wait_for(
        driver,
        "the finished workflow",
        _css('#tasks-recent li[data-kind="workflow"][data-label="sums"]'),
    )
    assert workflow.get_attribute("data-state") == "ok"
    steps = workflow.find_elements(By.CSS_SELECTOR, 'li[data-kind="step"]')
    assert [(s.get_attribute("data-label"), s.get_attribute("data-state")) for s in steps] == [
        ("a", "ok"),
        ("b", "ok"),
    ]
    for step in steps:  # each folded with the ask and the attempt that ran it
        assert step.find_elements(By.CSS_SELECTOR, f'.peer[data-peer="{expected.worker}"]')

    failed = _wait_for(
        driver,
        "the failed task",
        _css('#tasks-recent li[data-kind="ask"][data-capability="test.named"]'),
    )
    assert failed.get_attribute("data-state") == "failed"
    assert HOSTILE_ERROR in _text(failed, ".error")

    assert driver.find_elements(By.CSS_SELECTOR, "img, #injected") == []
    assert driver.execute_script("return window.__pwned") is None
    assert driver.title == "llamanet dashboard"


def check_it_follows(driver: WebDriver, capability: str) -> None:
    """The page follows without a reload: the slow task has gone from in flight,
    and a new task shows up in the recent ones."""
    from selenium.webdriver.common.by import By

    _wait_for(
        driver,
        "the slow task gone from in flight",
        lambda d: not _css('#tasks-in-flight li[data-capability="test.slow"]')(d),
    )
    _wait_for(
        driver,
        f"the new {capability} task",
        _css(f'#tasks-recent > li[data-kind="ask"][data-capability="{capability}"]'),
    )
    assert driver.find_element(By.ID, "connection").get_attribute("class") == "live"


# --- the test ----------------------------------------------------------------------------


async def test_the_dashboard_shows_the_swarm_live_and_peer_text_as_text(
    tmp_path: Path, chromium: Chromium, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Selenium Manager must not go looking for drivers on the network.
    monkeypatch.setenv("SE_OFFLINE", "true")
    slow = SlowSkillDouble()
    async with (
        start_node(
            tmp_path / "worker", backends=[BuiltinBackend(), slow, NamedModelDouble()]
        ) as worker,
        start_node(tmp_path / "asker", bootstrap=(worker.addrs()[0],)) as asker,
        serving(asker) as api,
        trio.open_nursery() as nursery,
    ):
        await providers_of(asker, "math.eval", 1)
        async with api.client.stream("POST", "/v1/run", json={"workflow": WORKFLOW}) as run:
            events = [json.loads(line) async for line in run.aiter_lines() if line]
        assert events[-1]["event"] == "done", events[-1]
        named = await api.client.post("/v1/ask", json={"cap": "test.named", "input": None})
        assert named.status_code >= 400
        slow_request = trio.CancelScope()

        async def ask_slowly() -> None:
            # Streamed: the API cancels a streamed task when its client goes away.
            body = {"cap": "test.slow", "params": {"seconds": 60}, "timeout": 90, "stream": True}
            with slow_request:
                async with api.client.stream("POST", "/v1/ask", json=body) as response:
                    async for _ in response.aiter_lines():
                        pass

        nursery.start_soon(ask_slowly)
        with trio.fail_after(10):
            await slow.first_chunk_sent.wait()

        peers = (await api.client.get("/v1/peers")).json()
        expected = Expected(
            link=f"{api.url}/dashboard?token={api.token}",
            page=f"{api.url}/dashboard",
            node=asker.peer_id_text,
            worker=worker.peer_id_text,
            reputation=next(p["reputation"] for p in peers if p["peer_id"] == worker.peer_id_text),
        )
        async with browser(chromium, tmp_path) as driver:
            await trio.to_thread.run_sync(check_first_view, driver, expected)
            slow_request.cancel()  # the client goes away, and so does its task
            await api.client.post("/v1/ask", json={"cap": "math.eval", "input": "40+2"})
            await trio.to_thread.run_sync(check_it_follows, driver, "math.eval")
