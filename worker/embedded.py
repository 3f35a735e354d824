"""`ttsfleet run`: the whole pipeline in one process on the SQL store, no broker.

Jobs are stored exactly as `submit` stores them, then synthesized here by the same `synthesize_job`
a Celery worker runs, so an interrupted `run` resumes when it is run again with the same input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import select

from producer.jobs import job_views
from producer.submit import submit
from schemas.db import Store, open_store
from schemas.messages import JobRequest, JobView
from schemas.settings import ProducerSettings, WorkerSettings
from schemas.tables import JobMetrics
from worker.job import synthesize_job
from worker.runtime import WorkerRuntime


def run_embedded(requests: Sequence[JobRequest], settings: ProducerSettings, env: Mapping[str, str], *,
                 device: str, precision: str, force: bool, show_progress: bool, quiet: bool) -> list[JobView]:
    """Submit `requests` without a broker, synthesize them in-process, return their final views."""
    console = Console(stderr=True, quiet=quiet)
    store = open_store(settings.database_url)
    submitted = submit(requests, settings, store, publisher=None, force=force)
    worker_settings = WorkerSettings.from_env(
        env, database_url=settings.database_url, output_dir=settings.output_dir, voice=settings.voice,
        device=device, precision=precision, worker_name="embedded")
    with console.status("loading the voice and checking the device..."):
        runtime = WorkerRuntime.start(worker_settings)
        runtime.register()
    engine = runtime.engine_for(worker_settings.voice)
    console.print(f"voice [bold]{engine.voice_name}[/] on {runtime.device.name} ({runtime.policy.dtype}): "
                  f"{runtime.policy.reason}")
    todo = [s for s in submitted if not s.status.is_terminal]
    try:
        _synthesize_all(runtime, [s.id for s in todo], sum(s.chunks_total for s in todo), console, show_progress)
    finally:
        runtime.stop()
    views = job_views(store, [s.id for s in submitted])
    console.print(_results_table(views))
    console.print(_stats_table(store, [v.id for v in views]))
    return views


def _synthesize_all(runtime: WorkerRuntime, job_ids: list[str], chunks_total: int, console: Console,
                    show_progress: bool) -> None:
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=not show_progress) as progress:
        bar = progress.add_task("synthesizing", total=chunks_total)
        runtime.on_chunk = lambda _job, _done, _total: progress.advance(bar)
        for job_id in job_ids:
            progress.update(bar, description=f"job {job_id}")
            synthesize_job(job_id, runtime.context())


def _results_table(views: list[JobView]) -> Table:
    table = Table(title="results")
    for col in ("job", "status", "audio s", "file / error"):
        table.add_column(col)
    for v in views:
        table.add_row(v.id, v.status.value, f"{v.audio_s:.2f}" if v.audio_s is not None else "",
                      (v.error or "") if v.error else (v.audio_path or ""))
    return table


def _stats_table(store: Store, job_ids: list[str]) -> Table:
    with store.session() as session:
        rows = session.scalars(select(JobMetrics).where(JobMetrics.job_id.in_(job_ids))).all()
    table = Table(title="stats")
    for col in ("card", "dtype", "jobs", "chars", "audio s", "synth s", "throughput x", "chars/s"):
        table.add_column(col, justify="right")
    audio_s, synth_s, chars = (sum(r.audio_s for r in rows), sum(r.synth_s for r in rows), sum(r.chars for r in rows))
    if rows:
        table.add_row(rows[0].card, rows[0].dtype, str(len(rows)), str(chars), f"{audio_s:.2f}", f"{synth_s:.2f}",
                      f"{audio_s / synth_s:.2f}" if synth_s else "-", f"{chars / synth_s:.1f}" if synth_s else "-")
    return table
