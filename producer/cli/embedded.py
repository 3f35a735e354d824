"""`ttsfleet run`: the whole pipeline in one process on the SQL store, no broker.

Jobs are stored exactly as `submit` stores them, then synthesized here by the same `run_delivery` a Celery
worker runs, so an interrupted `run` resumes when it is run again with the same input.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from producer.cli.fleet import print_stats_table
from producer.cli.tables import jobs_table
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


class _ProgressLines(Listener):
    """Progress as plain lines on stderr when no bar can be drawn (output in a log or a pipe), so a long
    `run` is never silent for minutes: a line per finished job when there are at most EACH_JOB_LINES (a
    book's chapters), else one every `every_s` and at the end; between them, chunk counts every `every_s`."""

    EACH_JOB_LINES = 100

    def __init__(self, console: Console, todo: list[JobView], every_s: float = 15.0) -> None:
        self._console, self._every_s = console, every_s
        self._names = {v.id: v.title or v.id for v in todo}
        self._chunks_total = sum(v.chunks_total - v.chunks_done for v in todo)
        self._chunks = self._jobs = 0
        self._started = self._shown = time.monotonic()

    def chunk_done(self, job_id: str, done: int, total: int) -> None:
        self._chunks += 1
        if time.monotonic() - self._shown >= self._every_s:
            self._print(f"synthesizing: {min(self._chunks, self._chunks_total)}/{self._chunks_total} chunks, "
                        f"{self._jobs}/{len(self._names)} jobs done, {time.monotonic() - self._started:.0f} s")

    def job_finished(self, outcome: JobOutcome, figures: JobFigures) -> None:
        self._job_line(outcome, f"done ({figures.audio_s:.1f} s of audio)")

    def job_failed(self, outcome: JobOutcome) -> None:
        self._job_line(outcome, "failed")

    def _job_line(self, outcome: JobOutcome, what: str) -> None:
        self._jobs += 1
        last = self._jobs == len(self._names)
        if len(self._names) <= self.EACH_JOB_LINES:
            self._print(f"{self._jobs}/{len(self._names)} {what}: {self._names.get(outcome.job_id, outcome.job_id)}")
        elif last or time.monotonic() - self._shown >= self._every_s:
            self._print(f"{self._jobs}/{len(self._names)} jobs done, {time.monotonic() - self._started:.0f} s")

    def _print(self, line: str) -> None:
        self._shown = time.monotonic()
        self._console.print(line, markup=False, highlight=False, soft_wrap=True)


def run_embedded(requests: Sequence[JobRequest], settings: ProducerSettings, env: Mapping[str, str], *,
                 device: str | None, precision: str | None, force: bool, show_progress: bool,
                 quiet: bool, inference_runtime: str | None = None, threads: int | None = None,
                 listeners: Sequence[Listener] = (), verbose: bool = False,
                 on_submitted: Callable[[Store, list[Submitted]], object] | None = None) -> list[JobView]:
    """Submit `requests` without a broker, synthesize them in-process, return their final views.
    `listeners` are added to the in-process worker (benchmarks read memory after each job with one);
    `verbose`: every warning in the results table; `on_submitted` is called once the jobs are stored
    (`run` records its books there)."""
    store = open_store(settings.database_url)
    submitted = submit(requests, settings, store, publisher=None, force=force)
    if on_submitted is not None:
        on_submitted(store, submitted)
    views = synthesize_stored([s.id for s in submitted], settings, env, device=device, precision=precision,
                              show_progress=show_progress, quiet=quiet, inference_runtime=inference_runtime,
                              threads=threads, listeners=listeners)
    if not quiet:
        Console().print(jobs_table(views, verbose=verbose, chunks=False, title="results"))
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
    make (a resumed job has fewer). Without `show_progress` (stdout is not a terminal), progress is a line on
    stderr every 15 s instead (nothing when the console is quiet)."""
    chunks_total = sum(v.chunks_total - v.chunks_done for v in todo)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=not show_progress) as progress:
        bar = progress.add_task(f"synthesizing {len(todo)} job(s)", total=chunks_total)
        runtime.add_listener(_ProgressBar(progress, bar) if show_progress else _ProgressLines(console, todo))
        for outcome in runtime.run_delivery([view.id for view in todo]) if todo else []:
            if outcome.status is None:
                console.print(f"job {outcome.job_id}: {outcome.detail}")
