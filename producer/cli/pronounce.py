"""`ttsfleet rerender JOB_OR_BOOK --say WORD=SAYING`: a word said another way, added to the job's own
lexicon (each chapter's, for a book) rather than replacing it, with only the chunks that say it redone."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from producer.cli.common import environ, print_json, stdout_is_terminal
from producer.lexicon import Entry
from schemas.errors import InvalidInput
from schemas.settings import ProducerSettings
from schemas.status import JobStatus

if TYPE_CHECKING:
    from rich.console import RenderableType

    from schemas.db import Store
    from schemas.messages import JobView

SayOpt = Annotated[list[str] | None, typer.Option(
    "--say", metavar="WORD=SAYING", help="add this entry to the job's own lexicon (for a book, that of each "
                                         "chapter that says it): WORD said as SAYING (text or [[ phonemes ]]); "
                                         "repeatable")]


def with_said(store: Store, target: str, say: list[str], settings: ProducerSettings, *, replacing: object,
              queue: bool, as_json: bool, run: Mapping[str, Any], publish: Callable[[str], None],
              table: Callable[[list[JobView]], RenderableType]) -> dict[str, str] | None:
    """`rerender TARGET --say ...`: for a job, the lexicon to re-render it with (its own plus the entries);
    for a book, every chapter that says a word re-rendered here (`say_in_book`) and None.

    Raises:
        InvalidInput: `replacing` (--lexicon or --text given too), or a bad `--say`.
    """
    from producer.cli.books import book_ids

    if replacing:
        raise InvalidInput("--say adds to the job's own lexicon: give --lexicon or --text in a run of their own")
    entries = said_entries(say)
    if not book_ids(store, [target]):
        return own_lexicon_with(store, target, entries)
    say_in_book(store, target, entries, settings, queue=queue, as_json=as_json, publish=publish, table=table, run=run)
    return None


def said_entries(values: list[str]) -> list[Entry]:
    """`--say` values as checked lexicon entries.

    Raises:
        InvalidInput: a value without `=`, or an entry a lexicon file could not hold.
    """
    from producer.pronounce import checked_entry

    entries = []
    for value in values:
        word, equals, say = value.partition("=")
        if not equals:
            raise InvalidInput(f"--say {value!r}: expected WORD=SAYING, e.g. --say Tilney=Tillnee")
        entries.append(checked_entry(word, say))
    return entries


def own_lexicon_with(store: Store, job_id: str, entries: list[Entry]) -> dict[str, str]:
    """The job's own lexicon with `entries` added (what `rerender --say` re-renders one job with).

    Raises:
        JobNotFound: no such job.
    """
    from sqlalchemy import select

    from producer.pronounce import with_entries
    from schemas.errors import JobNotFound
    from schemas.tables import Job

    with store.read() as session:
        found = session.execute(select(Job.options).where(Job.id == job_id)).first()
    if found is None:
        raise JobNotFound(f"no such job: {job_id}")
    return with_entries(found.options, entries)


def say_in_book(store: Store, book_id: str, entries: list[Entry], settings: ProducerSettings, *, queue: bool,
                as_json: bool, publish: Callable[[str], None], table: Callable[[list[JobView]], RenderableType],
                run: Mapping[str, Any]) -> None:
    """Every finished chapter of the book that says a word of `entries`, with them added to its lexicon,
    queued with only its changed chunks, then published (`queue`) or synthesized here with the `run`
    options; the .m4b is built again once they succeed. Prints the chapters as `status` does, with
    `chunks_redone`."""
    from producer.books import book_chapter_ids
    from producer.jobs import job_views
    from producer.pronounce import pronounce

    def published(ids: list[str]) -> None:
        for job_id in ids if queue else ():
            publish(job_id)

    chapters = book_chapter_ids(store, book_id)
    done = pronounce(store, chapters, entries, settings, publish=published)
    views = {v.id: v for v in job_views(store, chapters)}
    if done.job_ids and not queue:
        from producer.cli.embedded import synthesize_stored

        voice = views[done.job_ids[0]].voice
        for view in synthesize_stored(done.job_ids, settings.model_copy(update={"voice": voice}), environ(),
                                      show_progress=stdout_is_terminal() and not as_json, quiet=as_json,
                                      **run):
            views[view.id] = view
    redone = dict(done.redone)
    if as_json:
        print_json([v.model_dump(mode="json") | {"chunks_redone": redone.get(c, 0)} for c, v in views.items()])
    else:
        Console().print(table(list(views.values())))
        typer.echo(f"chunks redone: {done.chunks} in {done.jobs} of {len(views)} chapter(s)")
    if not queue and any(views[c].status != JobStatus.SUCCEEDED for c in done.job_ids):
        raise typer.Exit(1)
