"""Short jobs run together: one claim takes queued notices of the same voice along, one engine call
synthesizes them all, and each job still ends on its own (without Celery)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import soundfile as sf
from sqlalchemy import select

from producer.jobs import cancel_jobs, job_views
from producer.submit import submit
from schemas.db import Store
from schemas.errors import WorkerStopping
from schemas.messages import JobRequest
from schemas.settings import DEFAULT_QUEUE, ProducerSettings, WorkerSettings
from schemas.status import JobStatus, WorkerState
from schemas.tables import Job, JobMetrics, Worker, utcnow
from tests.conftest import TEST_VOICE_DIRS
from tests.fakes import FakeEngine
from worker.engine import ChunkAudio, ChunkInput, EngineRun
from worker.job import JobContext, synthesize_job

NOTICES = ["Water stops at noon.", "The gate is shut today.", "Bins go out on Monday.", "The pool opens at nine.",
           "Parking is free on Sunday.", "The library is closed.", "Buses run late tonight.", "The park is open.",
           "Roads are icy today."]


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> ProducerSettings:
    return ProducerSettings(database_url=db_url, output_dir=tmp_path / "out", voice_dirs=TEST_VOICE_DIRS)


class CountingEngine(FakeEngine):
    """The fake engine, counting its calls and the chunks each call got."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.calls: list[int] = []

    def synthesize(self, chunks, on_chunk):  # type: ignore[no-untyped-def, override]
        self.calls.append(len(chunks))
        return super().synthesize(chunks, on_chunk)


def _ctx(settings: ProducerSettings, db: Store, engine: FakeEngine, **overrides: object) -> JobContext:
    ws = WorkerSettings(database_url=settings.database_url, output_dir=settings.output_dir, **overrides)
    return JobContext(store=db, settings=ws, worker_id="host/cpu/0", engine_for=lambda _voice: engine)


def _submit(settings: ProducerSettings, db: Store, voice: str, texts: list[str], **kw: object) -> list[str]:
    jobs = submit([JobRequest(text=t, voice=voice, **kw) for t in texts], settings, db, publisher=None)  # type: ignore[arg-type]
    return [j.id for j in jobs]


def test_queued_notices_of_one_voice_run_in_one_engine_call_and_each_ends_on_its_own(
        settings: ProducerSettings, db: Store, tiny_vits_dir: Path) -> None:
    # Older than the notices, so only its length keeps it out of their company.
    long_text = " ".join(["A sentence of the long job that is never run in company."] * 6)
    long_job = _submit(settings.model_copy(update={"max_chunk_chars": 60}), db, str(tiny_vits_dir), [long_text])
    ids = _submit(settings, db, str(tiny_vits_dir), NOTICES)
    engine = CountingEngine()
    outcome = synthesize_job(ids[0], _ctx(settings, db, engine, join_jobs=4))
    assert outcome.status == JobStatus.SUCCEEDED
    assert engine.calls == [4]  # the job and the next three queued ones, in one call
    views = {v.id: v for v in job_views(db, ids + long_job)}
    assert [views[i].status for i in ids] == [JobStatus.SUCCEEDED] * 4 + [JobStatus.QUEUED] * 5
    assert views[long_job[0]].status == JobStatus.QUEUED and views[long_job[0]].chunks_total > 4
    for job_id, text in zip(ids[:4], NOTICES, strict=False):  # each job got its own chunk's audio
        info = sf.info(str(views[job_id].audio_path))
        assert info.frames == pytest.approx(0.05 * len(text) * 16_000, abs=2)
    with db.read() as s:
        assert s.scalar(select(JobMetrics.worker_id).where(JobMetrics.job_id == ids[2])) == "host/cpu/0"
    # Their own messages arrive later: the claim refuses them, nothing runs twice.
    later = synthesize_job(ids[1], _ctx(settings, db, engine, join_jobs=4, segment_chars=0))
    assert later.status is None and engine.calls == [4]
    # Four short jobs wait and two workers serve the queue: this one takes its half along, the rest stay.
    _live_workers(db, 2)
    assert synthesize_job(ids[4], _ctx(settings, db, engine, join_jobs=4)).status == JobStatus.SUCCEEDED
    assert engine.calls == [4, 3]
    assert [v.status for v in job_views(db, ids[7:])] == [JobStatus.QUEUED] * 2


def _live_workers(db: Store, count: int) -> None:
    """`count` ready workers of the default queue in the registry, beating now (and one long gone)."""
    with db.session() as s:
        for n in range(count + 1):
            s.add(Worker(id=f"other/cpu/{n}", host="other", pid=n + 1, device="cpu", card="CPU", backend="cpu",
                         torch_version="", dtype="float32", queues=DEFAULT_QUEUE, state=WorkerState.READY,
                         heartbeat_at=utcnow() - timedelta(hours=1 if n == count else 0)))


def test_join_jobs_1_runs_each_job_alone(settings: ProducerSettings, db: Store, tiny_vits_dir: Path) -> None:
    ids = _submit(settings, db, str(tiny_vits_dir), NOTICES[:3])
    engine = CountingEngine()
    synthesize_job(ids[0], _ctx(settings, db, engine, join_jobs=1))
    assert engine.calls == [1]
    assert [v.status for v in job_views(db, ids)] == [JobStatus.SUCCEEDED, JobStatus.QUEUED, JobStatus.QUEUED]


def test_a_companion_cancelled_mid_run_ends_cancelled_and_the_others_succeed(
        settings: ProducerSettings, db: Store, tiny_vits_dir: Path) -> None:
    ids = _submit(settings, db, str(tiny_vits_dir), NOTICES[:5])

    class CancellingEngine(FakeEngine):
        def synthesize(self, chunks: list[ChunkInput], on_chunk: Callable[[ChunkAudio], None]) -> EngineRun:
            cancel_jobs(db, [ids[1]])
            return super().synthesize(chunks, on_chunk)

    outcome = synthesize_job(ids[0], _ctx(settings, db, CancellingEngine()))
    assert outcome.status == JobStatus.SUCCEEDED
    views = {v.id: v for v in job_views(db, ids)}
    assert views[ids[1]].status == JobStatus.CANCELLED and views[ids[1]].audio_path is None
    assert views[ids[2]].status == JobStatus.SUCCEEDED


def test_a_stop_puts_every_job_of_the_group_back_with_its_chunks_and_sends_the_companions_again(
        settings: ProducerSettings, db: Store, tiny_vits_dir: Path) -> None:
    ids = _submit(settings, db, str(tiny_vits_dir), NOTICES[:5])
    sent: list[str] = []
    chunks_seen = [0]

    def stop_after_two() -> bool:
        chunks_seen[0] += 1
        return chunks_seen[0] >= 2

    ctx = _ctx(settings, db, FakeEngine())
    ctx.should_stop = stop_after_two
    ctx.republish = lambda route: sent.append(route.job_id)
    with pytest.raises(WorkerStopping):
        synthesize_job(ids[0], ctx)
    with db.read() as s:
        rows = {j.id: j for j in s.scalars(select(Job).where(Job.id.in_(ids)))}
    # A job whose chunks were all stored before the stop was finished then; the others are queued again.
    assert [rows[i].status for i in ids] == [JobStatus.SUCCEEDED] * 2 + [JobStatus.QUEUED] * 3
    assert sum(rows[i].chunks_done for i in ids) == 2 and Path(str(rows[ids[1]].audio_path)).is_file()
    assert sorted(sent) == sorted(ids[2:])  # the companions put back are sent again
    # Resumed, every job finishes without redoing a stored chunk.
    engine = CountingEngine()
    for job_id in ids:
        synthesize_job(job_id, _ctx(settings, db, engine, join_jobs=1))
    assert sum(engine.calls) == 3 and all(v.status == JobStatus.SUCCEEDED for v in job_views(db, ids))


def test_a_chunk_that_fails_the_group_fails_only_its_own_job(settings: ProducerSettings, db: Store,
                                                             tiny_vits_dir: Path) -> None:
    from schemas.errors import SynthesisFailed

    ids = _submit(settings, db, str(tiny_vits_dir), NOTICES[:5])

    class OneBadText(FakeEngine):  # NOTICES[1] cannot be said, in company or alone
        def synthesize(self, chunks: list[ChunkInput], on_chunk: Callable[[ChunkAudio], None]) -> EngineRun:
            if any(c.text == NOTICES[1] for c in chunks):
                raise SynthesisFailed("this chunk cannot be said")
            return super().synthesize(chunks, on_chunk)

    engine = OneBadText()
    sent: list[str] = []
    ctx = _ctx(settings, db, engine)
    ctx.republish = lambda route: sent.append(route.job_id)
    assert synthesize_job(ids[0], ctx).status == JobStatus.SUCCEEDED  # ran alone after the group failed
    assert sorted(sent) == sorted(ids[1:])  # its companions went back to the queue, sent again
    outcomes = {job_id: synthesize_job(job_id, _ctx(settings, db, engine, join_jobs=1)).status for job_id in ids[1:]}
    assert outcomes == {ids[1]: JobStatus.FAILED, ids[2]: JobStatus.SUCCEEDED, ids[3]: JobStatus.SUCCEEDED,
                        ids[4]: JobStatus.SUCCEEDED}


def test_each_job_ends_as_soon_as_its_chunks_are_stored_while_the_call_runs_on(
        settings: ProducerSettings, db: Store, tiny_vits_dir: Path) -> None:
    ids = _submit(settings, db, str(tiny_vits_dir), NOTICES[:4])
    before_last: list[JobStatus] = []

    class Watching(FakeEngine):  # what the store says just before the call's last chunk is said
        def synthesize(self, chunks: list[ChunkInput], on_chunk: Callable[[ChunkAudio], None]) -> EngineRun:
            def watch(audio: ChunkAudio) -> None:
                if len(self.seen) == len(chunks):
                    before_last.extend(v.status for v in job_views(db, ids))
                on_chunk(audio)
            return super().synthesize(chunks, watch)

    assert synthesize_job(ids[0], _ctx(settings, db, Watching())).status == JobStatus.SUCCEEDED
    assert before_last == [JobStatus.SUCCEEDED] * 3 + [JobStatus.RUNNING]
    assert {v.status for v in job_views(db, ids)} == {JobStatus.SUCCEEDED}


def test_a_group_failing_after_some_jobs_ended_keeps_them_and_sends_the_rest_back(
        settings: ProducerSettings, db: Store, tiny_vits_dir: Path) -> None:
    from schemas.errors import SynthesisFailed

    ids = _submit(settings, db, str(tiny_vits_dir), NOTICES[:5])

    class FailsAtFourth(FakeEngine):  # NOTICES[3] cannot be said; the chunks before it were stored
        def synthesize(self, chunks: list[ChunkInput], on_chunk: Callable[[ChunkAudio], None]) -> EngineRun:
            def guard(audio: ChunkAudio) -> None:
                if chunks[len(self.seen) - 1].text == NOTICES[3]:
                    raise SynthesisFailed("this chunk cannot be said")
                on_chunk(audio)
            return super().synthesize(chunks, guard)

    sent: list[str] = []
    ctx = _ctx(settings, db, FailsAtFourth())
    ctx.republish = lambda route: sent.append(route.job_id)
    assert synthesize_job(ids[0], ctx).status == JobStatus.SUCCEEDED  # finished before the failure
    assert [v.status for v in job_views(db, ids)] == [JobStatus.SUCCEEDED] * 3 + [JobStatus.QUEUED] * 2
    assert sorted(sent) == sorted(ids[3:])


def test_a_companions_own_delivery_costs_one_indexed_read_unless_it_was_rerendered(
        settings: ProducerSettings, db: Store, tiny_vits_dir: Path) -> None:
    from sqlalchemy import event

    from producer.rerender import rerender

    ids = _submit(settings, db, str(tiny_vits_dir), NOTICES[:3])
    engine = CountingEngine()
    ctx = _ctx(settings, db, engine, segment_chars=0)
    synthesize_job(ids[0], ctx)
    assert engine.calls == [3]
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, sql: str, *_: object) -> None:
        statements.append(sql)

    event.listen(db.engine, "before_cursor_execute", seen)
    later = synthesize_job(ids[1], ctx)
    event.remove(db.engine, "before_cursor_execute", seen)
    assert (later.status, later.detail) == (None, "ended already (succeeded)")
    reads = [sql for sql in statements if not sql.startswith(("BEGIN", "PRAGMA", "COMMIT", "ROLLBACK"))]
    assert len(reads) == 1 and reads[0].lstrip().upper().startswith("SELECT"), statements
    with db.read() as s:
        assert s.scalar(select(Job.attempts).where(Job.id == ids[1])) == 1  # no claim was made
    # Re-rendered before its delivery came: it is queued again, so the delivery runs it.
    rerender(db, ids[2], settings, text="Bins go out on Tuesday.")
    assert synthesize_job(ids[2], ctx).status == JobStatus.SUCCEEDED and engine.calls == [3, 1]


def test_companions_are_claimed_in_one_transaction_skipping_one_another_worker_took(
        settings: ProducerSettings, db: Store, tiny_vits_dir: Path) -> None:
    from worker import lease

    ids = _submit(settings, db, str(tiny_vits_dir), NOTICES[:4])
    assert lease.claim(db, ids[1], "other/cpu/0", 60) is not None
    claimed = lease.claim_queued(db, [ids[3], ids[1], ids[2]], "host/cpu/0", 60)
    assert [(c.job_id, c.attempt) for c in claimed] == [(ids[3], 1), (ids[2], 1)]  # in the order asked
    with db.read() as s:
        owners = dict(s.execute(select(Job.id, Job.lease_owner).where(Job.id.in_(ids))).all())
    assert owners == {ids[0]: None, ids[1]: "other/cpu/0", ids[2]: "host/cpu/0", ids[3]: "host/cpu/0"}
    assert lease.claim_queued(db, [ids[2]], "host/cpu/0", 60) == []  # held already: not queued
    assert {k: [c.idx for c in v] for k, v in lease.pending_chunks_of(db, ids[2:]).items()} == {ids[2]: [0],
                                                                                                 ids[3]: [0]}
