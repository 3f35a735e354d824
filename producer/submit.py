"""Turning validated job requests into stored jobs (text and chunks in SQL) and publishing their ids.

Everything is validated before anything is written; if publishing fails, the jobs just created are
removed again, so a failed submit leaves nothing behind.
"""

from __future__ import annotations

import base64
import hashlib
import json
import multiprocessing as mp
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import cache, partial
from pathlib import Path

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from producer.chunks import TextChunk
from producer.dialogue import dialogue_chunks, parse_voice_roles
from producer.lexicon import Entry, Lexicon, voice_lexicon
from producer.naming import IN_LIST_MAX, assign_names, output_stem
from producer.spoken import Spoken, spoken_chunks
from producer.ssml import is_ssml
from schemas.backlog import live_workers
from schemas.broker import Publisher
from schemas.db import Store
from schemas.errors import BrokerUnavailable, InvalidInput, RetryableError, UnknownVoice
from schemas.messages import JobRequest
from schemas.scheduling import SHORT_JOB_CHUNKS, jobs_per_message
from schemas.settings import ProducerSettings
from schemas.status import JobStatus
from schemas.tables import Chunk, Job, utcnow
from schemas.voices import VoiceInfo, VoiceKind, resolve_voice_name

JOBS: Table = Job.__table__  # type: ignore[assignment]
CHUNKS: Table = Chunk.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Submitted:
    """A submitted job: `created` is False when an identical job already existed (idempotency)."""

    id: str
    status: JobStatus
    created: bool
    chunks_total: int


@dataclass(frozen=True, slots=True)
class _Prepared:
    job: dict[str, object]
    chunks: list[dict[str, object]]
    stem: str  # the output name before its extension and any collision suffix


def submit(requests: Sequence[JobRequest], settings: ProducerSettings, store: Store, *,
           publisher: Publisher | None, force: bool = False, tenant: str | None = None,
           processes: int = 1) -> list[Submitted]:
    """Store `requests` as jobs and publish the new ones (no publisher: embedded mode, nothing published).
    `tenant` (an API key's id, from the HTTP service) scopes idempotency: the same text from two tenants is
    two jobs, so neither learns the other's job id; it is kept in the job's options. `processes`: forked
    processes a large batch is prepared in (not for a caller with threads of its own, such as the service).

    Raises:
        InvalidInput: a request has nothing to speak, is too long, or reuses a job id for other text.
        RetryableError: concurrent submissions kept conflicting.
        UnknownVoice: a request names a voice that cannot be loaded.
        BrokerUnavailable: publishing failed; the jobs created by this call were removed again.
    """
    if not requests:
        raise InvalidInput("no input: nothing to submit")
    nonce = uuid.uuid4().hex if force else None  # one per call: a forced book stays one book
    prepared = _prepare_all(requests, settings, nonce, tenant, processes)
    results, new_ids = _store(prepared, store)
    if publisher is not None and new_ids:
        _publish(new_ids, prepared, settings, store, publisher)
    return results


PARALLEL_FROM = 1_000  # requests from which preparing them in several processes pays for its forks and pickling


def _prepare_all(requests: Sequence[JobRequest], settings: ProducerSettings, nonce: str | None,
                 tenant: str | None, processes: int) -> list[_Prepared]:
    """Every request prepared, in order: a large batch shared out over `processes` forked processes (this
    per-text Python is over half of a bulk submit). Raises the first error in request order, as one
    process would."""
    if processes < 2 or len(requests) < PARALLEL_FROM or "fork" not in mp.get_all_start_methods():
        return [_prepare(request, settings, nonce, tenant) for request in requests]
    prepare = partial(_prepare, settings=settings, nonce=nonce, tenant=tenant)
    with ProcessPoolExecutor(processes, mp_context=mp.get_context("fork")) as pool:
        return list(pool.map(prepare, requests, chunksize=-(-len(requests) // (4 * processes))))


def _digest(fields: Mapping[str, object]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _prepare(request: JobRequest, settings: ProducerSettings, nonce: str | None,
             tenant: str | None = None) -> _Prepared:
    where = request.source or "input"
    if len(request.text) > settings.max_text_chars:
        raise InvalidInput(f"{where}: text has {len(request.text):,} characters, above the limit of "
                           f"{settings.max_text_chars:,} (TTSFLEET_MAX_TEXT_CHARS); split it into files")
    plan = plan_speech(request.text, request.voice, request.lexicon, request.speed, settings, where)
    voice, dialogue, spoken = plan.voice, plan.dialogue, plan.spoken
    options: dict[str, object] = {"loudness_lufs": request.loudness_lufs} if request.loudness_lufs is not None else {}
    options |= plan.options
    if tenant is not None:  # part of the job's shape, so of its idempotency key (rerender keeps it)
        options["tenant"] = tenant
    # What shapes the audio, and the id a user gave: a change in any of them is a different job.
    shape = {"voice": voice.name, "format": request.format.value, **options,
             **({"dialogue": dialogue.name} if dialogue is not None else {}),
             **({"nonce": nonce} if nonce is not None else {})}
    key = job_key(request, shape)
    job_id = request.id or uuid.uuid4().hex[:20]
    group_id = None
    if request.group_title is not None:  # a book: its chapters share files only with the same shape
        group_id = _digest({"source": request.source, "book": request.group_title, **shape})[:16]
    job = {
        "id": job_id, "idempotency_key": key, "status": JobStatus.QUEUED, "priority": request.priority,
        "queue": settings.queue,
        "voice": voice.name, "format": request.format.value, "text": request.text, "source": request.source,
        "title": request.title, "group_id": group_id, "group_title": request.group_title,
        "group_index": request.group_index, "options": options | _book_metadata(request),
        "output_name": None, "warnings": list(spoken.warnings),
        "chars": spoken.chars, "chunks_total": len(spoken.chunks), "chunks_done": 0, "attempts": 0,
        "created_at": utcnow(), "published_at": utcnow(),  # removed again if its message cannot be sent
    }
    return _Prepared(job=job, chunks=chunk_rows(job_id, plan), stem=output_stem(request, job_id))


def job_key(request: JobRequest, shape: Mapping[str, object]) -> str:
    """The idempotency key: the text, what the user named the job, and what shapes its audio (`shape`:
    voice, format, loudness, speed, lexicon, dialogue voice)."""
    return _digest({"text": request.text, "title": request.title, "group": request.group_title,
                    "index": request.group_index, "id": request.id, **shape})


def chunk_rows(job_id: str, plan: SpeechPlan) -> list[dict[str, object]]:
    """The job's chunk rows; a chunk the dialogue voice or an SSML `<voice>` span says names it in `voice`
    (None: the job's voice); one in an SSML `<prosody rate>` span has its speed factor in `speed` (None: 1),
    which the worker multiplies by the job's; `written` is the written text it says, for subtitles."""
    dialogue = plan.dialogue.name if plan.dialogue is not None else None
    voices = plan.voices or (None,) * len(plan.spoken.chunks)
    speeds = plan.spoken.speeds or (None,) * len(plan.spoken.chunks)
    written = plan.spoken.written or (None,) * len(plan.spoken.chunks)
    return [{"job_id": job_id, "idx": i, "text": c.text, "written": shown, "break_after": c.break_after,
             "chars": len(c.text), "voice": dialogue if quoted else voice, "speed": speed}
            for i, (c, quoted, voice, speed, shown) in enumerate(zip(plan.spoken.chunks, plan.quoted, voices, speeds,
                                                                      written, strict=True))]


@dataclass(frozen=True, slots=True)
class SpeechPlan:
    """A job's voice (the narrator's with roles), its spoken chunks, which of them the dialogue voice says
    (`quoted`, one flag per chunk; `dialogue` None without roles), and the options that store its lexicon
    and speed. `voices`: per chunk, the canonical name of its SSML `<voice>` span's voice (None: the job's;
    empty: all the job's)."""

    voice: VoiceInfo
    spoken: Spoken
    options: dict[str, object]
    dialogue: VoiceInfo | None = None
    quoted: tuple[bool, ...] = ()
    voices: tuple[str | None, ...] = ()


def plan_speech(text: str, voice_name: str | None, lexicon: Mapping[str, str] | None, speed: float | None,
                settings: ProducerSettings, where: str) -> SpeechPlan:
    """Resolve the voice (an SSML `<voice name>` around the whole document when the job names none;
    `narrator=A,dialogue=B` for two voices), apply the voice's default lexicon under the job's own, and cut
    the chunks (an SSML `<voice>` span's chunks in its voice, each checked as the job's is).

    Raises:
        InvalidInput: nothing to speak, malformed SSML, a bad lexicon file in the voice's folder, SSML with
            narrator/dialogue voices, or two voices whose sample rates differ.
        UnknownVoice: the voice, or an SSML span's, cannot be loaded.
    """
    roles = parse_voice_roles(voice_name or settings.voice)
    voice = resolve_voice_name(roles.narrator if roles else voice_name or settings.voice,
                               voice_dirs=settings.voice_dir_list)
    own = Lexicon(Entry(w, r) for w, r in (lexicon or {}).items())
    span_voice = _span_voice_resolver(settings, where)

    def cut(info: VoiceInfo) -> Spoken:
        folder = Path(info.name) if info.kind == VoiceKind.FOLDER else None
        return spoken_chunks(text, language=info.language, lexicon=voice_lexicon(folder).merged(own),
                             max_chunk_chars=settings.max_chunk_chars, where=where,
                             language_of=lambda name: span_voice(name).language)

    dialogue = None
    if roles is not None:
        dialogue = resolve_voice_name(roles.dialogue, voice_dirs=settings.voice_dir_list)
        spoken, quoted = _with_roles(text, voice, dialogue, own, settings.max_chunk_chars, where)
    else:
        spoken = cut(voice)
        if spoken.voice is not None and voice_name is None:
            voice = resolve_voice_name(spoken.voice, voice_dirs=settings.voice_dir_list)
            spoken = cut(voice)
        quoted = tuple(False for _ in spoken.chunks)
    if not spoken.chunks:
        raise InvalidInput(f"{where}: nothing to speak")
    options: dict[str, object] = {}
    effective_speed = speed if speed is not None else spoken.speed
    if effective_speed is not None and effective_speed != 1.0:
        options["speed"] = effective_speed
    if own:
        options["lexicon"] = own.as_pairs()
    return SpeechPlan(voice=voice, spoken=spoken, options=options, dialogue=dialogue, quoted=quoted,
                      voices=_span_voices(spoken, voice, span_voice, where))


def _span_voice_resolver(settings: ProducerSettings, where: str) -> Callable[[str], VoiceInfo]:
    """Resolves an SSML `<voice name>` span's voice, each name once.

    Raises:
        UnknownVoice: the name cannot work (one line, naming the document and the tag).
    """
    @cache
    def span_voice(name: str) -> VoiceInfo:
        try:
            return resolve_voice_name(name, voice_dirs=settings.voice_dir_list)
        except UnknownVoice as err:
            raise UnknownVoice(f"{where}: SSML <voice name=\"{name}\">: {err}") from err

    return span_voice


def _span_voices(spoken: Spoken, voice: VoiceInfo, span_voice: Callable[[str], VoiceInfo],
                 where: str) -> tuple[str | None, ...]:
    """Per chunk, the canonical name of its SSML span's voice (None: the job's own).

    Raises:
        InvalidInput: a span's voice speaks at another sample rate than the job's.
    """
    names: list[str | None] = []
    for name in spoken.voices:
        info = span_voice(name) if name is not None else voice
        if voice.sample_rate_hz is not None and info.sample_rate_hz not in (None, voice.sample_rate_hz):
            raise InvalidInput(f"{where}: SSML <voice name=\"{name}\"> speaks at {info.sample_rate_hz} Hz and the "
                               f"job's voice at {voice.sample_rate_hz} Hz; a job's voices must share one sample rate")
        names.append(None if info.name == voice.name else info.name)
    return tuple(names) if any(n is not None for n in names) else ()


def _with_roles(text: str, narrator: VoiceInfo, dialogue: VoiceInfo, own: Lexicon, max_chars: int,
                where: str) -> tuple[Spoken, tuple[bool, ...]]:
    """Narrator and dialogue chunks, each span normalized in its voice's language, then the lexicon."""
    if is_ssml(text):
        raise InvalidInput(f"{where}: narrator/dialogue voices take plain text, not SSML")
    rates = {narrator.sample_rate_hz, dialogue.sample_rate_hz} - {None}
    if len(rates) > 1:
        raise InvalidInput(f"{where}: the narrator speaks at {narrator.sample_rate_hz} Hz and the dialogue voice "
                           f"at {dialogue.sample_rate_hz} Hz; a job's voices must share one sample rate")
    chunks, normalized = dialogue_chunks(text, narrator.language, dialogue.language, max_chars)
    kept = []
    for role in chunks:
        said = own.apply(role.chunk.text).text.strip()
        if said:
            kept.append((TextChunk(said, role.chunk.break_after), role.dialogue))
    spoken = Spoken(chunks=[c for c, _ in kept], warnings=list(normalized.warnings), chars=len(normalized.text))
    return spoken, tuple(q for _, q in kept)


def _book_metadata(request: JobRequest) -> dict[str, object]:
    """A book's author (every chapter) and cover image (its first job only, base64): what the worker that
    builds the `.m4b` tags it with. Kept out of the job's shape, so they never split a book's group."""
    found: dict[str, object] = {}
    if request.chapter is not None:  # its number in the book's chapter list (what --chapters takes)
        found["chapter"] = request.chapter
    if request.author:
        found["author"] = request.author
    if request.cover_image:
        found["cover_b64"] = base64.b64encode(request.cover_image).decode("ascii")
    return found


NAME_BY_ID_AFTER = 2  # clashes on the unique keys before jobs (not chapters) are named by their ids


def _store(prepared: list[_Prepared], store: Store) -> tuple[list[Submitted], list[str]]:
    """Store the jobs; a concurrent submission that wins a unique key (the same text, or the same output
    name) sends us to look again. Under a burst of texts that share their first words every racer wants the
    same next name, so after NAME_BY_ID_AFTER clashes the jobs are named by their ids, which cannot clash."""
    for attempt in range(NAME_BY_ID_AFTER + 3):
        try:
            return _store_once(prepared, store)
        except IntegrityError:
            if attempt + 1 == NAME_BY_ID_AFTER:
                prepared = [p if "/" in p.stem else replace(p, stem=str(p.job["id"])) for p in prepared]
    raise RetryableError("could not store the jobs: conflicting concurrent submissions; try again")


def _store_once(prepared: list[_Prepared], store: Store) -> tuple[list[Submitted], list[str]]:
    """Insert the jobs that are new, in two bulk statements; report the others as they are."""
    keys = [str(p.job["idempotency_key"]) for p in prepared]
    with store.session() as session:
        existing = {j.idempotency_key: j for part in _parts(keys)
                    for j in session.execute(select(Job.idempotency_key, Job.id, Job.status, Job.chunks_total)
                                             .where(Job.idempotency_key.in_(part)))}
        taken_ids = {i for part in _parts([str(p.job["id"]) for p in prepared])
                     for i in session.scalars(select(Job.id).where(Job.id.in_(part)))}
        results: list[Submitted] = []
        new: dict[str, _Prepared] = {}
        for item, key in zip(prepared, keys, strict=True):
            job_id = str(item.job["id"])
            if key in existing:
                old = existing[key]
                results.append(Submitted(old.id, JobStatus(old.status), False, old.chunks_total))
            elif key in new:  # the same text twice in one submission: one job
                results.append(Submitted(str(new[key].job["id"]), JobStatus.QUEUED, False, len(new[key].chunks)))
            elif job_id in taken_ids:
                raise InvalidInput(f"job id '{job_id}' already exists with different text or options")
            else:
                new[key] = item
                taken_ids.add(job_id)
                results.append(Submitted(job_id, JobStatus.QUEUED, True, len(item.chunks)))
        if new:
            _name(list(new.values()), session)
            # Core inserts on the tables, many rows a statement (no ORM unit of work per row).
            session.execute(insert(JOBS), [p.job for p in new.values()])
            session.execute(insert(CHUNKS), [row for p in new.values() for row in p.chunks])
    return results, [str(p.job["id"]) for p in new.values()]


def _parts(values: list[str]) -> list[list[str]]:
    return [values[i:i + IN_LIST_MAX] for i in range(0, len(values), IN_LIST_MAX)]


def _group(item: _Prepared) -> str | None:
    group = item.job["group_id"]
    return group if isinstance(group, str) else None


def _name(new: list[_Prepared], session: Session) -> None:
    """Give each new job its output name (`producer.naming.assign_names`)."""
    names = assign_names(session, [(p.stem, f".{p.job['format']}", _group(p)) for p in new])
    for item, name in zip(new, names, strict=True):
        item.job["output_name"] = name


def _publish(new_ids: list[str], prepared: list[_Prepared], settings: ProducerSettings, store: Store,
             publisher: Publisher) -> None:
    """Send the new jobs: short jobs of one voice, priority and queue several to a message (see
    `schemas.scheduling.jobs_per_message`), every other job alone. If the broker fails midway, the jobs
    whose message was not sent are removed again, and the error names those that were queued."""
    messages = _messages(new_ids, prepared, live_workers(store, [settings.queue], PUBLISH_FRESH_S))
    published: list[str] = []
    try:
        publisher.publish_many(messages, sent=lambda n: published.extend(messages[n][0]))
    except BrokerUnavailable as err:
        # Nothing half-submitted: jobs whose message could not be sent are removed. Those already
        # published stay (their messages exist) and the error names them.
        unpublished = [j for j in new_ids if j not in set(published)]
        with store.session() as session:
            for part in _parts(unpublished):
                session.execute(delete(Chunk).where(Chunk.job_id.in_(part)))
                session.execute(delete(Job).where(Job.id.in_(part), Job.status == JobStatus.QUEUED))
        if not published:
            raise
        raise BrokerUnavailable(f"{err}; {len(published)} job(s) were queued before it failed: "
                                f"{', '.join(published[:20])}{' ...' if len(published) > 20 else ''}; "
                                f"the other {len(unpublished)} were not") from err


PUBLISH_FRESH_S = 60.0  # a worker that beat this recently counts as serving its queue


def _messages(new_ids: list[str], prepared: list[_Prepared], workers: int) -> list[tuple[list[str], int, str]]:
    """The messages for `new_ids`, in submission order: short jobs grouped by voice, priority and queue."""
    jobs = {str(p.job["id"]): p for p in prepared}
    groups: dict[tuple[str, int, str], list[str]] = {}
    messages: list[tuple[list[str], int, str]] = []
    for job_id in new_ids:
        item = jobs[job_id]
        priority, queue = int(str(item.job["priority"])), str(item.job["queue"])
        if _short(item):
            groups.setdefault((str(item.job["voice"]), priority, queue), []).append(job_id)
        else:
            messages.append(([job_id], priority, queue))
    for (_voice, priority, queue), ids in groups.items():
        size = jobs_per_message(len(ids), workers)
        messages += [(ids[i:i + size], priority, queue) for i in range(0, len(ids), size)]
    return messages


def _short(item: _Prepared) -> bool:
    """A job a worker may run in company: short, not a book chapter, every chunk in the job's voice."""
    return (item.job["group_id"] is None and 0 < len(item.chunks) <= SHORT_JOB_CHUNKS
            and all(row["voice"] is None for row in item.chunks))


def _mark_published(job_ids: list[str], store: Store) -> None:
    with store.session() as session:
        session.execute(update(Job).where(Job.id.in_(job_ids)).values(published_at=utcnow()))


def publish_stored(job_ids: Sequence[str], store: Store, publisher: Publisher) -> None:
    """Publish jobs already stored as queued (a retry), each with its own priority and queue.

    Raises:
        BrokerUnavailable: the broker could not be reached; the jobs stay queued in SQL and a worker's
            reaper sends them within a lease period.
    """
    with store.read() as session:
        rows = session.execute(select(Job.id, Job.priority, Job.queue).where(Job.id.in_(list(job_ids)))).all()
    try:
        for job_id, priority, queue in rows:
            publisher.publish(job_id, priority, queue)
    except BrokerUnavailable as err:
        raise BrokerUnavailable(f"{err}; the jobs are queued and a worker's reaper will send them "
                                "within a lease period") from err
    _mark_published([row[0] for row in rows], store)
