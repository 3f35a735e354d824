"""Breaks a fault probe found in the worker's job pipeline, each a test that failed before its fix: a cancelled
companion keeping chunk audio, a transient error using up a job's attempts, companions put back by an error
without it recorded."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from producer.jobs import cancel_jobs, job_views
from producer.submit import submit
from schemas.db import Store
from schemas.errors import RetryableError
from schemas.messages import JobRequest
from schemas.settings import ProducerSettings, WorkerSettings
from schemas.status import JobStatus
from tests.conftest import TEST_VOICE_DIRS
from tests.fakes import FakeEngine
from worker.engine import ChunkAudio, ChunkInput, EngineRun
from worker.job import JobContext, synthesize_job

NOTICES = ["Water stops at noon. Taps run dry. Fill a kettle.", "The gate is shut today. Use the side door.",
           "Bins go out on Monday. Lids must close. Thank you."]


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> ProducerSettings:
    return ProducerSettings(database_url=db_url, output_dir=tmp_path / "out", voice_dirs=TEST_VOICE_DIRS,
                            max_chunk_chars=30)


def _ctx(settings: ProducerSettings, db: Store, engine: FakeEngine, worker: str = "host/cpu/0",
         **overrides: object) -> JobContext:
    ws = WorkerSettings(database_url=settings.database_url, output_dir=settings.output_dir, **overrides)  # type: ignore[arg-type]
    return JobContext(store=db, settings=ws, worker_id=worker, engine_for=lambda _voice: engine)


def _submit(settings: ProducerSettings, db: Store, voice: str, texts: list[str]) -> list[str]:
    return [j.id for j in submit([JobRequest(text=t, voice=voice) for t in texts], settings, db, publisher=None)]


def test_a_cancelled_companion_keeps_no_chunk_audio(settings: ProducerSettings, db: Store,
                                                    tiny_vits_dir: Path) -> None:
    """Issue item 9: a companion cancelled after some of its chunks were stored keeps those files (a
    cancelled solo job keeps none)."""
    ids = _submit(settings, db, str(tiny_vits_dir), NOTICES)

    class CancelsAfterOneChunk(FakeEngine):
        def synthesize(self, chunks: Sequence[ChunkInput], on_chunk: Callable[[ChunkAudio], None]) -> EngineRun:
            stored = [0]

            def then_cancel(audio: ChunkAudio) -> None:
                on_chunk(audio)
                stored[0] += 1
                if stored[0] == 4:  # the first job's chunks, then one of the companion's
                    cancel_jobs(db, [ids[1]])

            return super().synthesize(chunks, then_cancel)

    assert synthesize_job(ids[0], _ctx(settings, db, CancelsAfterOneChunk())).status == JobStatus.SUCCEEDED
    [companion] = job_views(db, [ids[1]])
    assert companion.status == JobStatus.CANCELLED
    left = sorted(p.name for p in (settings.output_dir / ".chunks" / ids[1]).glob("*.wav"))
    assert left == [], f"the cancelled companion kept {left}"


def test_a_transient_error_does_not_use_up_a_jobs_attempts(settings: ProducerSettings, db: Store,
                                                           tiny_vits_dir: Path) -> None:
    """Issue item 5: every delivery that meets a RetryableError (an object-store outage) is counted as a new
    attempt, so an outage longer than five retries fails healthy jobs as poison."""
    [job_id] = _submit(settings, db, str(tiny_vits_dir), NOTICES[:1])
    for _ in range(6):  # six deliveries during the outage, each put back by the RetryableError
        with contextlib.suppress(RetryableError):
            synthesize_job(job_id, _ctx(settings, db, FakeEngine(fail_with=RetryableError("store down")),
                                        max_attempts=5))
    outcome = synthesize_job(job_id, _ctx(settings, db, FakeEngine(), max_attempts=5))
    assert outcome.status == JobStatus.SUCCEEDED, job_views(db, [job_id])[0].error


def test_companions_put_back_by_an_error_have_it_recorded(settings: ProducerSettings, db: Store,
                                                          tiny_vits_dir: Path) -> None:
    """Issue item 5: companions put back from a group that met an error are re-claimed later with no
    error recorded, so a poison message says "the worker process died each time"."""
    ids = _submit(settings, db, str(tiny_vits_dir), NOTICES)
    with pytest.raises(RetryableError):
        synthesize_job(ids[0], _ctx(settings, db, FakeEngine(fail_with=RetryableError("store down"))))
    views = job_views(db, ids)
    assert [v.status for v in views] == [JobStatus.QUEUED] * 3
    assert all(v.attempt_errors for v in views), {v.id: v.attempt_errors for v in views}
