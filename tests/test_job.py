"""The job pipeline without Celery: claim, resume after a crash, cancel, finish once, metrics."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import soundfile as sf
from sqlalchemy import func, select, update

from producer.jobs import cancel_jobs, job_views
from producer.submit import submit
from schemas.broker import Publisher
from schemas.db import Store
from schemas.errors import (
    BrokerUnavailable,
    DeviceLost,
    InvalidInput,
    StoreUnavailable,
    SynthesisFailed,
    WorkerStopping,
)
from schemas.messages import JobRequest
from schemas.settings import ProducerSettings, WorkerSettings
from schemas.status import JobStatus
from schemas.tables import Chunk, Job, JobMetrics, utcnow
from tests.conftest import TEST_VOICE_DIRS
from tests.fakes import Crash, FakeEngine
from worker import lease, reaper, registry
from worker.events import Listener, Listeners
from worker.job import JobContext, synthesize_job

TEXT = ("The library opens at nine. Books are due in three weeks. "
        "Late returns pay a small fee.\n\nThe reading room is quiet. Please keep it so.")


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> ProducerSettings:
    # Voice: the tiny folder model, so submit validates a real voice name without the bundled voice.
    return ProducerSettings(database_url=db_url, output_dir=tmp_path / "out", max_chunk_chars=40,
                            voice_dirs=TEST_VOICE_DIRS)


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
        assert metrics.runtime == "onnxruntime"  # the engine's runtime, not the column default
        assert metrics.audio_s == pytest.approx(view.audio_s)
        assert metrics.synth_s == pytest.approx(0.01 * view.chunks_total)
        assert metrics.worker_id == "host/cpu/1" and metrics.queue_wait_s >= 0
    assert engine.cleanups == 1
    # Only the chunk audio the rows point to is kept (for `rerender`): no staged folder, no strays. A long job's
    # chunks made together share one file (each row has its offset in it).
    kept = sorted(p.name for p in (settings.output_dir / ".chunks" / job_id).iterdir())
    rows = lease.done_chunks(db, job_id)
    assert kept == sorted({Path(str(c.audio_path)).name for c in rows})
    assert len({(c.audio_path, c.audio_offset) for c in rows}) == len(rows)


def test_crashed_job_resumes_at_the_first_missing_chunk(settings, db, make_ctx, tiny_vits_dir) -> None:
    job_id = _submit(settings, db, str(tiny_vits_dir))
    first, crashing = make_ctx("host/cpu/1", FakeEngine(crash_after=2))
    with pytest.raises(Crash):
        synthesize_job(job_id, first)
    # put back at once with its two stored chunks (not left running under a lease nobody renews)
    [view] = job_views(db, [job_id])
    assert view.status == JobStatus.QUEUED and view.chunks_done == 2 and view.attempts == 1
    second, resumed = make_ctx("other/cpu/2")
    assert synthesize_job(job_id, second).status == JobStatus.SUCCEEDED
    assert crashing.seen == [0, 1] and resumed.seen == list(range(2, view.chunks_total))
    [view] = job_views(db, [job_id])
    assert view.attempts == 2 and view.chunks_done == view.chunks_total
    # a late redelivery after success does nothing and writes no second result
    assert synthesize_job(job_id, second).status is None
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(JobMetrics)) == 1


def test_a_dead_holders_job_is_taken_over_when_its_lease_expires(settings, db, make_ctx, tiny_vits_dir) -> None:
    job_id = _submit(settings, db, str(tiny_vits_dir))
    assert lease.claim(db, job_id, "dead/cpu/1", lease_s=60) is not None  # then the process vanished
    ctx, _ = make_ctx("other/cpu/2")
    assert synthesize_job(job_id, ctx).status is None  # the lease still holds
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    assert synthesize_job(job_id, ctx).status == JobStatus.SUCCEEDED
    assert job_views(db, [job_id])[0].attempts == 2


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), DeviceLost("illegal memory access"),
                                   StoreUnavailable("database unavailable")], ids=type)
def test_unexpected_errors_put_the_job_back_and_propagate(settings, db, make_ctx, tiny_vits_dir, error) -> None:
    job_id = _submit(settings, db, str(tiny_vits_dir))
    ctx, _ = make_ctx(engine=FakeEngine(fail_with=error))
    with pytest.raises(type(error)):
        synthesize_job(job_id, ctx)
    [view] = job_views(db, [job_id])
    assert view.status == JobStatus.QUEUED and view.error is None


def test_a_cancel_during_assembly_leaves_no_result(settings, db, make_ctx, tiny_vits_dir, monkeypatch) -> None:
    from worker import audio

    job_id = _submit(settings, db, str(tiny_vits_dir))
    real_assemble = audio.assemble

    def assemble_then_cancel(*args, **kwargs):  # type: ignore[no-untyped-def]
        assembled = real_assemble(*args, **kwargs)
        cancel_jobs(db, [job_id])
        return assembled

    monkeypatch.setattr(audio, "assemble", assemble_then_cancel)
    ctx, _ = make_ctx()
    assert synthesize_job(job_id, ctx).status == JobStatus.CANCELLED
    assert not any(p.is_file() for p in settings.output_dir.rglob("*")), list(settings.output_dir.rglob("*"))


def test_heartbeat_renews_only_the_job_being_run(settings, db, tiny_vits_dir) -> None:
    a, b = _submit(settings, db, str(tiny_vits_dir)), _submit(settings, db, str(tiny_vits_dir), text="Other text.")
    for job_id in (a, b):
        lease.claim(db, job_id, "w/cpu/1", lease_s=1)
    assert registry.heartbeat(db, "w/cpu/1", lease_s=600, job_ids=[a]) == set()
    with db.session() as s:
        leases = dict(s.execute(select(Job.id, Job.lease_expires_at)).all())
    assert leases[a] > utcnow() + timedelta(seconds=500) > leases[b]


def test_a_restarted_slot_takes_back_only_jobs_of_dead_predecessors(settings, db, tiny_vits_dir) -> None:
    import os
    import socket

    host = socket.gethostname()
    dead_pid = 2**22 + 12345  # above the default pid_max: no such process
    rows = {f"h/cpu/{dead_pid}": dead_pid, f"h/cpu/{os.getpid()}": os.getpid(), f"h_x/cpu/{dead_pid}": dead_pid}
    jobs = {}
    for n, (worker_id, pid) in enumerate(rows.items()):
        registry.register_worker(db, {"id": worker_id, "host": host, "pid": pid, "device": "cpu", "card": "c",
                                      "backend": "cpu", "torch_version": "t", "dtype": "float32"})
        jobs[worker_id] = _submit(settings, db, str(tiny_vits_dir), text=f"Text number {n}.")
        lease.claim(db, jobs[worker_id], worker_id, lease_s=600)
    released = registry.release_previous_incarnations(db, "h/cpu/", "h/cpu/999", host, lease_s=600)
    # the dead one only: not the live sibling, and not a slot that merely matches `h_` as a LIKE pattern
    assert [job.job_id for job in released] == [jobs[f"h/cpu/{dead_pid}"]]
    assert [(job.priority, job.queue) for job in released] == [(9, "ttsfleet")]  # first, to its own queue


def test_the_reaper_republishes_an_orphan_once_per_lease(settings, db, tiny_vits_dir) -> None:
    job_id = _submit(settings, db, str(tiny_vits_dir))
    lease.claim(db, job_id, "dead/cpu/1", lease_s=60)
    with db.session() as s:
        s.execute(update(Job).values(lease_expires_at=utcnow() - timedelta(seconds=1),
                                     published_at=utcnow() - timedelta(seconds=120)))
    assert reaper.orphaned_jobs(db, lease_s=60) == [reaper.Republish(job_id, 5, "ttsfleet")]
    assert reaper.orphaned_jobs(db, lease_s=60) == []  # stamped: not again until another lease passes


def test_cancel_stops_a_running_job_at_the_chunk_boundary(settings, db, make_ctx, tiny_vits_dir) -> None:
    job_id = _submit(settings, db, str(tiny_vits_dir))
    ctx, _ = make_ctx()
    calls = []

    class CancelAfterFirst(Listener):
        def chunk_done(self, job_id: str, done: int, total: int) -> None:
            calls.append(done)
            if done == 1:
                cancel_jobs(db, [job_id])

    outcome = synthesize_job(job_id, dataclasses.replace(ctx, listeners=Listeners([CancelAfterFirst()])))
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
    outcome = None
    for attempt in range(3):
        ctx, _ = make_ctx(f"w/cpu/{attempt}", FakeEngine(crash_after=0), max_attempts=2)
        try:
            outcome = synthesize_job(job_id, ctx)
        except Crash:
            pass
    assert outcome is not None and outcome.status == JobStatus.FAILED
    [view] = job_views(db, [job_id])
    assert "attempts" in (view.error or "")


def test_a_retry_by_the_holder_is_not_a_new_attempt(settings, db, tiny_vits_dir) -> None:
    job_id = _submit(settings, db, str(tiny_vits_dir))
    assert lease.claim(db, job_id, "a", lease_s=60).attempt == 1  # type: ignore[union-attr]
    assert lease.claim(db, job_id, "a", lease_s=60).attempt == 1  # type: ignore[union-attr]


def test_a_user_given_id_is_its_own_job(settings, db, tiny_vits_dir) -> None:
    voice = str(tiny_vits_dir)
    [a] = submit([JobRequest(text=TEXT, voice=voice, id="alpha")], settings, db, publisher=None)
    [b] = submit([JobRequest(text=TEXT, voice=voice, id="beta")], settings, db, publisher=None)
    [again] = submit([JobRequest(text=TEXT, voice=voice, id="alpha")], settings, db, publisher=None)
    assert (a.id, b.id, again.id) == ("alpha", "beta", "alpha") and b.created and not again.created


def test_a_book_in_two_voices_is_two_books(settings, db, tiny_vits_dir, tmp_path) -> None:
    import shutil

    other_voice = tmp_path / "other-voice"
    shutil.copytree(tiny_vits_dir, other_voice)
    chapters = [JobRequest(text=f"Chapter {n} text.", title=f"C{n}", group_title="Book", group_index=n,
                           source="book.epub") for n in range(2)]
    first = submit([c.model_copy(update={"voice": str(tiny_vits_dir)}) for c in chapters], settings, db,
                   publisher=None)
    second = submit([c.model_copy(update={"voice": str(other_voice)}) for c in chapters], settings, db,
                    publisher=None)
    with db.session() as s:
        groups = {j.id: j.group_id for j in s.scalars(select(Job))}
    assert groups[first[0].id] == groups[first[1].id] != groups[second[0].id] == groups[second[1].id]


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
    assert lease.claim(db, job_id, "a", lease_s=60) is not None
    assert lease.claim(db, job_id, "b", lease_s=60) is None
    assert lease.claim(db, job_id, "a", lease_s=60) is not None  # the holder may re-enter


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


def test_queued_jobs_whose_message_was_lost_are_found_once(settings, db, tiny_vits_dir) -> None:
    job_id = _submit(settings, db, str(tiny_vits_dir))
    with db.session() as s:
        s.execute(update(Job).values(published_at=utcnow() - timedelta(seconds=120)))
    assert reaper.stranded_jobs(db, older_than_s=60) == [reaper.Republish(job_id, 5, "ttsfleet")]
    assert reaper.stranded_jobs(db, older_than_s=60) == []  # stamped: not again until it is old again


def test_a_reaped_job_goes_back_to_the_queue_it_was_submitted_to(settings, db, tiny_vits_dir) -> None:
    urgent = settings.model_copy(update={"queue": "urgent"})
    job_id = _submit(urgent, db, str(tiny_vits_dir))
    lease.claim(db, job_id, "dead/cpu/1", lease_s=60)
    with db.session() as s:
        s.execute(update(Job).values(lease_expires_at=utcnow() - timedelta(seconds=1),
                                     published_at=utcnow() - timedelta(seconds=120)))
    assert reaper.orphaned_jobs(db, lease_s=60) == [reaper.Republish(job_id, 5, "urgent")]
    assert reaper.route(db, job_id, 9) == reaper.Republish(job_id, 9, "urgent")
    assert reaper.route(db, "no-such-job", 9) is None


def test_a_stalled_worker_never_touches_the_result_its_successor_published(settings, db, make_ctx, tiny_vits_dir,
                                                                             monkeypatch) -> None:
    # Worker A stalls (VM pause, swap storm) just before recording the job as finished; its lease expires,
    # worker B takes the job over and succeeds; then A wakes up and tries to finish.
    job_id = _submit(settings, db, str(tiny_vits_dir))
    ctx_a, _ = make_ctx("a/cpu/1")
    ctx_b, _ = make_ctx("b/cpu/2")
    real_finish = lease.finish_jobs
    successor: list[object] = []

    def stall_then_finish(store, owner, finished, publish):  # type: ignore[no-untyped-def]
        if owner == "a/cpu/1" and not successor:
            with db.session() as s:  # A's lease runs out while it is frozen
                s.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
            successor.append(synthesize_job(job_id, ctx_b))
        return real_finish(store, owner, finished, publish)

    monkeypatch.setattr(lease, "finish_jobs", stall_then_finish)
    outcome_a = synthesize_job(job_id, ctx_a)
    assert successor[0].status == JobStatus.SUCCEEDED  # type: ignore[attr-defined]
    assert outcome_a.status == JobStatus.SUCCEEDED and "no longer held" in outcome_a.detail  # B's result
    [view] = job_views(db, [job_id])
    assert view.status == JobStatus.SUCCEEDED
    audio_path = Path(str(view.audio_path))
    assert audio_path.is_file(), "the loser deleted the winner's audio"
    for suffix in (".manifest.json", ".srt", ".vtt"):
        assert audio_path.with_suffix(suffix).is_file(), f"the loser deleted the winner's {suffix}"
    assert sf.info(str(audio_path)).duration == pytest.approx(view.audio_s, abs=0.01)
    leftovers = [p for p in (settings.output_dir / ".staging").rglob("*") if p.is_file()]
    assert leftovers == [], "the loser left its own staged files behind"


def test_a_lost_message_is_sent_again_even_behind_a_backlog(settings, db, tiny_vits_dir) -> None:
    # Under steady load the broker queue is never empty; a job whose message was lost must not starve.
    from worker.device import parse_simulated
    from worker.precision import choose_policy
    from worker.runtime import WorkerRuntime

    lost = _submit(settings, db, str(tiny_vits_dir))
    waiting = _submit(settings, db, str(tiny_vits_dir), text="A job published a moment ago.")
    with db.session() as s:
        s.execute(update(Job).where(Job.id == lost).values(published_at=utcnow() - timedelta(seconds=120)))
        s.execute(update(Job).where(Job.id == waiting).values(published_at=utcnow()))
    device = parse_simulated("cpu::8")
    ws = WorkerSettings(database_url=settings.database_url, lease_s=60)
    runtime = WorkerRuntime(ws, db, device, choose_policy(device))
    sent: list[reaper.Republish] = []
    assert runtime.reap(sent.append) == [lost]
    assert sent == [reaper.Republish(lost, 5, "ttsfleet")]
    assert runtime.reap(sent.append) == []  # once per lease period, not on every pass


def test_one_reaper_pass_is_rate_limited_oldest_first(settings, db, tiny_vits_dir) -> None:
    ids = [_submit(settings, db, str(tiny_vits_dir), text=f"Notice number {n}.") for n in range(5)]
    with db.session() as s:
        for age, job_id in enumerate(reversed(ids)):
            s.execute(update(Job).where(Job.id == job_id).values(published_at=utcnow() - timedelta(seconds=100 + age)))
    first = reaper.due(db, lease_s=60, limit=2)
    assert [job.job_id for job in first] == [ids[0], ids[1]]  # the oldest two
    assert [job.job_id for job in reaper.due(db, lease_s=60, limit=10)] == ids[2:]


def test_a_poison_job_names_the_error_that_kept_it_from_finishing(settings, db, make_ctx, tiny_vits_dir) -> None:
    job_id = _submit(settings, db, str(tiny_vits_dir))
    for attempt in range(3):
        ctx, _ = make_ctx(f"w/cpu/{attempt}", FakeEngine(fail_with=OSError("no file named model.safetensors")),
                          max_attempts=2)
        try:
            synthesize_job(job_id, ctx)
        except OSError:
            pass
    [view] = job_views(db, [job_id])
    assert view.status == JobStatus.FAILED
    assert "gave up after 2 attempts" in (view.error or "")
    assert "last error: OSError: no file named model.safetensors" in (view.error or "")
    assert [(e.attempt, e.worker_id, e.error) for e in view.attempt_errors] == [
        (1, "w/cpu/0", "OSError: no file named model.safetensors"),
        (2, "w/cpu/1", "OSError: no file named model.safetensors")]


def test_status_filters_and_pages_and_a_failed_job_can_be_retried(settings, db, make_ctx, tiny_vits_dir) -> None:
    from producer.jobs import JobFilter, retry_jobs
    from producer.submit import publish_stored

    ids = [_submit(settings, db, str(tiny_vits_dir), text=f"Notice number {n}.") for n in range(5)]
    bad_ctx, _ = make_ctx(engine=FakeEngine(fail_with=SynthesisFailed("chunk 0 does not fit")))
    synthesize_job(ids[0], bad_ctx)
    failed = job_views(db, where=JobFilter(status=JobStatus.FAILED))
    assert [v.id for v in failed] == [ids[0]]
    pages = [job_views(db, where=JobFilter(limit=2, offset=o)) for o in (0, 2, 4)]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert {v.id for p in pages for v in p} == set(ids)  # pages cover every job once
    assert job_views(db, where=JobFilter(since=utcnow() + timedelta(hours=1))) == []
    with pytest.raises(InvalidInput, match="only failed jobs"):
        retry_jobs(db, [ids[0], ids[1]])  # ids[1] is queued: nothing changes
    assert retry_jobs(db, [ids[0]]) == [ids[0]]
    sent: list[tuple[str, int, str | None]] = []

    class Recorder(Publisher):
        def __init__(self) -> None:  # no broker: records what would be sent
            pass

        def publish(self, job_id: str, priority: int, queue: str | None = None) -> None:
            sent.append((job_id, priority, queue))

    publish_stored([ids[0]], db, Recorder())
    assert sent == [(ids[0], 5, "ttsfleet")]
    [view] = job_views(db, [ids[0]])
    assert view.status == JobStatus.QUEUED and view.attempts == 0 and view.error is None
    assert [e.error for e in view.attempt_errors] == ["SynthesisFailed: chunk 0 does not fit"]  # history kept
    ctx, _ = make_ctx()
    assert synthesize_job(ids[0], ctx).status == JobStatus.SUCCEEDED


def test_the_same_input_submitted_concurrently_is_one_job(settings, db, tiny_vits_dir) -> None:
    from concurrent.futures import ThreadPoolExecutor

    request = JobRequest(text=TEXT, voice=str(tiny_vits_dir))
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: submit([request], settings, db, publisher=None), range(8)))
    assert len({r[0].id for r in results}) == 1
    assert sum(r[0].created for r in results) == 1
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 1


def test_a_stopping_worker_claims_no_new_job(settings, db, tiny_vits_dir) -> None:
    """Once a stop is requested (SIGTERM, or SIGQUIT's put-back), a message that still reaches the worker is
    not claimed: the job stays queued for the message to be sent again, never running under a dying lease."""
    from worker.device import parse_simulated
    from worker.precision import choose_policy
    from worker.runtime import WorkerRuntime

    job_id = _submit(settings, db, str(tiny_vits_dir))
    device = parse_simulated("cpu::8")
    runtime = WorkerRuntime(WorkerSettings(database_url=settings.database_url), db, device, choose_policy(device))
    runtime.request_stop()
    with pytest.raises(WorkerStopping, match="not started"):
        runtime.run_job(job_id)
    [view] = job_views(db, [job_id])
    assert view.status == JobStatus.QUEUED and view.attempts == 0


def test_a_transient_store_outage_puts_jobs_back_without_counting_attempts(settings, db, make_ctx, tiny_vits_dir,
                                                                           monkeypatch) -> None:
    """An object store down longer than `max_attempts` retries never makes a notice poison: each put-back
    records its error, and a transient error is no attempt of the job's (only crashes count)."""
    from schemas.errors import RetryableError
    from worker.outputs import JobFiles

    ids = [_submit(settings, db, str(tiny_vits_dir), text=f"Notice number {n}.") for n in range(3)]
    real_publish = JobFiles.publish
    down = [True]

    def publish(self, staged, location):  # type: ignore[no-untyped-def]
        if down[0]:
            raise RetryableError("could not store s3://bucket/x.wav: connection refused")
        return real_publish(self, staged, location)

    monkeypatch.setattr(JobFiles, "publish", publish)
    for attempt in range(4):
        ctx, _ = make_ctx(f"w/cpu/{attempt}", max_attempts=2)
        with pytest.raises(RetryableError):
            synthesize_job(ids[0], ctx)
    views = {v.id: v for v in job_views(db, ids)}
    for job_id in ids:  # the claimed job and its companions, each put back with the error kept
        assert views[job_id].status == JobStatus.QUEUED and views[job_id].attempts == 0
        assert len(views[job_id].attempt_errors) == 4
        assert all("RetryableError" in e.error for e in views[job_id].attempt_errors)
    down[0] = False
    ctx, _ = make_ctx("w/cpu/9", max_attempts=2)
    assert synthesize_job(ids[0], ctx).status == JobStatus.SUCCEEDED
    assert {v.status for v in job_views(db, ids)} == {JobStatus.SUCCEEDED}


def test_a_cancelled_long_job_keeps_no_chunk_audio(settings, db, make_ctx, tiny_vits_dir) -> None:
    job_id = _submit(settings, db, str(tiny_vits_dir))  # five chunks: a long job, stored as it is made
    ctx, _ = make_ctx()

    class CancelAfterFirst(Listener):
        def chunk_done(self, job_id: str, done: int, total: int) -> None:
            if done == 1:
                cancel_jobs(db, [job_id])

    outcome = synthesize_job(job_id, dataclasses.replace(ctx, listeners=Listeners([CancelAfterFirst()])))
    assert outcome.status == JobStatus.CANCELLED
    assert not (settings.output_dir / ".chunks" / job_id).exists()
