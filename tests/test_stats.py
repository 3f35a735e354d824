"""Fleet statistics on seeded rows with hand-computed answers, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from producer.cli import fleet as cli_fleet
from producer.stats import (
    StatsRow,
    _compute,
    compute_stats,
    job_points,
    list_workers,
    parse_by,
    parse_time,
)
from schemas.db import Store, open_store
from schemas.errors import InvalidInput
from schemas.status import JobStatus, WorkerState
from schemas.tables import Job, JobMetrics, Worker, utcnow

RTX = "NVIDIA GeForce RTX 4090"
P40 = "Tesla P40"
GIB = 1 << 30


@dataclass(frozen=True)
class Seeded:
    url: str
    store: Store
    recent: datetime  # when the recent jobs finished
    old: datetime  # when the one old job finished


def _worker(wid: str, card: str, dtype: str, heartbeat_at: datetime, **kw: object) -> Worker:
    return Worker(id=wid, host=kw.pop("host", "gpu-host"), pid=100, device="cuda:0", card=card,
                  capability=kw.pop("capability", "8.9"), memory_bytes=24 * GIB, backend="cuda",
                  torch_version="2.13.0", dtype=dtype, tf32=kw.pop("tf32", True),
                  policy_reason="bf16 supported", voice="piper:joe", queues="ttsfleet",
                  state=kw.pop("state", WorkerState.READY), heartbeat_at=heartbeat_at)


def _job(jid: str, status: JobStatus, finished_at: datetime, worker_id: str | None, voice: str) -> Job:
    return Job(id=jid, idempotency_key=jid, status=status, voice=voice, format="wav", text="x",
               worker_id=worker_id, created_at=finished_at - timedelta(seconds=30), finished_at=finished_at)


def _metrics(jid: str, worker: Worker, finished_at: datetime, voice: str, *, chars: int, audio_s: float,
             synth_s: float, wait_s: float, latency_s: float, peak: int | None = None, oom: int = 0,
             fp32: int = 0) -> JobMetrics:
    return JobMetrics(job_id=jid, worker_id=worker.id, voice=voice, card=worker.card,
                      capability=worker.capability, backend="cuda", dtype=worker.dtype, chars=chars,
                      chunks=3, audio_s=audio_s, synth_s=synth_s, queue_wait_s=wait_s, latency_s=latency_s,
                      peak_mem_bytes=peak, oom_retries=oom, fp32_fallbacks=fp32, batches=1,
                      finished_at=finished_at)


def seed(store: Store) -> Seeded:
    """RTX/bf16: 5 jobs + 1 failed; P40/fp32: 2 recent jobs + 1 ten days old; 1 failed job with no worker."""
    now = utcnow()
    recent, old = now - timedelta(hours=1), now - timedelta(days=10)
    rtx = _worker("w-rtx", RTX, "bfloat16", now)
    p40 = _worker("w-p40", P40, "float32", now - timedelta(seconds=600), capability="6.1", tf32=False,
                  host="old-host")
    rtx_jobs = [  # chars, audio_s, synth_s, wait_s, latency_s, peak, oom, fp32
        (100, 10.0, 1.0, 0.5, 1.0, 1 * GIB, 0, 0),
        (200, 20.0, 2.0, 0.1, 2.0, 2 * GIB, 1, 0),
        (300, 30.0, 2.0, 0.2, 3.0, 3 * GIB, 0, 1),
        (400, 40.0, 4.0, 0.3, 4.0, None, 2, 0),
        (500, 50.0, 10.0, 0.4, 10.0, 5 * GIB, 0, 0),
    ]
    p40_jobs = [(1000, 10.0, 5.0, 1.0, 5.0, GIB, 0, 0), (1000, 10.0, 10.0, 3.0, 7.0, 2 * GIB, 0, 0)]
    rows: list[object] = [rtx, p40]
    for i, (chars, audio, synth, wait, lat, peak, oom, fp32) in enumerate(rtx_jobs):
        rows += [_job(f"r{i}", JobStatus.SUCCEEDED, recent, rtx.id, "piper:joe"),
                 _metrics(f"r{i}", rtx, recent, "piper:joe", chars=chars, audio_s=audio, synth_s=synth,
                          wait_s=wait, latency_s=lat, peak=peak, oom=oom, fp32=fp32)]
    for i, (chars, audio, synth, wait, lat, peak, _, _) in enumerate(p40_jobs):
        rows += [_job(f"p{i}", JobStatus.SUCCEEDED, recent, p40.id, "piper:amy"),
                 _metrics(f"p{i}", p40, recent, "piper:amy", chars=chars, audio_s=audio, synth_s=synth,
                          wait_s=wait, latency_s=lat, peak=peak)]
    rows += [_job("p-old", JobStatus.SUCCEEDED, old, p40.id, "piper:amy"),
             _metrics("p-old", p40, old, "piper:amy", chars=50, audio_s=5.0, synth_s=5.0, wait_s=0.0,
                      latency_s=100.0, peak=7 * GIB),
             _job("f-rtx", JobStatus.FAILED, recent, rtx.id, "piper:joe"),
             _job("f-none", JobStatus.FAILED, recent, None, "piper:joe"),
             _job("queued", JobStatus.QUEUED, recent, None, "piper:joe")]
    with store.session() as session:
        session.add_all(rows)
    return Seeded(url="", store=store, recent=recent, old=old)


@pytest.fixture
def seeded(db_url: str) -> Iterator[Seeded]:
    store = open_store(db_url)
    data = seed(store)
    yield Seeded(url=db_url, store=store, recent=data.recent, old=data.old)
    store.dispose()


def _by_label(rows: list[StatsRow]) -> dict[str, StatsRow]:
    return {r.label: r for r in rows}


def test_card_dtype_figures_equal_hand_computed_values(seeded: Seeded) -> None:
    since = seeded.recent - timedelta(days=1)
    rows = _by_label(compute_stats(seeded.store, ["card", "dtype"], since=since))
    assert list(rows) == ["- · -", f"{RTX} · bfloat16", f"{P40} · float32"]

    rtx = rows[f"{RTX} · bfloat16"]
    assert (rtx.jobs, rtx.failed_jobs, rtx.chars) == (5, 1, 1500)
    assert rtx.audio_s == pytest.approx(150.0) and rtx.synth_s == pytest.approx(19.0)
    assert rtx.throughput_x == pytest.approx(150 / 19)
    assert rtx.chars_per_s == pytest.approx(1500 / 19)
    # latencies 1,2,3,4,10: p50 at rank 2 -> 3; p95 at rank 3.8 -> 4 + 0.8 * (10 - 4)
    assert rtx.p50_latency_s == pytest.approx(3.0)
    assert rtx.p95_latency_s == pytest.approx(8.8)
    # waits 0.1..0.5: p50 0.3; p95 0.4 + 0.8 * 0.1
    assert rtx.p50_queue_wait_s == pytest.approx(0.3)
    assert rtx.p95_queue_wait_s == pytest.approx(0.48)
    # per-job throughput 5,10,10,10,15: p5 at rank 0.2 -> 6; p95 at rank 3.8 -> 14
    assert rtx.p5_job_throughput_x == pytest.approx(6.0)
    assert rtx.p95_job_throughput_x == pytest.approx(14.0)
    assert rtx.peak_mem_bytes == 5 * GIB
    assert (rtx.oom_retries, rtx.fp32_fallbacks) == (3, 1)

    p40 = rows[f"{P40} · float32"]
    assert (p40.jobs, p40.failed_jobs) == (2, 0)  # the ten-day-old job is outside --since
    assert p40.throughput_x == pytest.approx(20 / 15)
    assert p40.p50_latency_s == pytest.approx(6.0)
    assert p40.p95_latency_s == pytest.approx(6.9)  # 5 + 0.95 * (7 - 5)
    assert p40.peak_mem_bytes == 2 * GIB

    unclaimed = rows["- · -"]
    assert (unclaimed.jobs, unclaimed.failed_jobs, unclaimed.audio_s) == (0, 1, 0.0)
    assert unclaimed.throughput_x is None and unclaimed.p95_latency_s is None


def test_time_window_and_other_groupings(seeded: Seeded) -> None:
    everything = _by_label(compute_stats(seeded.store, ["card"]))
    assert everything[P40].jobs == 3 and everything[P40].peak_mem_bytes == 7 * GIB
    old_only = compute_stats(seeded.store, ["card"], until=seeded.recent - timedelta(days=1))
    assert [(r.label, r.jobs) for r in old_only] == [(P40, 1)]

    by_model = _by_label(compute_stats(seeded.store, ["model", "voice"]))
    assert by_model["piper:joe · piper:joe"].jobs == 5
    assert by_model["piper:joe · piper:joe"].failed_jobs == 2
    assert by_model["piper:amy · piper:amy"].jobs == 3

    by_day = compute_stats(seeded.store, ["day", "worker"])
    assert [(r.keys["day"], r.keys["worker"], r.jobs, r.failed_jobs) for r in by_day] == sorted([
        (seeded.old.strftime("%Y-%m-%d"), "w-p40", 1, 0),
        (seeded.recent.strftime("%Y-%m-%d"), "-", 0, 1),
        (seeded.recent.strftime("%Y-%m-%d"), "w-p40", 2, 0),
        (seeded.recent.strftime("%Y-%m-%d"), "w-rtx", 5, 1),
    ])

    [total] = compute_stats(seeded.store, [])
    assert (total.jobs, total.failed_jobs, total.chars) == (8, 2, 3550)
    # 8 latencies 1,2,3,4,5,7,10,100: p95 at rank 6.65 -> 10 + 0.65 * 90
    assert total.p95_latency_s == pytest.approx(68.5)


def test_empty_store_gives_no_rows(db_url: str) -> None:
    store = open_store(db_url)
    assert compute_stats(store, ["card", "dtype"]) == []
    assert compute_stats(store, []) == []
    store.dispose()


def test_percentiles_match_numpy_on_random_rows(db_url: str) -> None:
    """percentile_cont (PostgreSQL) and the window-function form (both dialects) equal numpy's linear."""
    store = open_store(db_url)
    rng = random.Random(6)
    worker = _worker("w", RTX, "bfloat16", utcnow())
    rows: list[object] = [worker]
    latencies: dict[str, list[float]] = {"piper:a": [], "piper:b": []}
    for i in range(57):
        voice = "piper:a" if i % 3 else "piper:b"
        latency = round(rng.uniform(0.1, 50.0), 3)
        latencies[voice].append(latency)
        rows += [_job(f"j{i}", JobStatus.SUCCEEDED, utcnow(), "w", voice),
                 _metrics(f"j{i}", worker, utcnow(), voice, chars=10, audio_s=rng.uniform(1, 9),
                          synth_s=rng.uniform(0.1, 2), wait_s=0.0, latency_s=latency)]
    with store.session() as session:
        session.add_all(rows)
    methods = [False, True] if store.dialect == "postgresql" else [False]
    for use_percentile_cont in methods:
        result = _by_label(_compute(store, ["voice"], None, None, use_percentile_cont))
        for voice, values in latencies.items():
            assert result[voice].p50_latency_s == pytest.approx(float(np.percentile(values, 50)), abs=1e-9)
            assert result[voice].p95_latency_s == pytest.approx(float(np.percentile(values, 95)), abs=1e-9)
    store.dispose()


def test_parse_time_and_by() -> None:
    now = datetime(2026, 3, 10, 12, 0, 0)
    assert parse_time("24h", now) == datetime(2026, 3, 9, 12, 0, 0)
    assert parse_time("7d", now) == datetime(2026, 3, 3, 12, 0, 0)
    assert parse_time("90m", now) == datetime(2026, 3, 10, 10, 30, 0)
    assert parse_time("2026-03-01", now) == datetime(2026, 3, 1)
    assert parse_time("2026-03-01T10:00:00+02:00", now) == datetime(2026, 3, 1, 8, 0)
    with pytest.raises(InvalidInput, match="cannot read time"):
        parse_time("yesterday-ish", now)
    assert parse_by("card, dtype,card") == ["card", "dtype"]
    with pytest.raises(InvalidInput, match="unknown --by key 'gpu'"):
        parse_by("gpu")


def test_job_points_for_the_scatter(seeded: Seeded) -> None:
    points = job_points(seeded.store, ["card", "dtype"])
    assert len(points) == 8
    assert sorted(p.throughput_x for p in points if p.keys["card"] == RTX) == [5.0, 10.0, 10.0, 10.0, 15.0]


def test_list_workers_marks_silent_workers_lost(seeded: Seeded) -> None:
    views = {w.id: w for w in list_workers(seeded.store, lost_after_s=60)}
    assert views["w-rtx"].state == "ready" and not views["w-rtx"].lost
    assert views["w-p40"].state == "lost" and views["w-p40"].registered_state == "ready"
    assert views["w-p40"].heartbeat_age_s >= 600
    patient = {w.id: w for w in list_workers(seeded.store, lost_after_s=3600)}
    assert patient["w-p40"].state == "ready"


# --- the CLI --------------------------------------------------------------------------------------

def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("stats")(cli_fleet.stats)
    app.command("workers")(cli_fleet.workers)
    return app


def _invoke(url: str, *args: str) -> str:
    result = CliRunner().invoke(_cli(), [*args, "--database-url", url], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.stdout


def test_cli_stats_json_csv_table(seeded: Seeded) -> None:
    rows = json.loads(_invoke(seeded.url, "stats", "--since", "2d", "--format", "json"))
    rtx = next(r for r in rows if r["card"] == RTX)
    for key in ("card", "dtype", "jobs", "audio_s", "synth_s", "throughput_x", "chars_per_s",
                "p50_latency_s", "p95_latency_s", "peak_mem_bytes"):
        assert key in rtx
    assert rtx["jobs"] == 5 and rtx["throughput_x"] == pytest.approx(150 / 19)
    assert rtx["p95_latency_s"] == pytest.approx(8.8)

    table = list(csv.DictReader(io.StringIO(_invoke(seeded.url, "stats", "--by", "worker", "--format", "csv"))))
    assert {r["worker"]: int(r["jobs"]) for r in table} == {"-": 0, "w-p40": 3, "w-rtx": 5}
    assert float(next(r for r in table if r["worker"] == "w-rtx")["p95_latency_s"]) == pytest.approx(8.8)

    text = _invoke(seeded.url, "stats", "--since", "2d")
    assert RTX in text and "7.9×" in text and "8.80" in text and "0.48" in text


def test_cli_stats_plot_png(seeded: Seeded, tmp_path: Path) -> None:
    png = tmp_path / "fleet.png"
    _invoke(seeded.url, "stats", "--format", "json", "--plot", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000


def test_plotted_figures_equal_hand_computed_values(seeded: Seeded) -> None:
    from producer.plot import stats_figure

    since = seeded.recent - timedelta(days=1)
    rows = compute_stats(seeded.store, ["card", "dtype"], since=since)
    figure = stats_figure(rows, job_points(seeded.store, ["card", "dtype"], since=since))
    axes: list[Any] = list(figure.axes)  # matplotlib's stubs type artists loosely
    bars_ax, scatter_ax = axes
    widths = [patch.get_width() for patch in bars_ax.patches]
    assert widths == pytest.approx([20 / 15, 150 / 19])  # P40 below, RTX on top; "- · -" has no bar
    labels = [tick.get_text() for tick in bars_ax.get_yticklabels()]
    assert labels == [f"{P40} · float32", f"{RTX}\nbfloat16"]
    notes = [text.get_text() for text in bars_ax.texts]
    assert "7.9× · n=5 · p95 latency 8.8 s · 1 failed" in notes
    whisker = next(c for c in bars_ax.containers if hasattr(c, "has_xerr") and c.has_xerr)
    segments = whisker.lines[2][0].get_segments()
    assert [tuple(np.round([seg[0][0], seg[1][0]], 6)) for seg in segments] == [
        tuple(np.round([1.0 + 0.05 * (2.0 - 1.0), 1.0 + 0.95 * (2.0 - 1.0)], 6)), (6.0, 14.0)]
    dots = sorted((float(x), float(y)) for collection in scatter_ax.collections
                  for x, y in np.asarray(collection.get_offsets()))
    assert dots == sorted([(100, 10.0), (200, 10.0), (300, 15.0), (400, 10.0), (500, 5.0), (1000, 2.0),
                           (1000, 1.0)])


def test_cli_workers(seeded: Seeded) -> None:
    listed = json.loads(_invoke(seeded.url, "workers", "--json"))
    assert [(w["id"], w["card"], w["dtype"], w["tf32"], w["state"]) for w in listed] == [
        ("w-rtx", RTX, "bfloat16", True, "ready"), ("w-p40", P40, "float32", False, "lost")]
    text = _invoke(seeded.url, "workers", "--lost-after", "3600")
    p40_line = next(line for line in text.splitlines() if "w-p40" in line)
    assert "ready" in p40_line and "lost" not in p40_line and "6.1" in p40_line and "10 min ago" in p40_line
    lost_text = _invoke(seeded.url, "workers")
    assert "lost" in next(line for line in lost_text.splitlines() if "w-p40" in line)


def test_cli_rejects_bad_by(sqlite_url: str) -> None:
    result = CliRunner().invoke(_cli(), ["stats", "--by", "gpu", "--database-url", sqlite_url])
    assert result.exit_code != 0
    assert isinstance(result.exception, InvalidInput)
