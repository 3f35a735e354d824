"""`ttsfleet rerender JOB_ID [--lexicon FILE] [--text FILE] [--say WORD=SAYING]`: say a finished job again,
redoing only the chunks whose spoken text changes.

By default the job is synthesized here, in this process, as `ttsfleet run` does (no broker needed);
`--queue` instead hands it to the fleet's workers through the broker and returns at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

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
    environ,
    print_json,
    stdout_is_terminal,
)
from producer.cli.jobs import LexiconOpt, status_table
from producer.cli.pronounce import SayOpt, with_said
from schemas.errors import InvalidInput
from schemas.settings import ProducerSettings
from schemas.status import JobStatus

if TYPE_CHECKING:
    from schemas.db import Store

TextOpt = Annotated[Path | None, typer.Option("--text", help="the corrected text (.txt or .ssml, UTF-8)")]
QueueOpt = Annotated[bool, typer.Option("--queue", help="publish to the fleet's workers and return, "
                                                        "instead of synthesizing in this process")]


def rerender(job_id: Annotated[str, typer.Argument(help="a finished, failed or cancelled job, or a book")],
             lexicon: LexiconOpt = None, text: TextOpt = None, queue: QueueOpt = False, as_json: JsonOpt = False,
             broker_url: BrokerUrlOpt = None, database_url: DatabaseUrlOpt = None, output_dir: OutputDirOpt = None,
             device: DeviceOpt = None, precision: PrecisionOpt = None, runtime: RuntimeOpt = None,
             threads: ThreadsOpt = None, voice_dirs: VoiceDirsOpt = None, say: SayOpt = None) -> None:
    """Re-render a job under a new lexicon and/or a corrected text; unchanged chunks keep their audio.
    Prints the job as `status` does, plus `chunks_redone`. A book id re-renders every chapter under the
    lexicon; its .m4b is built again once they succeed."""
    from producer.cli.books import book_ids
    from producer.lexicon import read_lexicon_file
    from producer.rerender import rerender as rerender_job
    from schemas.db import open_store

    settings = ProducerSettings.from_env(environ(), broker_url=broker_url, database_url=database_url,
                                         output_dir=output_dir, voice_dirs=voice_dirs)
    entries = None
    if lexicon is not None:
        entries = {w: e.replacement for w, e in read_lexicon_file(lexicon).entries.items()}
    new_text = _read_text(text) if text is not None else None
    store = open_store(settings.database_url)
    if say:  # each job's own lexicon plus the entries (producer/cli/pronounce.py); a book is done there
        run = {"device": device, "precision": precision, "inference_runtime": runtime, "threads": threads}
        entries = with_said(store, job_id, say, settings, replacing=lexicon or text, queue=queue, as_json=as_json,
                            run=run, publish=lambda chapter: _publish(chapter, settings, store), table=status_table)
        if entries is None:
            return
    if book_ids(store, [job_id]):
        if new_text is not None:
            raise InvalidInput("--text corrects one job; give a chapter's job id (ttsfleet status BOOK_ID lists them)")
        _rerender_book(store, job_id, settings, entries, queue=queue, as_json=as_json, device=device,
                       precision=precision, runtime=runtime, threads=threads)
        return
    done = rerender_job(store, job_id, settings, lexicon=entries, text=new_text)
    view = done.view
    if done.queued and queue:
        _publish(job_id, settings, store)
    elif done.queued:
        from producer.cli.embedded import synthesize_stored

        [view] = synthesize_stored([job_id], settings.model_copy(update={"voice": view.voice}), environ(),
                                   device=device, precision=precision, inference_runtime=runtime, threads=threads,
                                   show_progress=stdout_is_terminal() and not as_json, quiet=as_json)
    if as_json:
        print_json([view.model_dump(mode="json") | {"chunks_redone": done.chunks_redone}])
    else:
        Console().print(status_table([view]))
        typer.echo(f"chunks redone: {done.chunks_redone} of {view.chunks_total}"
                   + ("" if done.queued else " (nothing the voice says changed)"))
    if not queue and view.status != JobStatus.SUCCEEDED:
        raise typer.Exit(1)


def _rerender_book(store: Store, book_id: str, settings: ProducerSettings, entries: dict[str, str] | None, *,
                   queue: bool, as_json: bool, device: str | None, precision: str | None, runtime: str | None,
                   threads: int | None) -> None:
    """Every chapter of the book under `entries`: those whose spoken text changes are queued (only their
    changed chunks), then synthesized here or, with `queue`, by the fleet; the worker that finishes the last
    builds the .m4b again."""
    from producer.books import book_chapter_ids
    from producer.rerender import rerender as rerender_job

    redone: dict[str, int] = {}
    views = {}
    for chapter in book_chapter_ids(store, book_id):
        done = rerender_job(store, chapter, settings, lexicon=entries)
        redone[chapter], views[chapter] = done.chunks_redone, done.view
    queued = [c for c, n in redone.items() if n and views[c].status == JobStatus.QUEUED]
    if queued and queue:
        for chapter in queued:
            _publish(chapter, settings, store)
    elif queued:
        from producer.cli.embedded import synthesize_stored

        voice = views[queued[0]].voice
        for view in synthesize_stored(queued, settings.model_copy(update={"voice": voice}), environ(), device=device,
                                      precision=precision, inference_runtime=runtime, threads=threads,
                                      show_progress=stdout_is_terminal() and not as_json, quiet=as_json):
            views[view.id] = view
    if as_json:
        print_json([v.model_dump(mode="json") | {"chunks_redone": redone[c]} for c, v in views.items()])
    else:
        Console().print(status_table(list(views.values())))
        typer.echo(f"chunks redone: {sum(redone.values())} in {len(queued)} of {len(views)} chapter(s)")
    if not queue and any(v.status != JobStatus.SUCCEEDED for v in views.values()):
        raise typer.Exit(1)


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8").removeprefix("\ufeff")
    except OSError as err:
        raise InvalidInput(f"{path}: cannot read the text: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise InvalidInput(f"{path}: not valid UTF-8 at byte offset {err.start}; save the file as UTF-8") from err


def _publish(job_id: str, settings: ProducerSettings, store: object) -> None:
    from producer.submit import publish_stored
    from schemas.broker import Publisher

    publisher = Publisher(settings.broker_url)
    try:
        publish_stored([job_id], store, publisher)  # type: ignore[arg-type]
    finally:
        publisher.close()
