"""Bookkeeping at GPU speed, without Celery: the model-free `null:` voice, a unit of notices finished in
one transaction, a long job's chunks stored once per engine batch, messages carrying groups of short jobs,
and submit's cost independent of the store's size (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sqlalchemy import event, func, select, text

from producer.jobs import job_views
from producer.submit import Submitted, submit
from schemas.broker import Publisher
from schemas.db import Store
from schemas.errors import InvalidInput, UnknownVoice
from schemas.messages import JobRequest, SynthesizeMessage
from schemas.scheduling import SHORT_JOBS_PER_MESSAGE, jobs_per_message
from schemas.settings import ProducerSettings, WorkerSettings
from schemas.status import JobStatus
from schemas.tables import Chunk, Job, JobMetrics
from schemas.voices import NULL_SAMPLE_RATE_HZ, list_voices, resolve_voice_name
from tests.fakes import Crash
from worker.context import JobContext
from worker.device import parse_simulated
from worker.job import run_delivery
from worker.null_voice import NULL_BATCH_ITEMS, NullEngine, null_samples
from worker.precision import choose_policy
from worker.synthesis import ChunkAudio, ChunkInput, EngineRun

NOTICE = "Water service on Elm Street stops from nine to one on June the twelfth, notice {n}."


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> ProducerSettings:
    return ProducerSettings(database_url=db_url, output_dir=tmp_path / "out", voice="null:")


def _engine() -> NullEngine:
    device = parse_simulated("cpu::8")
    return NullEngine(device, choose_policy(device))


def _ctx(settings: ProducerSettings, db: Store, engine: NullEngine | None = None, **overrides: object) -> JobContext:
    ws = WorkerSettings(database_url=settings.database_url, output_dir=settings.output_dir, voice="null:",
                        **overrides)  # type: ignore[arg-type]
    null = engine or _engine()
    return JobContext(store=db, settings=ws, worker_id="host/cpu/0", engine_for=lambda _voice: null)


@contextmanager
def _counted(db: Store) -> Iterator[dict[str, int]]:
    """Commits and statements the store's engine runs inside the block."""
    seen = {"commits": 0, "statements": 0}

    def commit(_conn: object) -> None:
        seen["commits"] += 1

    def statement(*_: object) -> None:
        seen["statements"] += 1

    event.listen(db.engine, "commit", commit)
    event.listen(db.engine, "before_cursor_execute", statement)
    try:
        yield seen
    finally:
        event.remove(db.engine, "commit", commit)
        event.remove(db.engine, "before_cursor_execute", statement)


def test_the_null_voice_is_listed_and_refuses_what_it_cannot_be() -> None:
    info = resolve_voice_name("null:")
    assert (info.name, info.kind, info.sample_rate_hz, info.available) == ("null:", "null", 22_050, True)
    assert "null:" in [v.name for v in list_voices(include_hf_cache=False)]
    with pytest.raises(UnknownVoice, match="single speaker"):
        resolve_voice_name("null:#2")
    with pytest.raises(UnknownVoice, match="'null:' alone"):
        resolve_voice_name("null:loud")


def test_a_unit_of_notices_ends_in_one_finishing_transaction_with_silence_of_the_right_length(
        settings: ProducerSettings, db: Store) -> None:
    ids = [s.id for s in submit([JobRequest(text=NOTICE.format(n=n)) for n in range(32)], settings, db,
                                publisher=None)]
    ctx = _ctx(settings, db)
    with _counted(db) as seen:
        outcomes = run_delivery(ids, ctx)
    assert sorted(o.job_id for o in outcomes) == sorted(ids)
    assert {o.status for o in outcomes} == {JobStatus.SUCCEEDED}
    # One claim and one finish for all 32 (the read before the claim ends in a rollback, not a commit).
    assert seen["commits"] <= 2, seen
    assert seen["statements"] <= 12, seen
    views = job_views(db, ids)
    for view in views:
        info = sf.info(str(view.audio_path))
        expected = sum(null_samples(c.text) for c in _chunks(db, view.id))
        assert info.samplerate == NULL_SAMPLE_RATE_HZ and info.frames >= expected
        audio, _ = sf.read(str(view.audio_path), dtype="float32")
        assert not np.any(audio)  # silence
        assert Path(str(view.audio_path)).with_suffix(".manifest.json").is_file()
    assert not (settings.output_dir / ".chunks").exists()  # a short job stores no chunk audio
    assert not any((settings.output_dir / ".staging").rglob("*.*"))  # nothing staged is left
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(JobMetrics)) == 32
        assert s.scalar(select(func.sum(Chunk.audio_s))) > 0  # chunk figures kept, without files
        assert s.scalar(select(func.count()).select_from(Chunk).where(Chunk.audio_path.is_not(None))) == 0


def _chunks(db: Store, job_id: str) -> list[Chunk]:
    with db.read() as s:
        return list(s.scalars(select(Chunk).where(Chunk.job_id == job_id).order_by(Chunk.idx)))


def _long_job(settings: ProducerSettings, db: Store, chunks: int) -> str:
    text_ = " ".join(["A sentence of the long job."] * chunks)
    [job] = submit([JobRequest(text=text_)], settings.model_copy(update={"max_chunk_chars": 40}), db, publisher=None)
    assert job.chunks_total == chunks
    return job.id


def test_a_long_jobs_chunks_are_stored_once_per_engine_batch(settings: ProducerSettings, db: Store) -> None:
    job_id = _long_job(settings, db, 150)
    with _counted(db) as seen:
        [outcome] = run_delivery([job_id], _ctx(settings, db, segment_chars=0))
    assert outcome.status == JobStatus.SUCCEEDED
    batches = -(-150 // NULL_BATCH_ITEMS)
    files = sorted((settings.output_dir / ".chunks" / job_id).iterdir())
    assert len(files) == batches  # one file a batch, every chunk in it at its offset
    rows = _chunks(db, job_id)
    assert len({(r.audio_path, r.audio_offset) for r in rows}) == 150
    assert seen["commits"] <= batches + 2, seen  # a claim, a transaction a batch, a finish


class CrashingNull(NullEngine):
    """Dies after `after` chunks of one call, like a killed process."""

    after = 100

    def synthesize(self, chunks: Sequence[ChunkInput], on_chunk: Callable[[ChunkAudio], object]) -> EngineRun:
        def counted(chunk: ChunkAudio) -> None:
            if counted.n == self.after:  # type: ignore[attr-defined]
                raise Crash("killed mid-batch")
            counted.n += 1  # type: ignore[attr-defined]
            on_chunk(chunk)

        counted.n = 0  # type: ignore[attr-defined]
        return super().synthesize(chunks, counted)


def test_a_crash_loses_only_the_engine_batch_in_flight_and_the_job_resumes(settings: ProducerSettings,
                                                                             db: Store) -> None:
    job_id = _long_job(settings, db, 150)
    device = parse_simulated("cpu::8")
    with pytest.raises(Crash):
        run_delivery([job_id], _ctx(settings, db, CrashingNull(device, choose_policy(device)), segment_chars=0))
    [view] = job_views(db, [job_id])
    assert view.status == JobStatus.QUEUED and view.chunks_done == NULL_BATCH_ITEMS  # the first batch only
    seen: list[int] = []

    class Counting(NullEngine):
        def synthesize(self, chunks: Sequence[ChunkInput], on_chunk: Callable[[ChunkAudio], object]) -> EngineRun:
            seen.append(len(chunks))
            return super().synthesize(chunks, on_chunk)

    [outcome] = run_delivery([job_id], _ctx(settings, db, Counting(device, choose_policy(device)), segment_chars=0))
    assert outcome.status == JobStatus.SUCCEEDED and seen == [150 - NULL_BATCH_ITEMS]
    assert sf.info(str(job_views(db, [job_id])[0].audio_path)).frames > sum(null_samples(c.text)
                                                                             for c in _chunks(db, job_id))


class Recorder(Publisher):
    """A publisher without a broker: records the messages it would send."""

    def __init__(self) -> None:
        self.queue = "ttsfleet"
        self.messages: list[tuple[list[str], int, str | None]] = []

    def publish_many(self, messages: Sequence[tuple[Sequence[str], int, str | None]],
                     sent: Callable[[int], object] = lambda _n: None) -> None:
        for n, (ids, priority, queue) in enumerate(messages):
            self.messages.append((list(ids), priority, queue))
            sent(n)


def test_submit_sends_short_jobs_of_one_voice_and_priority_several_to_a_message(settings: ProducerSettings,
                                                                                 db: Store) -> None:
    recorder = Recorder()
    notices = [JobRequest(text=NOTICE.format(n=n)) for n in range(100)]
    urgent = [JobRequest(text=NOTICE.format(n=n), priority=9) for n in range(100, 103)]
    long_one = JobRequest(text=" ".join(f"Sentence {n} of a long one." for n in range(30)))
    submitted = submit([*notices, long_one, *urgent], settings, db, publisher=recorder)
    sizes = [len(ids) for ids, _, _ in recorder.messages]
    # The long job alone, then the groups: no worker is live (counted as one), so a group is half of what
    # waits, at most 32.
    assert sizes == [1, 32, 32, 32, 4, 2, 1]
    assert recorder.messages[-1][1] == 9 and recorder.messages[1][1] == 5
    assert sorted(j for ids, _, _ in recorder.messages for j in ids) == sorted(s.id for s in submitted)
    assert jobs_per_message(100, 2) == 25 and jobs_per_message(3, 8) == 1
    assert jobs_per_message(10_000, 1) == SHORT_JOBS_PER_MESSAGE


def test_messages_carry_one_job_as_version_1_and_a_group_as_version_2() -> None:
    one = SynthesizeMessage.of(["a1"])
    assert one.model_dump(exclude_defaults=True) == {"job_id": "a1"} and one.ids == ("a1",)
    group = SynthesizeMessage.model_validate({"schema_version": 2, "job_ids": ["a", "b"]})
    assert group.ids == ("a", "b")
    for bad in ({"schema_version": 2, "job_id": "a"}, {"schema_version": 1, "job_ids": ["a"]},
                {"schema_version": 2, "job_ids": ["a/../b"]}, {"schema_version": 2, "job_ids": ["x"] * 65}):
        with pytest.raises(ValueError):
            SynthesizeMessage.model_validate(bad)


def test_naming_looks_names_up_exactly_whatever_the_store_holds(settings: ProducerSettings, db: Store) -> None:
    with db.session() as s:  # a store that served many earlier runs of the same JSONL
        s.execute(text("INSERT INTO jobs (id, idempotency_key, status, priority, queue, voice, format, text, "
                       "options, warnings, chars, chunks_total, chunks_done, attempts, created_at, output_name) "
                       "VALUES (:id, :id, 'succeeded', 5, 'q', 'null:', 'wav', 'x', '{}', '[]', 1, 1, 1, 1, "
                       "'2026-01-01 00:00:00', :name)"),
                  [{"id": f"old{n}", "name": f"notices-{n % 500 + 1}{'' if n < 500 else f' ({n // 500 + 1})'}.wav"}
                   for n in range(1500)])
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, sql: str, *_: object) -> None:
        statements.append(sql)

    jsonl = settings.output_dir.parent / "notices.jsonl"
    jsonl.write_text("".join(json.dumps({"text": NOTICE.format(n=n)}) + "\n" for n in range(20)))
    from producer.inputs import read_inputs
    from schemas.status import AudioFormat

    requests = read_inputs([str(jsonl)], stdin=None, voice=None, format=AudioFormat.WAV, priority=5)  # type: ignore[arg-type]
    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        submit(requests, settings, db, publisher=None)
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert not [s for s in statements if " LIKE " in s.upper()], statements  # no prefix scans
    names = [n for n in statements if "output_name IN" in n.replace('"', "").replace("jobs.", "")]
    assert 1 <= len(names) <= 2, statements  # "x", "x (2)".."x (4)" in one query, "x (5).." in the next
    with db.read() as s:
        made = set(s.scalars(select(Job.output_name).where(~Job.id.like("old%"))))
    assert made == {f"notices-{n + 1} (4).wav" for n in range(20)}


def test_refusals_at_submit_leave_nothing_even_in_bulk(settings: ProducerSettings, db: Store) -> None:
    good = [JobRequest(text=NOTICE.format(n=n)) for n in range(50)]
    with pytest.raises(InvalidInput, match="nothing to speak"):
        submit([*good, JobRequest(text="   ")], settings, db, publisher=None)
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 0


def test_a_large_batch_prepared_in_several_processes_stores_what_one_process_would(
        settings: ProducerSettings, db: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import producer.submit as submit_module

    monkeypatch.setattr(submit_module, "PARALLEL_FROM", 8)
    texts = [NOTICE.format(n=n) + (" It is 5 p.m. on 3/4/2027." if n % 3 else "") for n in range(40)]
    serial = submit([JobRequest(text=t, title=f"serial {n}") for n, t in enumerate(texts)], settings, db,
                    publisher=None)
    shared = submit([JobRequest(text=t, title=f"shared {n}") for n, t in enumerate(texts)], settings, db,
                    publisher=None, processes=2)
    assert [r.created for r in shared] == [True] * 40 and len({r.id for r in serial + shared}) == 80

    def rows(results: list[Submitted]) -> list[tuple[object, ...]]:
        with db.read() as s:
            jobs = {j.id: j for j in s.scalars(select(Job).where(Job.id.in_([r.id for r in results])))}
            chunks = {(c.job_id, c.idx): c for c in s.scalars(select(Chunk).where(
                Chunk.job_id.in_([r.id for r in results])))}
        return [(jobs[r.id].chars, jobs[r.id].chunks_total, jobs[r.id].warnings,
                 [(c.text, c.written, c.break_after) for (job, _i), c in sorted(chunks.items()) if job == r.id])
                for r in results]

    assert rows(shared) == rows(serial)
    bad = [JobRequest(text=t, title=f"bad {n}") for n, t in enumerate(texts)]
    bad[17] = JobRequest(text="   ", source="notice-17.txt")
    with pytest.raises(InvalidInput, match=r"notice-17\.txt.*nothing to speak"):
        submit(bad, settings, db, publisher=None, processes=2)
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 80
