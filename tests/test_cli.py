"""The README's three-terminal walkthrough, as real processes on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "llamanet"]


def run(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"llamanet {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited early with {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.1)


class Daemons:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def start(self, name: str, *flags: str) -> Path:
        home = self.base / name
        home.mkdir(parents=True, exist_ok=True)
        # The walkthrough checks which peer serves a task: no random exploration;
        # a test swarm's identities cost nothing.
        (home / "config.toml").write_text("explore = 0.0\npow_difficulty = 8\n")
        log = open(self.base / f"{name}.log", "w")  # noqa: SIM115 - closed in stop_all
        self.procs[name] = subprocess.Popen(
            [*CLI, "node", "--home", str(home), *flags],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        log.close()
        wait_for(home / "api.json", self.procs[name])
        return home

    def stop(self, name: str) -> tuple[int, float]:
        proc = self.procs.pop(name)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        return code, time.monotonic() - started

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    d = Daemons(tmp_path)
    try:
        yield d
    finally:
        d.stop_all()


def poll(fn: object, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + timeout
    while True:
        result = fn()  # type: ignore[operator]
        if result.returncode == 0 or time.monotonic() > deadline:
            return result  # type: ignore[no-any-return]
        time.sleep(0.5)


@pytest.mark.slow
def test_three_terminal_walkthrough(daemons: Daemons, tmp_path: Path) -> None:
    nomdns = ("--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0")
    home_c = daemons.start("c", *nomdns)
    c_status = json.loads(run("--home", str(home_c), "status", "--json").stdout)
    c_addr = c_status["addrs"][0]
    c_id = run("id", "--home", str(home_c)).stdout.strip()
    assert c_addr.endswith(f"/p2p/{c_id}")

    home_a = daemons.start("a", *nomdns, "--skills", "math.eval", "--bootstrap", c_addr)
    home_b = daemons.start("b", *nomdns, "--bootstrap", c_addr)
    a_id = run("id", "--home", str(home_a)).stdout.strip()
    assert a_id.startswith("12D3KooW")
    b = ("--home", str(home_b))

    found = poll(lambda: run(*b, "find", "math.eval", check=False))
    assert found.returncode == 0, found.stderr
    assert a_id in found.stdout
    assert "PEER" in found.stdout.splitlines()[0]
    found_json = json.loads(run(*b, "find", "math.eval", "--json").stdout)
    assert a_id in {row["peer_id"] for row in found_json}

    asked = run(*b, "ask", "math.eval", "2*(3+4)")
    assert asked.stdout.strip() == "14"
    assert f"by {a_id}" in asked.stderr

    streamed = run(*b, "ask", "text.echo", "hi", "--stream")
    assert streamed.stdout.strip() == "hi"
    events = [
        json.loads(line)
        for line in run(
            *b, "ask", "text.echo", "hello there", "--stream", "--json"
        ).stdout.splitlines()
    ]
    assert [e["event"] for e in events][-1] == "result"
    assert "".join(e["data"] for e in events if e["event"] == "chunk") == "hello there"

    status = run(*b, "status")
    assert "dht_peers" in status.stdout
    status_json = json.loads(run(*b, "status", "--json").stdout)
    assert status_json["dht_peers"] >= 1
    assert status_json["tasks_sent"]["math.eval:ok"] == 1

    peers = run(*b, "peers")
    assert a_id in peers.stdout and c_id in peers.stdout
    peers_json = json.loads(run(*b, "peers", "--json").stdout)
    assert {a_id, c_id} <= {p["peer_id"] for p in peers_json}

    missing = run(*b, "ask", "no.such.capability", "x", check=False)
    assert missing.returncode == 1
    assert "no verified peer offers capability 'no.such.capability'" in missing.stderr

    bad = run(*b, "ask", "math.eval", "1/0", check=False)
    assert bad.returncode == 1
    assert "division by zero" in bad.stderr

    assert oct((home_b / "api.json").stat().st_mode & 0o777) == oct(0o600)
    for name in ("a", "b", "c"):
        code, took = daemons.stop(name)
        assert code == 0
        assert took < 5.0
        assert not (tmp_path / name / "api.json").exists()


def test_commands_without_a_daemon(tmp_path: Path) -> None:
    result = run("--home", str(tmp_path / "nobody"), "status", check=False)
    assert result.returncode == 1
    assert "no llamanet daemon is running" in result.stderr
    version = run("--version")
    assert version.stdout.startswith("llamanet ")
    helptext = run("node", "--help").stdout
    for flag in ("--listen", "--bootstrap", "--no-mdns", "--skills", "--config", "--log-level"):
        assert flag in helptext


def test_id_creates_a_private_identity(tmp_path: Path) -> None:
    first = run("id", "--home", str(tmp_path / "x")).stdout.strip()
    assert first == run("--home", str(tmp_path / "x"), "id").stdout.strip()
    assert (tmp_path / "x" / "identity.key").stat().st_mode & 0o077 == 0
    os.chmod(tmp_path / "x" / "identity.key", 0o644)
    refused = run("id", "--home", str(tmp_path / "x"), check=False)
    assert refused.returncode == 1
    assert "accessible by group or others" in refused.stderr


def test_bad_bootstrap_file_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "peers.toml"
    bad.write_text('# comment\n[[peers]]\naddr = "/ip4/127.0.0.1/tcp/4101"\n')
    result = run(
        "node", "--home", str(tmp_path / "n"), "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0",
        "--bootstrap-file", str(bad), check=False, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"{bad}:3" in result.stderr
    assert "lacks the /p2p/<peer id> part" in result.stderr


def test_a_killed_daemon_is_reported_not_hung_on(tmp_path: Path) -> None:
    # A daemon killed with SIGKILL leaves its api.json behind.
    home = tmp_path / "dead"
    home.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (home / "api.json").write_text(
        json.dumps({"url": f"http://127.0.0.1:{port}", "token": "t", "pid": 1, "peer_id": "x"})
    )
    started = time.monotonic()
    result = run("--home", str(home), "status", check=False)
    assert result.returncode == 1
    assert "is not answering" in result.stderr
    assert time.monotonic() - started < 15


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["ask", "llm.chat", "hi"], {"messages": [{"role": "user", "content": "hi"}]}),
        (["ask", "llm.generate", "once upon"], {"prompt": "once upon"}),
        (["ask", "llm.embed", "a text"], {"texts": ["a text"]}),
        (["ask", "text.echo", "hi"], "hi"),
        (["ask", "llm.chat", '{"messages": []}', "--input-json"], {"messages": []}),
    ],
)
def test_plain_text_input_takes_each_model_capabilitys_shape(
    argv: list[str], expected: object
) -> None:
    from llamanet.cli import build_parser
    from llamanet.cli.commands import _parse_input

    assert _parse_input(build_parser().parse_args(argv)) == expected


WORKFLOW = """
name = "numbers"

[[steps]]
id = "product"
capability = "math.eval"
input = "{{input}}"

[[steps]]
id = "words"
capability = "text.stats"
input = "the answer is {{product}}"

[[steps]]
id = "report"
aggregate = "concatenate"
inputs = ["product", "words"]
"""


@pytest.mark.slow
def test_run_a_workflow_with_live_progress(daemons: Daemons, tmp_path: Path) -> None:
    nomdns = ("--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0")
    home_a = daemons.start("a", *nomdns)
    a_addr = json.loads(run("--home", str(home_a), "status", "--json").stdout)["addrs"][0]
    home_b = daemons.start("b", *nomdns, "--bootstrap", a_addr)
    b = ("--home", str(home_b))
    assert poll(lambda: run(*b, "find", "text.stats", check=False)).returncode == 0

    flow = tmp_path / "flow.toml"
    flow.write_text(WORKFLOW)
    done = run(*b, "run", str(flow), "--input", "6*7")
    product, words = json.loads(done.stdout)
    assert product == 42 and words["words"] == 4  # "the answer is 42"
    assert done.stdout.count("\n") == 1
    progress = done.stderr
    for step in ("product", "words", "report"):
        assert f"  {step}" in progress
    assert progress.index("product") < progress.index("words") < progress.index("report")
    assert "STEP" in progress and "RAN ON" in progress and "workflow done" in progress

    events = [json.loads(line) for line in run(*b, "run", str(flow), "--input", "1+1",
                                                "--json").stdout.splitlines()]  # fmt: skip
    assert [e["state"] for e in events if e["event"] == "step"].count("done") == 3
    assert events[-1]["event"] == "done" and events[-1]["output"][0] == 2

    broken = tmp_path / "broken.toml"
    broken.write_text(WORKFLOW.replace("{{product}}", "{{nothing}}"))
    failed = run(*b, "run", str(broken), "--input", "1", check=False)
    assert failed.returncode != 0
    assert "refers to unknown step 'nothing'" in failed.stderr
    missing = tmp_path / "missing.toml"
    missing.write_text(WORKFLOW.replace("text.stats", "vision.ocr"))
    failed = run(*b, "run", str(missing), "--input", "1", check=False)
    assert "no peer in the swarm offers 'vision.ocr'" in failed.stderr


def test_a_daemon_logs_one_json_object_per_line(daemons: Daemons, tmp_path: Path) -> None:
    daemons.start("json", "--no-mdns", "--log-format", "json", "--log-level", "debug")
    code, _ = daemons.stop("json")
    assert code == 0
    lines = [x for x in (tmp_path / "json.log").read_text().splitlines() if x.startswith("{")]
    assert lines
    entries = [json.loads(x) for x in lines]
    assert all({"ts", "level", "logger", "message"} <= set(e) for e in entries)
    assert any(e["logger"].startswith("llamanet") for e in entries)
