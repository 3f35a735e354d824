"""The job pipeline without Celery: claim, resume after a crash, cancel, finish once, metrics."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import soundfile as sf
from sqlalchemy import func, select, update

from producer.broker import Publisher
from producer.jobs import cancel_jobs, job_views
from producer.submit import submit
from schemas.db import Store, open_store
from schemas.errors import BrokerUnavailable, InvalidInput, SynthesisFailed
from schemas.messages import JobRequest
from schemas.settings import ProducerSettings, WorkerSettings
from schemas.status import JobStatus
from schemas.tables import Chunk, Job, JobMetrics, utcnow
from tests.fakes import Crash, FakeEngine
from worker import store as job_store
from worker.job import JobContext, synthesize_job

TEXT = ("The library opens at nine. Books are due in three weeks. "
        "Late returns pay a small fee.\n\nThe reading room is quiet. Please keep it so.")


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> ProducerSettings:
    # Voice: the tiny folder model, so submit validates a real voice name without the bundled voice.
    return ProducerSettings(database_url=db_url, output_dir=tmp_path / "out", max_chunk_chars=40)


@pytest.fixture
def db(settings: ProducerSettings) -> Store:
    store = open_store(settings.database_url)
    yield store  # type: ignore[misc]
    store.dispose()


@pytest.fixture
def make_ctx(settings: ProducerSettings, db: Store) -> Callable[..., tuple[JobContext, FakeEngine]]:
    def make(worker_id: str = "host/cpu/1", engine: FakeEngine | None = None, **overrides: object
             ) -> tuple[JobContext, FakeEngine]:
        engine = engine or FakeEngine()
        ws = WorkerSettings(database_url=settings.database_url, output_dir=settings.output_dir, **overrides)
        return JobContext(store=db, settings=ws, worker_id=worker_id, engine_for=lambda _voice: engine), engine
    return make


def _submit(settings: ProducerSettings, db: Store, voice: str, text: str = TEXT, **kw: object) -> str:
    [job] = submit([JobRequest(text=text, voice=voice, **kw)], settings, db, publisher=None)  # type: ignore[arg-type]
    return job.id


def test_job_runs_to_succeeded_with_audio_and_metrics(settings, db, make_ctx, tiny_vits_dir) -> None:
    job_id = _submit(settings, db, str(tiny_vits_dir))
    ctx, engine = make_ctx()
    outcome = synthesize_job(job_id, ctx)
    assert outcome.status == JobStatus.SUCCEEDED
    [view] = job_views(db, [job_id])
    assert view.chunks_done == view.chunks_total > 1
    info = sf.info(str(view.audio_path))
    assert info.samplerate == 16_000
    assert view.audio_s == pytest.approx(info.frames / info.samplerate, abs=1e-6)
    with db.session() as s:
        metrics = s.get_one(JobMetrics, job_id)
        assert metrics.card == "Fake CPU" and metrics.dtype == "float32"
        assert metrics.audio_s == pytest.approx(view.audio_s)
        assert metrics.synth_s == pytest.approx(0.01 * view.chunks_total)
        assert metrics.worker_id == "host/cpu/1" and metrics.queue_wait_s >= 0
    assert engine.cleanups == 1
    assert not (settings.output_dir / ".chunks" / job_id).exists()


def test_crashed_job_resumes_at_the_first_missing_chunk(settings, db, make_ctx, tiny_vits_dir) -> None:
    job_id = _submit(settings, db, str(tiny_vits_dir))
    first, crashing = make_ctx("host/cpu/1", FakeEngine(crash_after=2))
    with pytest.raises(Crash):
        synthesize_job(job_id, first)
    [view] = job_views(db, [job_id])
    assert view.status == JobStatus.RUNNING and view.chunks_done == 2
    # another worker cannot take it while the lease holds ...
    second, resumed = make_ctx("other/cpu/2")
    assert synthesize_job(job_id, second).status is None
    # ... and resumes it once the lease has expired, redoing none of the stored chunks
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    assert synthesize_job(job_id, second).status == JobStatus.SUCCEEDED
    assert crashing.seen == [0, 1] and resumed.seen == list(range(2, view.chunks_total))
    [view] = job_views(db, [job_id])
    assert view.attempts == 2 and view.chunks_done == view.chunks_total
    # a late redelivery after success does nothing and writes no second result
    assert synthesize_job(job_id, second).status is None
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(JobMetrics)) == 1


def test_cancel_stops_a_running_job_at_the_chunk_boundary(settings, db, make_ctx, tiny_vits_dir) -> None:
    job_id = _submit(settings, db, str(tiny_vits_dir))
    ctx, _ = make_ctx()
    calls = []

    def cancel_after_first(job: str, done: int, total: int) -> None:
        calls.append(done)
        if done == 1:
            cancel_jobs(db, [job])

    ctx.on_chunk = cancel_after_first
    outcome = synthesize_job(job_id, ctx)
    assert outcome.status == JobStatus.CANCELLED
    assert calls == [1]
    [view] = job_views(db, [job_id])
    assert view.status == JobStatus.CANCELLED and view.audio_path is None


def test_permanent_error_fails_the_job_with_its_message(settings, db, make_ctx, tiny_vits_dir) -> None:
    job_id = _submit(settings, db, str(tiny_vits_dir))
    ctx, _ = make_ctx(engine=FakeEngine(fail_with=SynthesisFailed("chunk 0 does not fit in memory")))
    assert synthesize_job(job_id, ctx).status == JobStatus.FAILED
    [view] = job_views(db, [job_id])
    assert view.status == JobStatus.FAILED and view.error == "chunk 0 does not fit in memory"


def test_a_job_that_keeps_crashing_is_failed_as_poison(settings, db, make_ctx, tiny_vits_dir) -> None:
    job_id = _submit(settings, db, str(tiny_vits_dir))
    for attempt in range(3):
        ctx, _ = make_ctx(f"w/cpu/{attempt}", FakeEngine(crash_after=0), max_attempts=2)
        outcome = None
        try:
            outcome = synthesize_job(job_id, ctx)
        except Crash:
            with db.session() as s:
                s.execute(update(Job).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    assert outcome is not None and outcome.status == JobStatus.FAILED
    [view] = job_views(db, [job_id])
    assert "attempts" in (view.error or "")


def test_same_input_is_the_same_job_unless_forced(settings, db, tiny_vits_dir) -> None:
    a = _submit(settings, db, str(tiny_vits_dir))
    b = _submit(settings, db, str(tiny_vits_dir))
    [c] = submit([JobRequest(text=TEXT, voice=str(tiny_vits_dir))], settings, db, publisher=None, force=True)
    assert a == b and c.id != a and c.created


def test_chunks_cover_the_text_and_respect_the_cap(settings, db, tiny_vits_dir) -> None:
    job_id = _submit(settings, db, str(tiny_vits_dir))
    with db.session() as s:
        chunks = s.scalars(select(Chunk).where(Chunk.job_id == job_id).order_by(Chunk.idx)).all()
    assert all(0 < len(c.text) <= settings.max_chunk_chars for c in chunks)
    assert " ".join(c.text for c in chunks).split() == TEXT.split()


def test_empty_text_is_refused_and_nothing_is_stored(settings, db, tiny_vits_dir) -> None:
    with pytest.raises(InvalidInput, match="nothing to speak"):
        requests = [JobRequest(text="ok fine", voice=str(tiny_vits_dir)),
                    JobRequest(text="  \n ", voice=str(tiny_vits_dir))]
        submit(requests, settings, db, publisher=None)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 0


def test_unreachable_broker_leaves_nothing_behind(settings, db, tiny_vits_dir) -> None:
    publisher = Publisher("redis://127.0.0.1:1/0", "ttsfleet")
    with pytest.raises(BrokerUnavailable, match="cannot reach the broker"):
        submit([JobRequest(text=TEXT, voice=str(tiny_vits_dir))], settings, db, publisher=publisher)
    publisher.close()
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 0
        assert s.scalar(select(func.count()).select_from(Chunk)) == 0


def test_claim_is_exclusive_while_the_lease_holds(settings, db, tiny_vits_dir) -> None:
    job_id = _submit(settings, db, str(tiny_vits_dir))
    assert job_store.claim(db, job_id, "a", lease_s=60) is not None
    assert job_store.claim(db, job_id, "b", lease_s=60) is None
    assert job_store.claim(db, job_id, "a", lease_s=60) is not None  # the holder may re-enter


def test_characters_the_voice_drops_are_warned_on_the_job(settings, db, make_ctx, tiny_vits_dir) -> None:
    from worker.device import detect_device
    from worker.engine import start_engine
    from worker.loaded_voice import load_folder_voice
    from worker.precision import choose_policy

    cpu = detect_device("cpu")
    engine = start_engine(load_folder_voice(tiny_vits_dir), cpu, choose_policy(cpu))
    job_id = _submit(settings, db, str(tiny_vits_dir), text="The café serves crème brûlée on Sundays.")
    ctx, _ = make_ctx()
    ctx.engine_for = lambda _voice: engine
    assert synthesize_job(job_id, ctx).status == JobStatus.SUCCEEDED
    [view] = job_views(db, [job_id])
    assert any("skipped" in w and "é" in w and "û" in w for w in view.warnings), view.warnings


def test_loudness_option_normalizes_the_job_audio(settings, db, make_ctx, tiny_vits_dir) -> None:
    import pyloudnorm

    [job] = submit([JobRequest(text=TEXT, voice=str(tiny_vits_dir), loudness_lufs=-23.0)], settings, db,
                   publisher=None)
    ctx, _ = make_ctx()
    assert synthesize_job(job.id, ctx).status == JobStatus.SUCCEEDED
    [view] = job_views(db, [job.id])
    wav, rate = sf.read(str(view.audio_path), dtype="float64")
    assert pyloudnorm.Meter(rate).integrated_loudness(wav) == pytest.approx(-23.0, abs=1.0)
    # a different loudness is a different job, not the same one again
    [other] = submit([JobRequest(text=TEXT, voice=str(tiny_vits_dir), loudness_lufs=-16.0)], settings, db,
                     publisher=None)
    assert other.created and other.id != job.id
