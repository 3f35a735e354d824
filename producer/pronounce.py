"""Pronunciation fixed once for a whole book (or one job): a lexicon entry added to every chapter, and only
the chunks whose spoken text changes synthesized again.

A book's chapters are the jobs sharing its `group_id`. Each finished chapter that says the word is
re-rendered by `producer.rerender` with its own lexicon plus the new entry, queued with just its changed
chunks; a chapter that never says it is left as it is. Chapters still
queued or running are refused as a whole (their chunks are being cut or made with the old lexicon; the
user applies the fix once they are done), and failed or cancelled ones are left alone (they have no audio
to correct; the user stopped them or retries them).

The preview sentence is the first sentence of a chapter's text in which the entry matches, by the
lexicon's own rules (whole words, case) so that what is previewed is what the re-render changes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import select

from producer.chunks import split_chunks
from producer.lexicon import Entry, Lexicon, parse_lexicon
from producer.rerender import rerender
from schemas.db import Store
from schemas.errors import InvalidInput, JobNotFound
from schemas.job_options import JobOptions
from schemas.settings import ProducerSettings
from schemas.status import JobStatus
from schemas.tables import Chunk, Job

MAX_WORD_CHARS = 100
MAX_SAY_CHARS = 200
PREVIEW_MAX_CHARS = 400  # one sentence, cut at a clause if it is longer: the preview stays a second or two
_PARAGRAPH = re.compile(r"\n\s*")


@dataclass(frozen=True, slots=True)
class Pronounced:
    """What a pronunciation fix queued: each job put back in the queue with how many of its chunks will be
    synthesized again, in the order given."""

    redone: tuple[tuple[str, int], ...]

    @property
    def job_ids(self) -> list[str]:
        return [job_id for job_id, _ in self.redone]

    @property
    def jobs(self) -> int:
        return len(self.redone)

    @property
    def chunks(self) -> int:
        return sum(n for _, n in self.redone)


def checked_entry(word: str, say: str) -> Entry:
    """The lexicon entry `word` -> `say`, checked as a lexicon file's line is.

    Raises:
        InvalidInput: an empty or over-long word or saying, a TAB or line break in either, unbalanced `[[ ]]`.
    """
    word, say = word.strip(), say.strip()
    if len(word) > MAX_WORD_CHARS or len(say) > MAX_SAY_CHARS:
        raise InvalidInput(f"a word is at most {MAX_WORD_CHARS} characters and its saying at most {MAX_SAY_CHARS}")
    if any(c in word + say for c in "\t\r\n"):
        raise InvalidInput("the word and its saying are one line each, without TAB")
    entries = list(parse_lexicon(f"{word}\t{say}", "the entry").entries.values())
    if not entries:  # a word starting with `#` reads as a comment line
        raise InvalidInput("the word must not be empty or start with #")
    return entries[0]


def with_entries(options: dict[str, object] | None, entries: Sequence[Entry]) -> dict[str, str]:
    """A job's own lexicon (from its stored options) with `entries` added, each replacing the same word's."""
    own = dict(JobOptions.from_stored(options).lexicon)
    own.update((e.word, e.replacement) for e in entries)
    return own


def pronounce(store: Store, job_ids: list[str], entries: Sequence[Entry], settings: ProducerSettings,
              publish: Callable[[list[str]], None]) -> Pronounced:
    """Add `entries` to each of `job_ids` (a book's chapters, or one job) and re-render the finished ones,
    redoing only the chunks whose spoken text changes; `publish` is called with each job as soon as it is
    queued again (so a refusal part way through leaves no queued job unannounced).

    Raises:
        InvalidInput: one of the jobs is still queued or running (nothing is changed then), or a re-render
            is refused (see `producer.rerender.rerender`).
    """
    jobs = _jobs(store, job_ids)
    busy = [j.id for j in jobs if not j.status.is_terminal]
    if busy:
        raise InvalidInput(f"{len(busy)} of {len(jobs)} chapters are still being made (first: {busy[0]}); "
                           "fix pronunciations once they have finished, or cancel them")
    redone: list[tuple[str, int]] = []
    for job in jobs:
        if job.status != JobStatus.SUCCEEDED or not _says(store, job, entries):
            continue  # failed or cancelled: no audio to correct (a retry redoes it all); or it never says them
        done = rerender(store, job.id, settings, lexicon=with_entries(job.options, entries))
        if done.queued:
            publish([job.id])
            redone.append((job.id, done.chunks_redone))
    return Pronounced(tuple(redone))


@dataclass(frozen=True, slots=True)
class _JobRow:
    id: str
    status: JobStatus
    options: dict[str, object] | None


def _says(store: Store, job: _JobRow, entries: Sequence[Entry]) -> bool:
    """Whether the job says a word of `entries`: one matches its spoken text (its chunks, normalized, under
    its lexicon), or its own lexicon already has an entry for the word (its text then says the old
    replacement). A chapter that never says the word is left as it is: given the entry it would only record
    it, and warn that the entry matches nothing."""
    own = {word for word, _ in JobOptions.from_stored(job.options).lexicon}
    if any(e.word in own for e in entries):
        return True
    with store.read() as session:
        spoken = "".join(session.scalars(select(Chunk.text).where(Chunk.job_id == job.id).order_by(Chunk.idx)))
    return any(span.entry is not None for span in Lexicon(entries).spans(spoken))


def _jobs(store: Store, job_ids: list[str]) -> list[_JobRow]:
    with store.read() as session:
        rows = {r.id: r for r in session.execute(select(Job.id, Job.status, Job.options)
                                                 .where(Job.id.in_(job_ids)))}
    missing = [j for j in job_ids if j not in rows]
    if missing:
        raise JobNotFound(f"no such job: {missing[0]}")
    return [_JobRow(j, JobStatus(rows[j].status), rows[j].options) for j in job_ids]


def preview_sentence(text: str, entry: Entry) -> str:
    """The first sentence of `text` in which `entry` matches (as the lexicon matches: whole word, case).

    Raises:
        InvalidInput: the word is nowhere in the text.
    """
    lexicon = Lexicon([entry])
    for paragraph in _PARAGRAPH.split(text):
        flat = " ".join(paragraph.split())  # one space between words: split_chunks cuts sentences then
        at = _first_match(lexicon, flat)
        if at is None:
            continue
        start = 0
        for chunk in split_chunks(flat, PREVIEW_MAX_CHARS):
            if start <= at < start + len(chunk.text):
                return chunk.text.strip()
            start += len(chunk.text)
    raise InvalidInput(f"{entry.word!r} is not in this chapter's text (whole words; an entry in lower case "
                       "matches any case)")


def _first_match(lexicon: Lexicon, text: str) -> int | None:
    at = 0
    for span in lexicon.spans(text):
        if span.entry is not None:
            return at
        at += len(span.source)
    return None


def job_text(store: Store, job_id: str) -> tuple[str | None, str]:
    """(title, stored input text) of a job.

    Raises:
        JobNotFound: no such job.
    """
    with store.read() as session:
        row = session.execute(select(Job.title, Job.text).where(Job.id == job_id)).first()
    if row is None:
        raise JobNotFound(f"no such job: {job_id}")
    return row.title, row.text
