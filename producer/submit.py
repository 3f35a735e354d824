"""Turning validated job requests into stored jobs (text and chunks in SQL) and publishing their ids.

Everything is validated before anything is written; if publishing fails, the jobs just created are
removed again, so a failed submit leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from producer.broker import Publisher
from producer.text import normalize, split_chunks
from schemas.db import Store
from schemas.errors import InvalidInput, TtsfleetError
from schemas.messages import JobRequest
from schemas.settings import ProducerSettings
from schemas.status import JobStatus
from schemas.tables import Chunk, Job, utcnow
from schemas.voices import resolve_voice_name


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


def submit(requests: Sequence[JobRequest], settings: ProducerSettings, store: Store, *,
           publisher: Publisher | None, force: bool = False) -> list[Submitted]:
    """Store `requests` as jobs and publish the new ones (no publisher: embedded mode, nothing published).

    Raises:
        InvalidInput: a request has nothing to speak, is too long, or reuses a job id for other text.
        UnknownVoice: a request names a voice that cannot be loaded.
        BrokerUnavailable: publishing failed; the jobs created by this call were removed again.
    """
    if not requests:
        raise InvalidInput("no input: nothing to submit")
    prepared = [_prepare(request, settings, force) for request in requests]
    results, new_ids = _store(prepared, store)
    if publisher is not None and new_ids:
        _publish(new_ids, prepared, store, publisher)
    return results


def _prepare(request: JobRequest, settings: ProducerSettings, force: bool) -> _Prepared:
    where = request.source or "input"
    if len(request.text) > settings.max_text_chars:
        raise InvalidInput(f"{where}: text has {len(request.text):,} characters, above the limit of "
                           f"{settings.max_text_chars:,} (TTSFLEET_MAX_TEXT_CHARS); split it into files")
    voice = resolve_voice_name(request.voice or settings.voice)
    normalized = normalize(request.text, voice.language)
    chunks = [c for c in split_chunks(normalized.text, settings.max_chunk_chars) if c.text.strip()]
    if not chunks:
        raise InvalidInput(f"{where}: nothing to speak")
    options = {"loudness_lufs": request.loudness_lufs} if request.loudness_lufs is not None else {}
    key_fields = {"text": request.text, "voice": voice.name, "format": request.format.value,
                  "title": request.title, "group": request.group_title, "index": request.group_index, **options}
    if force:
        key_fields["nonce"] = uuid.uuid4().hex
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()
    job_id = request.id or uuid.uuid4().hex[:20]
    group_id = None
    if request.group_title is not None:
        group_id = hashlib.sha256(f"{request.source}\0{request.group_title}".encode()).hexdigest()[:16]
    job = {
        "id": job_id, "idempotency_key": key, "status": JobStatus.QUEUED, "priority": request.priority,
        "voice": voice.name, "format": request.format.value, "text": request.text, "source": request.source,
        "title": request.title, "group_id": group_id, "group_title": request.group_title,
        "group_index": request.group_index, "options": options, "warnings": list(normalized.warnings),
        "chars": len(normalized.text), "chunks_total": len(chunks), "chunks_done": 0, "attempts": 0,
        "created_at": utcnow(),
    }
    chunk_rows = [{"job_id": job_id, "idx": i, "text": c.text.strip(), "break_after": c.break_after,
                   "chars": len(c.text.strip())} for i, c in enumerate(chunks)]
    return _Prepared(job=job, chunks=chunk_rows)


def _store(prepared: list[_Prepared], store: Store) -> tuple[list[Submitted], list[str]]:
    for _ in range(2):  # a concurrent identical submit may win the unique key; look again once
        try:
            return _store_once(prepared, store)
        except IntegrityError:
            continue
    raise InvalidInput("could not store the jobs: conflicting concurrent submissions; try again")


def _store_once(prepared: list[_Prepared], store: Store) -> tuple[list[Submitted], list[str]]:
    results: list[Submitted] = []
    new_ids: list[str] = []
    with store.session() as session:
        keys = [p.job["idempotency_key"] for p in prepared]
        existing = {j.idempotency_key: j for j in session.scalars(select(Job).where(Job.idempotency_key.in_(keys)))}
        for item in prepared:
            key, job_id = str(item.job["idempotency_key"]), str(item.job["id"])
            if key in existing:
                old = existing[key]
                results.append(Submitted(old.id, old.status, False, old.chunks_total))
                continue
            if session.get(Job, job_id) is not None:
                raise InvalidInput(f"job id '{job_id}' already exists with different text or options")
            session.execute(insert(Job), [item.job])
            session.execute(insert(Chunk), item.chunks)
            existing[key] = session.get_one(Job, job_id)
            results.append(Submitted(job_id, JobStatus.QUEUED, True, len(item.chunks)))
            new_ids.append(job_id)
    return results, new_ids


def _publish(new_ids: list[str], prepared: list[_Prepared], store: Store, publisher: Publisher) -> None:
    priority = {str(p.job["id"]): int(str(p.job["priority"])) for p in prepared}
    published: list[str] = []
    try:
        for job_id in new_ids:
            publisher.publish(job_id, priority[job_id])
            published.append(job_id)
    except TtsfleetError:
        # Nothing half-submitted: jobs whose message could not be sent are removed. Those already
        # published stay (their messages exist) and are reported by the caller's error.
        unpublished = [j for j in new_ids if j not in published]
        with store.session() as session:
            session.execute(delete(Chunk).where(Chunk.job_id.in_(unpublished)))
            session.execute(delete(Job).where(Job.id.in_(unpublished), Job.status == JobStatus.QUEUED))
        if published:
            _mark_published(published, store)
        raise
    _mark_published(published, store)


def _mark_published(job_ids: list[str], store: Store) -> None:
    with store.session() as session:
        session.execute(update(Job).where(Job.id.in_(job_ids)).values(published_at=utcnow()))
