"""A result's life after its job ends: `retry` of a failed job whose chunk audio was deleted, `rerender` and
`retry` of purged jobs, `gc` stopped by an object-store outage (moto's S3 server behind the fault proxy),
`gc` racing a re-render, and purged S3 audio no longer served from the service's local cache."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from producer.jobs import job_views, retry_jobs
from producer.rerender import rerender
from producer.results import purge_expired
from producer.submit import submit
from schemas.db import Store, open_store
from schemas.errors import InvalidInput, SynthesisFailed
from schemas.messages import JobRequest
from schemas.settings import ProducerSettings, ServiceSettings, WorkerSettings
from schemas.status import JobStatus
from schemas.storage import OutputStore, open_output_store, result_files
from schemas.tables import Chunk, Job, utcnow
from service.app import create_app
from tests.conftest import TEST_VOICE_DIRS
from tests.fakes import FakeEngine
from tests.proxy import FaultyProxy
from tests.test_storage import MotoServer
from worker.engine import ChunkAudio, ChunkInput, EngineRun
from worker.job import JobContext, synthesize_job

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning:botocore.*")]
TEXT = ("The library opens at nine. Books are due in three weeks. Late returns pay a small fee. "
        "The reading room is quiet. Please keep it so.")
BUCKET = "ttsfleet-lifecycle"


class _FailingLater(FakeEngine):
    """Stores two chunks, then fails the job permanently (a chunk that cannot be synthesized)."""

    def synthesize(self, chunks: Sequence[ChunkInput], on_chunk: Callable[[ChunkAudio], None]) -> EngineRun:
        super().synthesize(chunks[:2], on_chunk)
        raise SynthesisFailed("chunk 2 does not fit in memory")


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[MotoServer, FaultyProxy]]:
    """moto's S3 server with a bucket, reached through the fault proxy (AWS_ENDPOINT_URL points at it)."""
    import s3fs

    server = MotoServer(tmp_path)
    proxy = FaultyProxy("127.0.0.1", server.port)
    try:
        server.ready(BUCKET)
        for key, value in {**server.env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}.items():
            monkeypatch.setenv(key, value)
        s3fs.S3FileSystem.clear_instance_cache()  # no filesystem of an earlier test's endpoint
        yield server, proxy
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        proxy.close()
        server.close()


def _settings(db_url: str, out: str) -> ProducerSettings:
    return ProducerSettings(database_url=db_url, output_dir=out, max_chunk_chars=40,  # type: ignore[arg-type]
                            voice_dirs=TEST_VOICE_DIRS)


def _ctx(settings: ProducerSettings, store: Store, engine: FakeEngine) -> JobContext:
    ws = WorkerSettings(database_url=settings.database_url, output_dir=settings.output_location)  # type: ignore[arg-type]
    return JobContext(store=store, settings=ws, worker_id="host/cpu/1", engine_for=lambda _voice: engine)


def _run(job_id: str, ctx: JobContext) -> JobStatus | str:
    try:
        outcome = synthesize_job(job_id, ctx)
    except Exception as err:  # what a retry that cannot work did before the fix
        return f"{type(err).__name__}: {err}"
    return outcome.status or "nothing"


def _retry_revives(settings: ProducerSettings, store: Store, voice: str) -> None:
    [job] = submit([JobRequest(text=TEXT, voice=voice)], settings, store, publisher=None)
    assert _run(job.id, _ctx(settings, store, _FailingLater())) == JobStatus.FAILED
    output = open_output_store(settings.output_location)
    with store.read() as session:
        stored = [str(p) for p in session.scalars(select(Chunk.audio_path).where(Chunk.job_id == job.id)) if p]
    assert len(stored) == 2 and not any(output.exists(p) for p in stored)  # deleted on failure, rows kept
    assert retry_jobs(store, [job.id]) == [job.id]
    outcomes = [_run(job.id, _ctx(settings, store, FakeEngine())) for _ in range(2)]
    assert outcomes[0] == JobStatus.SUCCEEDED, outcomes
    [view] = job_views(store, [job.id])
    assert view.status == JobStatus.SUCCEEDED and view.chunks_done == view.chunks_total
    assert output.exists(str(view.audio_path))


def test_retry_revives_a_failed_job_whose_chunk_audio_was_deleted(db_url: str, tmp_path: Path,
                                                                  tiny_vits_dir: Path) -> None:
    store = open_store(db_url)
    try:
        _retry_revives(_settings(db_url, str(tmp_path / "out")), store, str(tiny_vits_dir))
    finally:
        store.dispose()


@pytest.mark.slow
def test_retry_revives_a_failed_job_with_its_audio_in_s3(sqlite_url: str, s3: tuple[MotoServer, FaultyProxy],
                                                         tiny_vits_dir: Path) -> None:
    store = open_store(sqlite_url)
    try:
        _retry_revives(_settings(sqlite_url, f"s3://{BUCKET}/fleet"), store, str(tiny_vits_dir))
    finally:
        store.dispose()


def _finished_long_ago(settings: ProducerSettings, store: Store, voice: str) -> str:
    """A job run to success (fake engine), its finish moved an hour back."""
    [job] = submit([JobRequest(text=TEXT, voice=voice)], settings, store, publisher=None)
    assert _run(job.id, _ctx(settings, store, FakeEngine())) == JobStatus.SUCCEEDED
    with store.session() as session:
        session.execute(update(Job).where(Job.id == job.id).values(finished_at=utcnow() - timedelta(hours=1)))
    return job.id


def test_rerender_and_retry_of_a_purged_job_make_its_audio_again(db_url: str, tmp_path: Path,
                                                                 tiny_vits_dir: Path) -> None:
    settings = _settings(db_url, str(tmp_path / "out"))
    store = open_store(db_url)
    output = open_output_store(settings.output_location)
    try:
        job_id = _finished_long_ago(settings, store, str(tiny_vits_dir))
        assert purge_expired(store, output, ttl_s=60).job_ids == [job_id]
        again = rerender(store, job_id, settings)  # the same text: before the fix "success", with no audio
        assert again.queued and again.chunks_redone == again.view.chunks_total
        assert again.view.audio_purged_at is None
        assert _run(job_id, _ctx(settings, store, FakeEngine())) == JobStatus.SUCCEEDED
        [view] = job_views(store, [job_id])
        assert output.exists(str(view.audio_path)) and view.audio_purged_at is None
        [failed] = submit([JobRequest(text="A notice that fails. It has two sentences.", voice=str(tiny_vits_dir))],
                          settings, store, publisher=None)
        assert _run(failed.id, _ctx(settings, store, FakeEngine(fail_with=SynthesisFailed("no")))) == JobStatus.FAILED
        assert purge_expired(store, output, ttl_s=0.0, now=utcnow() + timedelta(seconds=5)).job_ids
        retry_jobs(store, [failed.id])
        assert job_views(store, [failed.id])[0].audio_purged_at is None
    finally:
        store.dispose()


class _InterleavedStore(Store):
    """The store, running `before` once just before the first write transaction that follows."""

    def __init__(self, store: Store, before: Callable[[], None]) -> None:
        super().__init__(store.engine)
        self._before: Callable[[], None] | None = before

    def session(self) -> Any:
        if self._before is not None:
            before, self._before = self._before, None
            before()
        return super().session()


def test_gc_racing_a_rerender_leaves_the_new_result_alone(db_url: str, tmp_path: Path, tiny_vits_dir: Path) -> None:
    """`gc` reads a job that ended an hour ago; before it acts, the job is re-rendered and finishes again
    (5.5 s ago, inside the 60 s TTL). Before the fix `gc` deleted the new result and marked the job purged."""
    settings = _settings(db_url, str(tmp_path / "out"))
    store = open_store(db_url)
    output = open_output_store(settings.output_location)
    try:
        job_id = _finished_long_ago(settings, store, str(tiny_vits_dir))

        def rerendered_and_finished() -> None:
            rerender(store, job_id, settings, text=TEXT + " One more sentence.")
            assert _run(job_id, _ctx(settings, store, FakeEngine())) == JobStatus.SUCCEEDED
            with store.session() as session:
                session.execute(update(Job).where(Job.id == job_id)
                                .values(finished_at=utcnow() - timedelta(seconds=5.5)))

        purged = purge_expired(_InterleavedStore(store, rerendered_and_finished), output, ttl_s=60)
        [view] = job_views(store, [job_id])
        assert purged.job_ids == [] and view.audio_purged_at is None
        assert all(output.exists(f) for f in result_files(str(view.audio_path)))
    finally:
        store.dispose()


def test_rerender_and_retry_wait_while_gc_deletes_a_jobs_files(db_url: str, tmp_path: Path,
                                                               tiny_vits_dir: Path) -> None:
    from producer.results import _Expired, _take

    settings = _settings(db_url, str(tmp_path / "out"))
    store = open_store(db_url)
    try:
        job_id = _finished_long_ago(settings, store, str(tiny_vits_dir))
        with store.read() as session:
            job = session.get_one(Job, job_id)
            held = _Expired(job.id, JobStatus(job.status), job.finished_at, job.audio_path, None)
        assert _take(store, held, "gc-test")
        with pytest.raises(InvalidInput, match="gc"):
            rerender(store, job_id, settings, text="Something else entirely.")
    finally:
        store.dispose()


def _published_in_s3(settings: ProducerSettings, store: Store, voice: str, tmp_path: Path) -> tuple[str, str]:
    """A job that succeeded an hour ago, its result (audio and side files) and a chunk put into S3."""
    [job] = submit([JobRequest(text="Stored in the bucket.", voice=voice)], settings, store, publisher=None)
    output = open_output_store(settings.output_location)
    location = output.join(f"{job.id}.wav")
    local = tmp_path / "a.wav"
    sf.write(local, np.linspace(-0.5, 0.5, 8000, dtype=np.float32), 16000, subtype="PCM_16")
    for target in [*result_files(location), output.join(".chunks", job.id, "00000-a1.wav")]:
        output.put_file(local, target)
    with store.session() as session:
        session.execute(update(Job).where(Job.id == job.id).values(
            status=JobStatus.SUCCEEDED, audio_path=location, finished_at=utcnow() - timedelta(hours=1)))
    return job.id, location


def _left_in_s3(output: OutputStore, job_id: str, location: str) -> list[str]:
    chunks = output.list(output.join(".chunks", job_id))
    return [f for f in result_files(location) if output.exists(f)] + chunks


@pytest.mark.slow
def test_gc_stopped_by_an_object_store_outage_leaves_the_rest_for_the_next_pass(
        sqlite_url: str, s3: tuple[MotoServer, FaultyProxy], tmp_path: Path, tiny_vits_dir: Path) -> None:
    _server, proxy = s3
    settings = _settings(sqlite_url, f"s3://{BUCKET}/fleet")
    store = open_store(sqlite_url)
    output = open_output_store(settings.output_location)
    try:
        job_id, location = _published_in_s3(settings, store, str(tiny_vits_dir), tmp_path)
        assert len(_left_in_s3(output, job_id, location)) == 5
        proxy.down()
        try:
            during = purge_expired(store, output, ttl_s=60)
        except Exception as err:  # before the fix the outage escaped, after the job was marked purged
            during = f"{type(err).__name__}"  # type: ignore[assignment]
        finally:
            proxy.up()
        print(f"gc during the outage: {during}")
        [view] = job_views(store, [job_id])
        assert view.audio_purged_at is None, "marked purged while its files are still there"
        after = purge_expired(store, output, ttl_s=60)
        assert after.job_ids == [job_id] and after.error is None
        assert _left_in_s3(output, job_id, location) == []
    finally:
        store.dispose()


@pytest.mark.slow
def test_purged_s3_audio_is_no_longer_served_from_the_local_cache(
        sqlite_url: str, redis_url: str, s3: tuple[MotoServer, FaultyProxy], tmp_path: Path,
        tiny_vits_dir: Path) -> None:
    from service.audio import CACHE

    settings = _settings(sqlite_url, f"s3://{BUCKET}/fleet")
    store = open_store(sqlite_url)
    output = open_output_store(settings.output_location)
    service = ServiceSettings.from_env({**os.environ, "TTSFLEET_DATABASE_URL": sqlite_url,
                                        "TTSFLEET_BROKER_URL": redis_url, "TTSFLEET_VOICE_DIRS": TEST_VOICE_DIRS,
                                        "TTSFLEET_OUTPUT_DIR": settings.output_location})
    try:
        job_id, _location = _published_in_s3(settings, store, str(tiny_vits_dir), tmp_path)
        apps = [create_app(service, store, webhooks=False) for _ in range(2)]  # two `serve` processes on one host
        with TestClient(apps[0]) as first, TestClient(apps[1]) as second:
            assert [c.get(f"/v1/jobs/{job_id}/audio").status_code for c in (first, second)] == [200, 200]
            assert list(CACHE.glob(f"{job_id}-*"))
            assert purge_expired(store, output, ttl_s=60).job_ids == [job_id]
            after = [c.get(f"/v1/jobs/{job_id}/audio") for c in (first, second)]
            assert [a.status_code for a in after] == [410, 410], [a.status_code for a in after]
            assert "result TTL" in after[0].json()["detail"]
            assert client_detail(first, job_id)["audio_url"] is None
        assert not list(CACHE.glob(f"{job_id}-*"))  # the cached copy went too
    finally:
        store.dispose()


def client_detail(client: TestClient, job_id: str) -> dict[str, Any]:
    detail: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
    return detail
