"""`ttsfleet run`: the whole pipeline in one process on the SQL store, no broker.

Jobs are stored exactly as `submit` stores them, then synthesized here by the same `run_delivery` a Celery
worker runs, so an interrupted `run` resumes when it is run again with the same input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from producer.cli.fleet import print_stats_table
from producer.jobs import job_views
from producer.stats import compute_stats
from producer.submit import Submitted, submit
from schemas.db import Store, open_store
from schemas.messages import JobRequest, JobView
from schemas.settings import ProducerSettings, WorkerSettings
from worker.events import JobFigures, JobOutcome, Listener
from worker.runtime import WorkerRuntime


class _ProgressBar(Listener):
    """Advances a rich progress bar by one for every chunk stored."""

    def __init__(self, progress: Progress, bar: TaskID) -> None:
        self._progress, self._bar = progress, bar

    def chunk_done(self, job_id: str, done: int, total: int) -> None:
        self._progress.advance(self._bar)


class _Lines(Listener):
    """Without a progress bar (output not a terminal: a log, a pipe) one line per finished job, so a long
    `run` is not silent for minutes."""

    def __init__(self, console: Console, todo: list[JobView]) -> None:
        self._console, self._names, self._done = console, {v.id: v.title or v.id for v in todo}, 0

    def _line(self, outcome: JobOutcome, what: str) -> None:
        self._done += 1
        name = self._names.get(outcome.job_id, outcome.job_id)
        self._console.print(f"{self._done}/{len(self._names)} {what}: {name}", markup=False, highlight=False)

    def job_finished(self, outcome: JobOutcome, figures: JobFigures) -> None:
        self._line(outcome, f"done ({figures.audio_s:.1f} s of audio)")

    def job_failed(self, outcome: JobOutcome) -> None:
        self._line(outcome, "failed")


def run_embedded(requests: Sequence[JobRequest], settings: ProducerSettings, env: Mapping[str, str], *,
                 device: str | None, precision: str | None, force: bool, show_progress: bool,
                 quiet: bool, inference_runtime: str | None = None, threads: int | None = None,
                 listeners: Sequence[Listener] = (),
                 on_submitted: Callable[[Store, list[Submitted]], object] | None = None) -> list[JobView]:
    """Submit `requests` without a broker, synthesize them in-process, return their final views.
    `listeners` are added to the in-process worker (benchmarks read memory after each job with one);
    `on_submitted` is called once the jobs are stored (`run` records its books there)."""
    store = open_store(settings.database_url)
    submitted = submit(requests, settings, store, publisher=None, force=force)
    if on_submitted is not None:
        on_submitted(store, submitted)
    views = synthesize_stored([s.id for s in submitted], settings, env, device=device, precision=precision,
                              show_progress=show_progress, quiet=quiet, inference_runtime=inference_runtime,
                              threads=threads, listeners=listeners)
    if not quiet:
        Console().print(_results_table(views))
        print_stats_table(["card", "dtype"], compute_stats(store, ["card", "dtype"]), "all jobs in this store")
    return views


def synthesize_stored(job_ids: Sequence[str], settings: ProducerSettings, env: Mapping[str, str], *,
                      device: str | None, precision: str | None, show_progress: bool, quiet: bool,
                      inference_runtime: str | None = None, threads: int | None = None,
                      listeners: Sequence[Listener] = ()) -> list[JobView]:
    """Run the stored jobs `job_ids` that are not finished in this process (an in-process worker on the
    settings' store and output folder); their final views, in order."""
    console = Console(stderr=True, quiet=quiet)  # progress and notes; the tables go to stdout
    store = open_store(settings.database_url)
    worker_settings = WorkerSettings.from_env(
        env, database_url=settings.database_url, output_dir=settings.output_url or settings.output_dir,
        voice=settings.voice,
        voice_dirs=settings.voice_dirs, device=device, precision=precision, runtime=inference_runtime,
        threads=threads, worker_name="embedded")
    with console.status("loading the voice and checking the device..."):
        runtime = WorkerRuntime.start(worker_settings)
        runtime.register()
    for listener in listeners:
        runtime.add_listener(listener)
    engine = runtime.engine_for(worker_settings.voice)
    console.print(f"voice [bold]{engine.voice_name}[/] on {runtime.device.name} ({runtime.policy.dtype}, "
                  f"{engine.runtime}): {runtime.policy.reason}")
    runtime.resume_dead_predecessors()  # an earlier `run` killed mid-job: take its jobs back now
    todo = [v for v in job_views(store, job_ids) if not v.status.is_terminal]
    try:
        _synthesize_all(runtime, todo, console, show_progress)
    finally:
        runtime.stop()
    return job_views(store, job_ids)


def _synthesize_all(runtime: WorkerRuntime, todo: list[JobView], console: Console, show_progress: bool) -> None:
    """Run the jobs as a worker runs a message's (units of up to `join_jobs`); the bar counts chunks still to
    make (a resumed job has fewer)."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=not show_progress) as progress:
        bar = progress.add_task(f"synthesizing {len(todo)} job(s)",
                                total=sum(v.chunks_total - v.chunks_done for v in todo))
        runtime.add_listener(_ProgressBar(progress, bar) if show_progress else _Lines(console, todo))
        for outcome in runtime.run_delivery([view.id for view in todo]) if todo else []:
            if outcome.status is None:
                console.print(f"job {outcome.job_id}: {outcome.detail}")


def _results_table(views: list[JobView]) -> Table:
    table = Table(title="results", title_justify="left")
    table.add_column("job", overflow="fold")
    table.add_column("status")
    table.add_column("audio s", justify="right")
    table.add_column("file / error", overflow="fold")
    for v in views:
        detail = v.error or _shown_path(v.audio_path)
        if v.book_path:
            detail += f"\nbook: {_shown_path(v.book_path)}"
        table.add_row(v.id, v.status.value, f"{v.audio_s:.2f}" if v.audio_s is not None else "", detail)
    return table


def _shown_path(path: str | None) -> str:
    """Relative to the current folder when inside it: short enough to read on a terminal."""
    if not path:
        return ""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path
