"""`ttsfleet stats` and `ttsfleet workers`: compare what each card delivers, and who is serving.

The store and the statistics modules are imported inside the commands so `ttsfleet --help` stays fast.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from producer.cli import common as cli_common
from producer.cli.common import DatabaseUrlOpt, JsonOpt

if TYPE_CHECKING:
    from producer.stats import StatsRow, WorkerView
    from schemas.db import Store


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


ByOpt = Annotated[str, typer.Option(
    "--by", help="comma-separated grouping keys: card, dtype, model, voice, worker, day; '' = whole fleet; "
                 "'segment' alone: long jobs' segments per worker")]
SinceOpt = Annotated[str | None, typer.Option(
    "--since", help="jobs finished at or after T: ISO date/time (UTC unless it has an offset) or an age: 24h, 7d")]
UntilOpt = Annotated[str | None, typer.Option("--until", help="jobs finished before T (same forms as --since)")]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", help="table (rich), json or csv on stdout")]
PlotOpt = Annotated[Path | None, typer.Option(
    "--plot", help="also write a PNG: throughput per group with p5–p95 whiskers, and against text length")]
LostAfterOpt = Annotated[float, typer.Option(
    "--lost-after", min=0, help="a worker silent for longer than this many seconds is shown as lost")]


def _open_store(database_url: str | None) -> Store:
    from schemas.db import open_store
    from schemas.settings import ProducerSettings

    settings = ProducerSettings.from_env(cli_common.environ(), database_url=database_url)
    return open_store(settings.database_url)


def stats(by: ByOpt = "card,dtype", since: SinceOpt = None, until: UntilOpt = None,
          output_format: FormatOpt = OutputFormat.TABLE, plot: PlotOpt = None,
          json_output: JsonOpt = False, database_url: DatabaseUrlOpt = None) -> None:
    """Throughput comparison per card and dtype (or model, voice, worker, day) of finished jobs."""
    from producer import stats as fleet
    from schemas.tables import utcnow

    now = utcnow()
    start = fleet.parse_time(since, now) if since else None
    end = fleet.parse_time(until, now) if until else None
    if by.strip() == "segment":
        _segment_stats(database_url, start, end, json_output or output_format is OutputFormat.JSON)
        return
    keys = fleet.parse_by(by)
    store = _open_store(database_url)
    try:
        rows = fleet.compute_stats(store, keys, start, end)
        points = fleet.job_points(store, keys, start, end) if plot else []
    finally:
        store.dispose()
    fmt = OutputFormat.JSON if json_output else output_format
    if fmt is OutputFormat.JSON:
        cli_common.print_json([r.as_dict() for r in rows])
    elif fmt is OutputFormat.CSV:
        _print_csv(keys, rows)
    else:
        print_stats_table(keys, rows, _window_text(start, end))
    if plot:
        from producer.plot import plot_stats

        plot_stats(rows, points, plot, subtitle=_window_text(start, end))
        cli_common.err_console.print(f"plot written to {plot}")


def _segment_stats(database_url: str | None, start: datetime | None, end: datetime | None, as_json: bool) -> None:
    """`stats --by segment`: per worker, what it made of long jobs' segments."""
    from rich.console import Console
    from rich.table import Table

    from producer.segment_stats import segment_stats

    store = _open_store(database_url)
    try:
        rows = segment_stats(store, start, end)
    finally:
        store.dispose()
    if as_json:
        cli_common.print_json([r.as_dict() for r in rows])
        return
    table = Table(title=f"segments of long jobs per worker, {_window_text(start, end)}")
    for col in ("worker", "card", "dtype", "jobs", "segments", "chunks", "audio", "synth", "x realtime"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.worker, r.card, r.dtype, str(r.jobs), str(r.segments), str(r.chunks), _duration(r.audio_s),
                      _duration(r.synth_s), _num(r.throughput_x, "{:.1f}"))
    Console().print(table)


def _window_text(start: datetime | None, end: datetime | None) -> str:
    if start is None and end is None:
        return "all finished jobs"
    first = f"{start:%Y-%m-%d %H:%M} UTC" if start else "the beginning"
    last = f"{end:%Y-%m-%d %H:%M} UTC" if end else "now"
    return f"jobs finished from {first} to {last}"


def _print_csv(keys: Sequence[str], rows: Sequence[StatsRow]) -> None:
    from producer.stats import StatsRow

    fields = [*keys, *(name for name in StatsRow.__dataclass_fields__ if name != "keys")]
    writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(r.as_dict() for r in rows)
    sys.stdout.flush()


# Figure columns shown on any terminal; the others need a wide one (or --format json/csv).
_PRIMARY = ("jobs", "failed", "× real\ntime", "chars/s", "latency\np50 s", "latency\np95 s", "peak\nmem", "fidelity")
_WIDE_TABLE_COLUMNS = 140
_FIDELITY_COLUMNS = 110


def print_stats_table(keys: Sequence[str], rows: Sequence[StatsRow], window: str) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    headers = list(_stats_cells(None))
    # The fidelity column needs ~20 more columns: below _FIDELITY_COLUMNS it would crop the table (and its
    # caption) on an 80-column terminal, so it joins the columns the caption says are hidden.
    primary = [h for h in _PRIMARY if h != "fidelity" or console.width >= _FIDELITY_COLUMNS]
    shown = [h for h in headers if h in primary or console.width >= _WIDE_TABLE_COLUMNS]
    caption = ("× real time = audio s ÷ synthesis s of succeeded jobs · latency = submitted → finished · "
               "wait = submitted → started")
    if len(shown) < len(headers):
        hidden = len(headers) - len(shown)
        caption += f" · {hidden} more columns on a terminal ≥{_WIDE_TABLE_COLUMNS} wide or with --format json"
    table = Table(title=f"ttsfleet stats — {window}", title_justify="left", caption=caption,
                  caption_justify="left", box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for key in keys or ["fleet"]:
        table.add_column(key, overflow="fold", min_width=8)
    for header in shown:
        table.add_column(header, justify="right", no_wrap=True)
    for row in rows:
        cells = _stats_cells(row)
        table.add_row(*(row.keys.values() or ["all"]), *(cells[h] for h in shown))
    console.print(table)
    if not rows:
        cli_common.err_console.print("no finished jobs in this window")


def _stats_cells(row: StatsRow | None) -> dict[str, str]:
    """Header -> formatted cell, in display order; with `row=None`, the headers only."""
    if row is None:
        return dict.fromkeys(("jobs", "failed", "audio", "synthesis", "× real\ntime", "chars/s",
                              "wait\np50 s", "wait\np95 s", "latency\np50 s", "latency\np95 s", "peak\nmem",
                              "OOM\nretries", "fp32\nfallbacks", "fidelity", "fp32\nmodules"), "")
    return {
        "jobs": str(row.jobs), "failed": str(row.failed_jobs) if row.failed_jobs else "[dim]0[/]",
        "audio": _duration(row.audio_s), "synthesis": _duration(row.synth_s),
        "× real\ntime": _num(row.throughput_x, "[bold]{:.1f}×[/]"),
        "chars/s": _num(row.chars_per_s, "{:,.0f}"),
        "wait\np50 s": _num(row.p50_queue_wait_s, "{:.2f}"), "wait\np95 s": _num(row.p95_queue_wait_s, "{:.2f}"),
        "latency\np50 s": _num(row.p50_latency_s, "{:.2f}"),
        "latency\np95 s": _num(row.p95_latency_s, "{:.2f}"),
        "peak\nmem": _bytes(row.peak_mem_bytes), "OOM\nretries": str(row.oom_retries),
        "fp32\nfallbacks": str(row.fp32_fallbacks),
        "fidelity": fidelity_text(row.fidelity_mel_db, row.fidelity_snr_db, row.keys.get("dtype")),
        "fp32\nmodules": _modules(row.keep_fp32),
    }


def fidelity_text(mel_db: float | None, snr_db: float | None, dtype: str | None = None) -> str:
    """`mel 0.53 dB · SNR 26.6 dB` (the worst in a group), or what an unmeasured policy is."""
    if mel_db is None or snr_db is None:
        return "fp32 (reference)" if dtype == "float32" else "not measured"
    return f"mel {mel_db:.2f} dB · SNR {snr_db:.1f} dB"


def _modules(keep_fp32: str) -> str:
    """The modules kept in fp32 beyond the default islands, e.g. `+decoder`; `–` when none."""
    from worker.precision import VITS_FP32_MODULES

    extra = [m for m in keep_fp32.split(",") if m and m not in VITS_FP32_MODULES]
    return "+" + ",".join(extra) if extra else "–"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _num(value: float | None, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)


def _bytes(value: int | None) -> str:
    if value is None:
        return "–"
    if value >= 1 << 30:
        return f"{value / (1 << 30):.3g} GiB"
    return f"{value / (1 << 20):.0f} MiB"


def workers(lost_after: LostAfterOpt = 60.0, json_output: JsonOpt = False,
            database_url: DatabaseUrlOpt = None) -> None:
    """Registered workers: host, card, compute capability, memory, precision policy, state, heartbeat."""
    from producer.stats import list_workers

    store = _open_store(database_url)
    try:
        views = list_workers(store, lost_after)
    finally:
        store.dispose()
    if json_output:
        cli_common.print_json([v.as_dict() for v in views])
        return
    _print_workers_table(views, lost_after)


_WORKER_COLUMNS = ("worker", "card", "CC", "memory", "dtype", "tf32", "fidelity", "state", "heartbeat", "host",
                   "voice", "fp32 modules", "policy")
_WORKER_NARROW = 9  # the first columns, all a narrow terminal shows


def _print_workers_table(views: Sequence[WorkerView], lost_after: float) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    shown = _WORKER_COLUMNS if console.width >= _WIDE_TABLE_COLUMNS else _WORKER_COLUMNS[:_WORKER_NARROW]
    table = Table(title=f"ttsfleet workers — lost after {lost_after:g} s without a heartbeat",
                  title_justify="left", box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for name in shown:
        table.add_column(name, overflow="fold", justify="right" if name in ("memory", "heartbeat") else "left",
                         no_wrap=name not in ("card", "policy", "voice", "fidelity", "fp32 modules"))
    for v in views:
        cells = (v.id, v.card, v.capability or "–", _bytes(v.memory_bytes), v.dtype, "on" if v.tf32 else "off",
                 fidelity_text(v.fidelity_mel_db, v.fidelity_snr_db, v.dtype), _state(v.state),
                 f"{_age(v.heartbeat_age_s)} ago", v.host, v.voice, v.keep_fp32 or "–", v.policy_reason)
        table.add_row(*cells[: len(shown)])
    console.print(table)
    if not views:
        cli_common.err_console.print("no worker has registered yet")


def _state(state: str) -> str:
    style: dict[str, Any] = {"lost": "bold red", "ready": "green", "starting": "yellow", "stopped": "dim"}
    return f"[{style.get(state, 'default')}]{state}[/]"


def _age(seconds: float) -> str:
    for unit_s, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= unit_s:
            return f"{seconds / unit_s:.0f} {unit}"
    return f"{seconds:.0f} s"
