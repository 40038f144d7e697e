"""simnet's figures from hand-built run logs with known answers, and the reports
written from them."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from simnet.events import (
    ChurnEvent,
    DiscoveryEvent,
    LookupEvent,
    ReputationSample,
    RunLog,
    TaskEvent,
)
from simnet.metrics import compare, percentile, summarize
from simnet.report import render_comparison, render_terminal, write_report


def _tasks() -> list[TaskEvent]:
    # ok latencies 1, 2, 3, 4; two timeouts; kinds "task" (4) and "decompose" (2)
    return [
        TaskEvent(
            submitted=0.0,
            finished=1.0,
            capability="chat",
            ok=True,
            correct=True,
            group="fast",
            cost=1.0,
            messages=4,
            bytes=100,
            phases={"discovery": 0.1, "execution": 0.5},
        ),
        TaskEvent(
            submitted=1.0,
            finished=3.0,
            capability="chat",
            ok=True,
            correct=False,
            group="fast",
            cost=2.0,
            messages=6,
            bytes=200,
            phases={"discovery": 0.3},
        ),
        TaskEvent(
            submitted=2.0,
            finished=5.0,
            capability="chat",
            ok=True,
            group="slow",
            cost=3.0,
            messages=2,
            bytes=300,
            phases={"execution": 1.5},
        ),
        TaskEvent(submitted=20.0, finished=25.0, capability="chat", ok=False, error="timeout"),
        TaskEvent(
            submitted=21.0,
            finished=22.0,
            capability="plan",
            ok=False,
            error="timeout",
            kind="decompose",
        ),
        TaskEvent(
            submitted=30.0,
            finished=34.0,
            capability="plan",
            ok=True,
            correct=True,
            group="slow",
            cost=4.0,
            kind="decompose",
        ),
    ]


def _reputation() -> list[ReputationSample]:
    # (at, liar score, honest scores): equal, below, above, below, below -> demoted at 40
    table = [
        (10.0, 0.5, [0.5, 0.5]),
        (20.0, 0.3, [0.6]),
        (30.0, 0.6, [0.5]),
        (40.0, 0.2, [0.7, 0.5]),
        (50.0, 0.1, [0.8]),
    ]
    samples = []
    for at, liar, honest in table:
        samples.append(ReputationSample(at=at, observer="o1", peer="L", liar=True, score=liar))
        for i, score in enumerate(honest):
            samples.append(
                ReputationSample(at=at, observer="o1", peer=f"H{i}", liar=False, score=score)
            )
    return samples


def _log(**changes: Any) -> RunLog:
    fields: dict[str, Any] = {
        "scenario": "small",
        "mode": "fast",
        "seed": 7,
        "nodes": 3,
        "duration": 60.0,
        "wall_time": 2.5,
        "peak_rss_mb": 120.0,
        "machine": {"cpus": 4},
        "tasks": _tasks(),
        "discovery": [
            DiscoveryEvent(node="a", capability="x", at=1.0),
            DiscoveryEvent(node="a", capability="x", at=0.5),
            DiscoveryEvent(node="b", capability="x", at=2.0),
            DiscoveryEvent(node="a", capability="y", at=3.0),
            DiscoveryEvent(node="b", capability="y", at=6.0),
        ],
        "expected_discoveries": 4,
        "lookups": [
            LookupEvent(at=1.0, latency=0.1, ok=True, hops=2),
            LookupEvent(at=2.0, latency=0.3, ok=True, hops=4),
            LookupEvent(at=3.0, latency=0.5, ok=False),
        ],
        "reputation": _reputation(),
        "churn": [
            ChurnEvent(at=19.0, node="b", kind="leave"),
            ChurnEvent(at=28.0, node="c", kind="crash"),
            ChurnEvent(at=40.0, node="d", kind="join"),
        ],
        "notes": ["This is a simulation", "<script>alert(1)</script>"],
    }
    fields.update(changes)
    return RunLog(**fields)


def test_percentile_interpolates_linearly() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 95) == pytest.approx(3.85)
    assert percentile(values, 100) == 4.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match="percentile"):
        percentile(values, 101)


def test_run_section_copies_the_log() -> None:
    run = summarize(_log())["run"]
    assert run["scenario"] == "small" and run["mode"] == "fast" and run["seed"] == 7
    assert run["nodes"] == 3 and run["duration"] == 60.0 and run["wall_time"] == 2.5
    assert run["peak_rss_mb"] == 120.0 and run["machine"] == {"cpus": 4}
    assert run["notes"][0] == "This is a simulation"


def test_task_figures() -> None:
    tasks = summarize(_log())["tasks"]
    assert tasks["count"] == 6
    assert tasks["success_rate"] == pytest.approx(4 / 6)
    assert tasks["accuracy"] == pytest.approx(2 / 3)
    assert tasks["latency_p50"] == 2.5
    assert tasks["latency_p95"] == pytest.approx(3.85)
    assert tasks["latency_p99"] == pytest.approx(3.97)
    assert tasks["errors"] == {"timeout": 2}
    assert tasks["cost_total"] == 10.0
    assert tasks["cost_per_task"] == pytest.approx(10 / 6)
    assert tasks["messages_per_task"] == 2.0
    assert tasks["bytes_per_task"] == 100.0
    assert tasks["overhead"]["discovery"] == pytest.approx(0.2)
    assert tasks["overhead"]["execution"] == 1.0
    assert tasks["overhead"]["selection"] is None


def test_task_figures_by_kind_and_group() -> None:
    tasks = summarize(_log())["tasks"]
    plain, decompose = tasks["by_kind"]["task"], tasks["by_kind"]["decompose"]
    assert plain["count"] == 4 and plain["success_rate"] == 0.75 and plain["accuracy"] == 0.5
    assert plain["latency_p50"] == 2.0 and plain["cost_per_task"] == 1.5
    assert decompose["count"] == 2 and decompose["success_rate"] == 0.5
    assert decompose["accuracy"] == 1.0 and decompose["latency_p95"] == 4.0
    assert decompose["cost_per_task"] == 2.0
    assert tasks["by_group"] == {
        "fast": {"count": 2, "accuracy": 0.5},
        "slow": {"count": 2, "accuracy": 1.0},
    }


def test_discovery_convergence() -> None:
    discovery = summarize(_log())["discovery"]
    assert discovery["convergence_s"] == 6.0
    assert discovery["converged_fraction"] == 1.0
    assert discovery["p50"] == 2.5  # first sightings 0.5, 2, 3, 6: the duplicate at 1.0 is ignored
    assert discovery["p95"] == pytest.approx(5.55)

    partial = summarize(_log(expected_discoveries=5))["discovery"]
    assert partial["convergence_s"] is None
    assert partial["converged_fraction"] == 0.8


def test_discovery_after_a_nodes_own_join() -> None:
    log = _log(
        discovery=[
            DiscoveryEvent(node="a", capability="x", at=9.0, after_join=2.0),
            DiscoveryEvent(node="a", capability="x", at=8.0, after_join=1.0),
            DiscoveryEvent(node="b", capability="x", at=9.0, after_join=4.0),
            DiscoveryEvent(node="b", capability="y", at=9.0),  # no join time: left out
        ]
    )
    discovery = summarize(log)["discovery"]
    assert (discovery["after_join_p50"], discovery["after_join_max"]) == (2.5, 4.0)
    assert discovery["p50"] == 9.0


def test_lookup_figures() -> None:
    lookups = summarize(_log())["lookups"]
    assert lookups["count"] == 3
    assert lookups["success_rate"] == pytest.approx(2 / 3)
    assert lookups["latency_p50"] == pytest.approx(0.2)
    assert lookups["hops_mean"] == 3.0

    no_hops = summarize(_log(lookups=[LookupEvent(at=1.0, latency=0.1, ok=True)]))["lookups"]
    assert no_hops["hops_mean"] is None


def test_reputation_demotion_is_the_start_of_the_final_run() -> None:
    reputation = summarize(_log())["reputation"]
    assert reputation["demotion_s"] == 40.0
    assert reputation["final_liar_mean"] == 0.1
    assert reputation["final_honest_mean"] == 0.8
    assert reputation["liars"] == 1

    honest_only = [s for s in _reputation() if not s.liar]
    assert summarize(_log(reputation=honest_only))["reputation"]["demotion_s"] is None


def test_reputation_never_demoted_when_the_last_window_fails() -> None:
    flipped = [
        ReputationSample(at=s.at, observer=s.observer, peer=s.peer, liar=not s.liar, score=s.score)
        for s in _reputation()
    ]
    assert summarize(_log(reputation=flipped))["reputation"]["demotion_s"] is None


def test_churn_split() -> None:
    churn = summarize(_log())["churn"]
    assert churn["counts"] == {"join": 1, "leave": 1, "crash": 1}
    # submitted at 20, 21 (after the leave at 19) and 30 (after the crash at 28)
    assert churn["tasks_during_churn"] == 3
    assert churn["success_rate_during_churn"] == pytest.approx(1 / 3)
    assert churn["success_rate_calm"] == 1.0


def test_empty_log_summarizes_to_nones() -> None:
    summary = summarize(RunLog(scenario="empty", mode="fast", seed=0, nodes=0, duration=0.0))
    assert summary["tasks"]["count"] == 0
    assert summary["tasks"]["success_rate"] is None
    assert summary["tasks"]["latency_p50"] is None
    assert summary["tasks"]["cost_per_task"] is None
    assert summary["discovery"]["convergence_s"] is None
    assert summary["discovery"]["converged_fraction"] is None
    assert summary["lookups"]["success_rate"] is None
    assert summary["reputation"]["demotion_s"] is None
    assert summary["churn"]["success_rate_calm"] is None
    json.dumps(summary)


def test_write_report_round_trips_and_escapes(tmp_path: Path) -> None:
    log = _log()
    summary = write_report(log, tmp_path / "run")

    data = json.loads((tmp_path / "run" / "report.json").read_text(encoding="utf-8"))
    assert data["summary"] == summary
    assert summarize(RunLog.from_json(data["log"])) == data["summary"]

    page = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert "This is a simulation" in page
    assert page.index("This is a simulation") < page.index("<h2>")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page
    assert page.count("data:image/png;base64,") == 5  # every plot has data here


def test_write_report_of_an_empty_log_has_no_plots(tmp_path: Path) -> None:
    log = RunLog(scenario="empty", mode="real", seed=0, nodes=0, duration=0.0)
    write_report(log, tmp_path)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "data:image/png" not in page
    assert "simnet report: empty" in page


def test_compare_pairs_shared_numeric_figures() -> None:
    a = summarize(_log())
    b = summarize(_log(tasks=[*_tasks(), _tasks()[0]], expected_discoveries=5))
    rows = compare(a, b)
    keys = [row[0] for row in rows]
    assert ("tasks.count", 6, 7) in rows
    assert ("discovery.convergence_s", 6.0, None) in rows
    assert "run.scenario" not in keys and "run.mode" not in keys
    assert len(keys) == len(set(keys))
    assert rows == compare(a, b)


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=120), out


def test_render_terminal_shows_figures() -> None:
    console, out = _console()
    render_terminal(summarize(_log()), console)
    text = out.getvalue()
    assert "This is a simulation" in text
    assert "3.85" in text  # task latency p95
    assert "0.6667" in text  # task success rate


def test_render_comparison_shows_deltas(tmp_path: Path) -> None:
    write_report(_log(), tmp_path / "a")
    bare = summarize(_log(tasks=[*_tasks(), _tasks()[0]]))
    (tmp_path / "b.json").write_text(json.dumps(bare), encoding="utf-8")

    console, out = _console()
    rows = render_comparison(tmp_path / "a" / "report.json", tmp_path / "b.json", console)
    assert ("tasks.count", 6, 7) in rows
    assert "+1 (+16.7%)" in out.getvalue()
