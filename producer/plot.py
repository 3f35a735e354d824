"""The `stats --plot` figure: throughput per group with per-job spread, and throughput against text length.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no display, no global state).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from producer.stats import JobPoint, StatsRow
from schemas.errors import InvalidInput

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_LABEL_CHARS = 30  # longer group labels go one key per line so the bar panel keeps its width


def plot_stats(rows: Sequence[StatsRow], points: Sequence[JobPoint], path: Path, subtitle: str = "") -> Path:
    """Write `stats_figure(...)` as a PNG to `path` and return `path`.

    Raises:
        InvalidInput: no succeeded job to draw.
    """
    figure = stats_figure(rows, points, subtitle)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def stats_figure(rows: Sequence[StatsRow], points: Sequence[JobPoint], subtitle: str = "") -> Figure:
    """The two-panel figure.

    Left: each group's throughput (audio s per synthesis s), best on top, whiskers from the 5th to the
    95th percentile of per-job throughput, annotated with job count and p95 latency. Right: per-job
    throughput against characters per job (log scale), coloured like the bars.

    Raises:
        InvalidInput: no succeeded job to draw.
    """
    from matplotlib.figure import Figure

    drawn = sorted((r for r in rows if r.throughput_x is not None), key=lambda r: r.throughput_x or 0.0)
    if not drawn:
        raise InvalidInput("nothing to plot: no succeeded jobs in this window")
    colors = _colors([r.label for r in reversed(drawn)])
    height = max(5.0, 1.5 + 0.6 * len(drawn))
    fig = Figure(figsize=(15, height), dpi=110, layout="constrained")
    bars_ax, scatter_ax = fig.subplots(1, 2, width_ratios=[1.15, 1])
    _draw_bars(bars_ax, drawn, colors)
    _draw_scatter(scatter_ax, points, colors)
    jobs = sum(r.jobs for r in rows)
    failed = sum(r.failed_jobs for r in rows)
    title = f"ttsfleet: what each card delivers — {jobs} succeeded jobs, {failed} failed"
    fig.suptitle(f"{title}\n{subtitle}" if subtitle else title, fontsize=13)
    return fig


def _colors(labels: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def _short(label: str) -> str:
    return label if len(label) <= _LABEL_CHARS else label.replace(" · ", "\n")


def _draw_bars(ax: Any, rows: Sequence[StatsRow], colors: dict[str, Any]) -> None:
    ys = range(len(rows))
    values = [r.throughput_x or 0.0 for r in rows]
    lows = [max(0.0, v - (r.p5_job_throughput_x if r.p5_job_throughput_x is not None else v))
            for v, r in zip(values, rows, strict=True)]
    highs = [max(0.0, (r.p95_job_throughput_x if r.p95_job_throughput_x is not None else v) - v)
             for v, r in zip(values, rows, strict=True)]
    ax.barh(ys, values, color=[colors[r.label] for r in rows], height=0.6,
            xerr=[lows, highs], error_kw={"ecolor": "#333333", "capsize": 4, "elinewidth": 1.2})
    ax.set_yticks(list(ys), [_short(r.label) for r in rows], fontsize=10)
    ax.axvline(1.0, color="#888888", linestyle="--", linewidth=1)
    right = max(v + h for v, h in zip(values, highs, strict=True))
    ax.set_xlim(0, right * 1.8)
    for y, value, high, row in zip(ys, values, highs, rows, strict=True):
        ax.text(value + high + right * 0.02, y, _annotation(row), va="center", fontsize=9)
    ax.text(1.0, -0.75, " real time", color="#666666", fontsize=8, va="center")
    ax.set_xlabel("throughput (× real time: audio seconds per synthesis second) — higher is better")
    ax.set_title("Throughput per group (whiskers: 5th–95th percentile of jobs)", fontsize=11)
    ax.set_ylim(-1, len(rows) - 0.4)
    ax.grid(axis="x", alpha=0.3)


def _annotation(row: StatsRow) -> str:
    parts = [f"{row.throughput_x:.1f}×", f"n={row.jobs}"]
    if row.p95_latency_s is not None:
        parts.append(f"p95 latency {row.p95_latency_s:.1f} s")
    if row.failed_jobs:
        parts.append(f"{row.failed_jobs} failed")
    return " · ".join(parts)


def _draw_scatter(ax: Any, points: Sequence[JobPoint], colors: dict[str, Any]) -> None:
    by_label: dict[str, list[JobPoint]] = {}
    for point in points:
        by_label.setdefault(" · ".join(point.keys.values()) or "all", []).append(point)
    for label, color in colors.items():
        group = by_label.get(label, [])
        if group:
            ax.scatter([p.chars for p in group], [p.throughput_x for p in group], s=28, alpha=0.75,
                       color=color, edgecolors="white", linewidths=0.5, label=f"{_short(label)} ({len(group)})")
    ax.set_xscale("log")
    ax.set_xlabel("text length (characters per job, log scale)")
    ax.set_ylabel("throughput of the job (× real time)")
    ax.set_title("Throughput against text length (one dot per job)", fontsize=11)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9, loc="best", framealpha=0.9)
