"""`ttsfleet run | submit | status | wait | cancel`: putting jobs in and following them."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console, RenderableType

from producer.book_options import BookOptions, Matter, Notes
from producer.chapters import BookRead
from producer.cli.common import (
    BrokerUrlOpt,
    DatabaseUrlOpt,
    DeviceOpt,
    JsonOpt,
    OutputDirOpt,
    PrecisionOpt,
    RuntimeOpt,
    ThreadsOpt,
    VoiceDirsOpt,
    VoiceOpt,
    environ,
    err_console,
    print_json,
    stdout_is_terminal,
)
from producer.dialogue import parse_voice_roles
from schemas.messages import JobRequest, JobView
from schemas.settings import ProducerSettings
from schemas.status import AudioFormat, JobStatus

if TYPE_CHECKING:
    from schemas.db import Store

InputsArg = Annotated[list[str], typer.Argument(
    help=".txt, .md, .ssml, .epub or .jsonl files, folders, or - for stdin")]
FormatOpt = Annotated[AudioFormat, typer.Option("--format", help="audio format")]
PriorityOpt = Annotated[int, typer.Option("--priority", min=0, max=9, help="0 (lowest) to 9 (most urgent)")]
ForceOpt = Annotated[bool, typer.Option("--force", help="make new jobs even if identical ones exist")]
LoudnessOpt = Annotated[float | None, typer.Option("--loudness", min=-70, max=-5,
                                                   help="normalize each job's audio to this loudness, LUFS (e.g. -18)")]
LexiconOpt = Annotated[Path | None, typer.Option("--lexicon", help="pronunciation lexicon: WORD<TAB>REPLACEMENT "
                                                   "or WORD<TAB>[[ phonemes ]] per line (docs/text.md)")]
SpeedOpt = Annotated[float | None, typer.Option(
    "--speed", min=0.25, max=4.0, help="speaking rate, 0.25-4.0 (2.0: twice as fast) [default: the voice's]")]
JobIdsArg = Annotated[list[str], typer.Argument(help="job ids or book ids")]
# How books are read (EPUB): see docs/text.md "Books"
MatterOpt = Annotated[Matter, typer.Option("--matter", help="body: skip imprint, colophon, contents, index, "
                                                          "notes... (each reported on stderr); all: read everything")]
NotesOpt = Annotated[Notes, typer.Option("--notes", help="skip notes, or read each after its paragraph")]
CaptionsOpt = Annotated[bool, typer.Option("--captions", help="read figure captions and image descriptions")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="every warning of each job in the table "
                                                                  "[default: the count and the first]")]
ChaptersOpt = Annotated[str | None, typer.Option("--chapters", help="only these chapters of a book: numbers from "
                                                              "--list-chapters (1-3,7) or a title to match")]
ListChaptersOpt = Annotated[bool, typer.Option("--list-chapters", help="print each book's chapters and what "
                                                                       "would be skipped; synthesize nothing")]


def _settings(**overrides: object) -> ProducerSettings:
    return ProducerSettings.from_env(environ(), **overrides)


def _requests(inputs: list[str], voice: str | None, fmt: AudioFormat, priority: int,
              loudness: float | None, book: BookOptions, lexicon: Path | None = None,
              speed: float | None = None, reads: list[BookRead] | None = None) -> list[JobRequest]:
    from producer.inputs import read_inputs
    from producer.lexicon import read_lexicon_file

    requests = read_inputs(inputs, sys.stdin, voice=voice, format=fmt, priority=priority, book=book,
                           on_skip=lambda skipped: typer.echo(str(skipped), err=True),
                           on_book=reads.append if reads is not None else None)
    if loudness is not None:
        requests = [r.model_copy(update={"loudness_lufs": loudness}) for r in requests]
    if speed is not None:  # a JSONL line's own speed wins
        requests = [r if r.speed is not None else r.model_copy(update={"speed": speed}) for r in requests]
    if lexicon is not None:  # a JSONL line's own entries win over the file's
        entries = {w: e.replacement for w, e in read_lexicon_file(lexicon).entries.items()}
        requests = [r.model_copy(update={"lexicon": entries | (r.lexicon or {})}) for r in requests]
    return requests


def submit(inputs: InputsArg, voice: VoiceOpt = None, fmt: FormatOpt = AudioFormat.WAV,
           priority: PriorityOpt = 5, force: ForceOpt = False, loudness: LoudnessOpt = None,
           lexicon: LexiconOpt = None, speed: SpeedOpt = None, as_json: JsonOpt = False,
           broker_url: BrokerUrlOpt = None, database_url: DatabaseUrlOpt = None,
           matter: MatterOpt = Matter.BODY, notes: NotesOpt = Notes.SKIP, captions: CaptionsOpt = False,
           voice_dirs: VoiceDirsOpt = None, chapters: ChaptersOpt = None, list_only: ListChaptersOpt = False) -> None:
    """Validate INPUTs and enqueue one job per text (per chapter for EPUB); prints the job ids (and, on
    stderr, each book's id)."""
    from producer.cli.books import list_chapters, record
    from producer.submit import submit as submit_jobs
    from schemas.broker import Publisher
    from schemas.db import open_store

    settings = _settings(broker_url=broker_url, database_url=database_url, voice_dirs=voice_dirs)
    book = BookOptions(matter, notes, captions, chapters=chapters)
    if list_only:
        list_chapters(inputs, voice, book, as_json)
        return
    reads: list[BookRead] = []
    requests = _requests(inputs, voice, fmt, priority, loudness, book, lexicon, speed, reads)
    store = open_store(settings.database_url)
    publisher = Publisher(settings.broker_url, settings.queue)
    try:
        results = submit_jobs(requests, settings, store, publisher=publisher, force=force,
                              processes=os.cpu_count() or 1)
    finally:
        publisher.close()
    book_of = record(store, reads, requests, results, voice=voice or settings.voice, fmt=fmt, book=book)
    if as_json:
        print_json([{"id": r.id, "status": r.status.value, "created": r.created, "chunks_total": r.chunks_total,
                     "book_id": book_of.get(r.id)} for r in results])
        return
    for r in results:
        note = "" if r.created else f"  (already submitted: {r.status.value})"
        typer.echo(f"{r.id}{note}")


StatusFilterOpt = Annotated[JobStatus | None, typer.Option("--status", help="only jobs in this state")]
SinceOpt = Annotated[str | None, typer.Option(
    "--since", help="only jobs submitted at or after T: ISO date/time (UTC unless it has an offset) or an age: 24h")]
LimitOpt = Annotated[int, typer.Option("--limit", help="at most this many jobs, newest first (1-1000)")]
OffsetOpt = Annotated[int, typer.Option("--offset", help="skip this many (the next page: --offset 100)")]


def status(job_ids: Annotated[list[str] | None, typer.Argument(help="job ids [default: the newest jobs]")] = None,
           state: StatusFilterOpt = None, since: SinceOpt = None, limit: LimitOpt = 100, offset: OffsetOpt = 0,
           as_json: JsonOpt = False, database_url: DatabaseUrlOpt = None, output_dir: OutputDirOpt = None,
           verbose: VerboseOpt = False) -> None:
    """Job state and progress; without job ids, the newest jobs, filtered and paged. With an object store
    as the output, `--json` adds presigned `audio_url`/`book_url`."""
    from producer.books import expand_ids
    from producer.cli.books import book_ids, print_status
    from producer.jobs import JobFilter, job_views
    from producer.results import with_audio_urls
    from producer.stats import parse_time
    from schemas.db import open_store

    settings = _settings(database_url=database_url, output_dir=output_dir)
    where = JobFilter(status=state, since=parse_time(since) if since else None, limit=limit, offset=offset)
    store = open_store(settings.database_url)
    if job_ids and not as_json and book_ids(store, job_ids):
        print_status(store, job_ids, lambda v: status_table(v, verbose))  # each book's line, then its chapters
        return
    views = with_audio_urls(job_views(store, expand_ids(store, job_ids or []), where=where), settings)
    if as_json:
        print_json([v.model_dump(mode="json") for v in _with_eta(store, views)])
    else:
        Console().print(status_table(views, verbose))


def _with_eta(store: Store, views: list[JobView]) -> list[JobView]:
    """Views with `eta_s` for the jobs not ended yet (producer/eta.py)."""
    from producer.eta import fleet_throughput, job_eta

    if all(v.status.is_terminal for v in views):
        return views
    throughput = fleet_throughput(store)
    return [v if v.status.is_terminal else v.model_copy(update={"eta_s": job_eta(store, v.id, throughput).eta_s})
            for v in views]


def wait(job_ids: JobIdsArg,
         timeout: Annotated[float | None, typer.Option("--timeout", help="seconds [default: no limit]")] = None,
         as_json: JsonOpt = False, database_url: DatabaseUrlOpt = None, verbose: VerboseOpt = False) -> None:
    """Block until the jobs are done (a progress bar on a terminal); non-zero exit if any failed or timed out.
    A book id waits for every chapter of the book."""
    from producer.books import expand_ids
    from producer.jobs import job_views, wait_for
    from schemas.db import open_store

    store = open_store(_settings(database_url=database_url).database_url)
    job_ids = expand_ids(store, job_ids)
    job_views(store, job_ids)  # unknown ids fail now, not after a wait
    if stdout_is_terminal() and not as_json:
        views, timed_out = _wait_with_progress(store, job_ids, timeout)
    else:
        views, timed_out = wait_for(store, job_ids, timeout_s=timeout)
    _print_outcome(views, as_json, verbose)
    if timed_out:
        err_console.print(f"error: timed out after {timeout:g} s")
        raise typer.Exit(1)
    if any(v.status != JobStatus.SUCCEEDED for v in views):
        raise typer.Exit(1)


def cancel(job_ids: JobIdsArg, as_json: JsonOpt = False, database_url: DatabaseUrlOpt = None) -> None:
    """Cancel queued or running jobs (a running job stops at its next chunk boundary); a book id: every
    unfinished chapter of the book."""
    from producer.books import expand_ids
    from producer.jobs import cancel_jobs
    from schemas.db import open_store

    store = open_store(_settings(database_url=database_url).database_url)
    views = cancel_jobs(store, expand_ids(store, job_ids))
    _print_outcome(views, as_json)


def run(inputs: InputsArg, voice: VoiceOpt = None, fmt: FormatOpt = AudioFormat.WAV, priority: PriorityOpt = 5,
        force: ForceOpt = False, loudness: LoudnessOpt = None, lexicon: LexiconOpt = None, speed: SpeedOpt = None,
        as_json: JsonOpt = False,
        database_url: DatabaseUrlOpt = None,
        output_dir: OutputDirOpt = None, device: DeviceOpt = None, precision: PrecisionOpt = None,
        matter: MatterOpt = Matter.BODY, notes: NotesOpt = Notes.SKIP, captions: CaptionsOpt = False,
        voice_dirs: VoiceDirsOpt = None, runtime: RuntimeOpt = None, threads: ThreadsOpt = None,
        verbose: VerboseOpt = False, chapters: ChaptersOpt = None, list_only: ListChaptersOpt = False) -> None:
    """Embedded mode: submit, synthesize in this process (no broker), wait, print results and stats."""
    from producer.cli.books import list_chapters, record
    from producer.cli.embedded import run_embedded

    env = environ()
    roles = parse_voice_roles(voice)  # narrator=A,dialogue=B: the in-process worker starts with A's model
    settings = _settings(database_url=database_url, output_dir=output_dir,
                         voice=roles.narrator if roles else voice, voice_dirs=voice_dirs)
    book = BookOptions(matter, notes, captions, chapters=chapters)
    if list_only:
        list_chapters(inputs, voice, book, as_json)
        return
    reads: list[BookRead] = []
    requests = _requests(inputs, voice, fmt, priority, loudness, book, lexicon, speed, reads)
    views = run_embedded(requests, settings, env, device=device, precision=precision, inference_runtime=runtime,
                         threads=threads, force=force,
                         show_progress=stdout_is_terminal() and not as_json, quiet=as_json, verbose=verbose,
                         on_submitted=lambda store, results: record(store, reads, requests, results,
                                                                    voice=voice or settings.voice, fmt=fmt,
                                                                    book=book))
    if as_json:
        print_json([v.model_dump(mode="json") for v in views])
    if any(v.status != JobStatus.SUCCEEDED for v in views):
        raise typer.Exit(1)


def retry(job_ids: JobIdsArg, as_json: JsonOpt = False, broker_url: BrokerUrlOpt = None,
          database_url: DatabaseUrlOpt = None) -> None:
    """Re-queue failed jobs (attempts counted afresh, every chunk synthesized again, earlier errors kept in status);
    a book id: the book's failed chapters."""
    from producer.cli.books import failed_chapters
    from producer.jobs import job_views, retry_jobs
    from producer.submit import publish_stored
    from schemas.broker import Publisher
    from schemas.db import open_store

    settings = _settings(broker_url=broker_url, database_url=database_url)
    store = open_store(settings.database_url)
    ids = retry_jobs(store, failed_chapters(store, job_ids))
    publisher = Publisher(settings.broker_url)
    try:
        publish_stored(ids, store, publisher)
    finally:
        publisher.close()
    _print_outcome(job_views(store, ids), as_json)


def status_table(views: list[JobView], verbose: bool = False) -> RenderableType:
    from producer.cli.tables import jobs_table

    return jobs_table(views, verbose=verbose)


def _print_outcome(views: list[JobView], as_json: bool, verbose: bool = False) -> None:
    if as_json:
        print_json([v.model_dump(mode="json") for v in views])
    else:
        Console().print(status_table(views, verbose))


def _wait_with_progress(store: object, job_ids: list[str], timeout: float | None) -> tuple[list[JobView], bool]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from producer.jobs import wait_for

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console) as progress:
        bars = {j: progress.add_task(j, total=None) for j in job_ids}

        def update(views: list[JobView]) -> None:
            for v in views:
                progress.update(bars[v.id], completed=v.chunks_done, total=v.chunks_total or None,
                                description=f"{v.id} {v.status.value}")

        return wait_for(store, job_ids, timeout_s=timeout, on_poll=update)  # type: ignore[arg-type]
