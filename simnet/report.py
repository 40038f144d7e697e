"""A run's report: ``report.json`` (summary plus the raw log, so figures can be
recomputed), a self-contained ``report.html`` with plots, and rich terminal tables
for one run or a comparison of two."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on CI or over ssh; must precede pyplot

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .events import RunLog
from .metrics import (
    compare,
    discovery_times,
    flatten,
    reputation_means,
    summarize,
)

TIME_BUCKETS = 30
"""Bars in the outcomes-over-time plot."""

_CHURN_COLOURS = {"join": "tab:green", "leave": "tab:orange", "crash": "tab:red"}

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
.notes { background: #fff4ce; border-left: 6px solid #e0a800; padding: .6em 1em; }
.notes p { margin: .3em 0; font-weight: 600; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td table { margin: 0; }
figure { margin: 1em 0; }
img { max-width: 100%; }
"""


def fmt(value: Any) -> str:
    """A figure as short text: floats to 4 significant digits, ``None`` as a dash."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    if isinstance(value, list):
        return ", ".join(fmt(v) for v in value)
    return str(value)


# --- HTML -------------------------------------------------------------------


def _html_value(value: Any) -> str:
    if not isinstance(value, dict):
        return html.escape(fmt(value))
    if not value:
        return "—"
    if all(isinstance(v, dict) for v in value.values()):
        # e.g. by_kind: one row per kind, one column per figure
        columns = list(dict.fromkeys(k for row in value.values() for k in row))
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in ["", *columns])
        rows = "".join(
            f"<tr><th>{html.escape(str(name))}</th>"
            + "".join(f"<td>{_html_value(row.get(c))}</td>" for c in columns)
            + "</tr>"
            for name, row in value.items()
        )
        return f"<table><tr>{head}</tr>{rows}</table>"
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{_html_value(v)}</td></tr>"
        for k, v in value.items()
    )
    return f"<table>{rows}</table>"


def _png(draw: Callable[[Figure], None]) -> str:
    fig = plt.figure(figsize=(8, 3.6))
    try:
        draw(fig)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _plot_latency(log: RunLog) -> Callable[[Figure], None] | None:
    latencies = sorted(t.finished - t.submitted for t in log.tasks if t.ok)
    if not latencies:
        return None

    def draw(fig: Figure) -> None:
        hist, cdf = fig.subplots(1, 2)
        hist.hist(latencies, bins=min(30, max(1, len(latencies))))
        hist.set(title="Task latency", xlabel="seconds", ylabel="tasks")
        fractions = [(i + 1) / len(latencies) for i in range(len(latencies))]
        cdf.step(latencies, fractions, where="post")
        cdf.set(title="Latency CDF", xlabel="seconds", ylabel="fraction of ok tasks")

    return draw


def _plot_outcomes(log: RunLog) -> Callable[[Figure], None] | None:
    if not log.tasks:
        return None
    span = max(log.duration, *(t.submitted for t in log.tasks)) or 1.0
    width = span / TIME_BUCKETS
    ok, failed = [0] * TIME_BUCKETS, [0] * TIME_BUCKETS
    for task in log.tasks:
        bucket = min(max(int(task.submitted / width), 0), TIME_BUCKETS - 1)
        (ok if task.ok else failed)[bucket] += 1
    starts = [i * width for i in range(TIME_BUCKETS)]

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        ax.bar(starts, ok, width=width, align="edge", color="tab:blue", label="ok")
        ax.bar(
            starts, failed, width=width, align="edge", bottom=ok, color="tab:red", label="failed"
        )
        seen: set[str] = set()
        for event in log.churn:
            label = None if event.kind in seen else f"churn: {event.kind}"
            seen.add(event.kind)
            ax.axvline(event.at, color=_CHURN_COLOURS[event.kind], ls="--", lw=1, label=label)
        ax.set(title="Task outcomes over time", xlabel="submitted (s)", ylabel="tasks")
        ax.legend(loc="upper right", fontsize="small")

    return draw


def _plot_discovery(log: RunLog) -> Callable[[Figure], None] | None:
    times = discovery_times(log)
    if not times:
        return None
    expected = max(log.expected_discoveries, len(times))

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        ax.step([0.0, *times], [i / expected for i in range(len(times) + 1)], where="post")
        ax.set(title="Discovery", xlabel="seconds", ylabel="fraction of expected pairs")
        ax.set_ylim(0, 1.05)

    return draw


def _plot_reputation(log: RunLog) -> Callable[[Figure], None] | None:
    means = reputation_means(log.reputation)
    if not means:
        return None

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        for index, label, colour in ((1, "liars", "tab:red"), (2, "honest", "tab:blue")):
            points = [(m[0], m[index]) for m in means if m[index] is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker=".", color=colour, label=label)
        ax.set(title="Reputation (mean score)", xlabel="seconds", ylabel="score")
        ax.legend(loc="best", fontsize="small")

    return draw


def _plot_kinds(summary: dict[str, Any]) -> Callable[[Figure], None] | None:
    by_kind: dict[str, dict[str, Any]] = summary["tasks"]["by_kind"]
    if len(by_kind) < 2:
        return None
    kinds = list(by_kind)

    def draw(fig: Figure) -> None:
        latency, accuracy = fig.subplots(1, 2)
        latency.bar(kinds, [by_kind[k]["latency_mean"] or 0.0 for k in kinds])
        latency.set(title="Mean latency per kind", ylabel="seconds")
        accuracy.bar(kinds, [by_kind[k]["accuracy"] or 0.0 for k in kinds], color="tab:green")
        accuracy.set(title="Accuracy per kind", ylabel="fraction correct")
        accuracy.set_ylim(0, 1.05)

    return draw


def _figures(log: RunLog, summary: dict[str, Any]) -> Iterator[str]:
    plots = (
        _plot_latency(log),
        _plot_outcomes(log),
        _plot_discovery(log),
        _plot_reputation(log),
        _plot_kinds(summary),
    )
    for draw in plots:
        if draw is not None:
            yield f'<figure><img alt="plot" src="data:image/png;base64,{_png(draw)}"></figure>'


def render_html(log: RunLog, summary: dict[str, Any]) -> str:
    """The whole report page: inline CSS and images, nothing fetched."""
    title = html.escape(f"simnet report: {log.scenario} ({log.mode}, seed {log.seed})")
    notes = "".join(f"<p>{html.escape(note)}</p>" for note in log.notes)
    sections = "".join(
        f"<h2>{html.escape(name)}</h2>{_html_value(section)}"
        for name, section in summary.items()
        if name != "run"
    )
    run = {k: v for k, v in summary["run"].items() if k != "notes"}
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{_CSS}</style></head><body>"
        f"<h1>{title}</h1>"
        + (f'<div class="notes">{notes}</div>' if notes else "")
        + f"<h2>run</h2>{_html_value(run)}{sections}"
        + f"<h2>plots</h2>{''.join(_figures(log, summary))}"
        + "</body></html>\n"
    )


def write_report(log: RunLog, directory: Path) -> dict[str, Any]:
    """Write ``report.json`` and ``report.html`` into ``directory``; return the summary."""
    directory.mkdir(parents=True, exist_ok=True)
    summary = summarize(log)
    payload = {"summary": summary, "log": log.to_json()}
    (directory / "report.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    (directory / "report.html").write_text(render_html(log, summary), encoding="utf-8")
    return summary


# --- terminal ---------------------------------------------------------------


def render_terminal(summary: dict[str, Any], console: Console | None = None) -> None:
    """One rich table per summary section."""
    console = console or Console()
    for note in summary.get("run", {}).get("notes", []):
        console.print(Text(note, style="bold yellow"))
    for name, section in summary.items():
        table = Table(title=name, title_justify="left", show_header=False)
        table.add_column("figure", style="cyan")
        table.add_column("value", justify="right")
        for key, value in flatten(section).items():
            if key != "notes":
                # Text, not str: names from the log must not be read as rich markup.
                table.add_row(Text(key), Text(fmt(value)))
        console.print(table)


def _load_summary(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    summary: dict[str, Any] = data.get("summary", data)
    return summary


def _delta(a: Any, b: Any) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float):
        return ""
    change = b - a
    text = f"{'+' if change >= 0 else ''}{fmt(change)}"
    return f"{text} ({change / abs(a) * 100:+.1f}%)" if a else text


def render_comparison(
    a_path: Path, b_path: Path, console: Console | None = None
) -> list[tuple[str, Any, Any]]:
    """Show two runs' figures side by side with ``b - a``; return the compared rows."""
    console = console or Console()
    rows = compare(_load_summary(a_path), _load_summary(b_path))
    table = Table(title=Text(f"{a_path} vs {b_path}"), title_justify="left")
    table.add_column("figure", style="cyan")
    table.add_column("a", justify="right")
    table.add_column("b", justify="right")
    table.add_column("b - a", justify="right")
    for key, a, b in rows:
        table.add_row(Text(key), fmt(a), fmt(b), _delta(a, b))
    console.print(table)
    return rows
