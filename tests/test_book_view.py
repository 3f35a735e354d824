"""A book's status follows its chapters', and its ETA is its last unfinished chapter's (every job ahead of
it over the fleet's measured throughput)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from producer.book_view import book_status, book_view
from producer.books import BookNotFound, expand_ids
from producer.submit import submit
from schemas.db import open_store
from schemas.messages import JobRequest
from schemas.settings import ProducerSettings
from schemas.status import JobStatus
from schemas.tables import Job, JobMetrics, Worker, utcnow

Q, R, S, F, C = JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED


@pytest.mark.parametrize(("chapters", "book"), [
    ([Q, Q], Q), ([S, Q], R), ([S, R, Q], R), ([S, S], S), ([S, F], F), ([F, Q], R), ([S, C], C), ([C, F, S], F)])
def test_a_books_status_follows_its_chapters(chapters: list[JobStatus], book: JobStatus) -> None:
    assert book_status(chapters) == book


def test_a_books_eta_is_its_last_chapters_and_ids_expand_to_chapters(tmp_path: Path) -> None:
    settings = ProducerSettings(database_url=f"sqlite:///{tmp_path / 'store.db'}", output_dir=tmp_path / "out",
                                voice="null:")
    store = open_store(settings.database_url)
    chapters = [JobRequest(text=f"Chapter {n} has exactly this many words in it, more or less.", title=f"C{n}",
                           group_title="Book", group_index=n, source="book.epub") for n in range(3)]
    ids = [s.id for s in submit(chapters, settings, store, publisher=None)]
    book_id = book_view_id(store, ids[0])
    assert book_view(store, book_id).eta_s is None  # nothing measured yet
    with store.session() as session:
        session.add(Worker(id="w1", host="h", pid=1, device="cpu", card="cpu", backend="cpu", torch_version="x",
                           dtype="float32", state="ready", heartbeat_at=utcnow()))
        session.add(JobMetrics(job_id=ids[0], voice="null:", card="cpu", backend="cpu", dtype="float32", chars=100,
                               chunks=1, audio_s=5.0, synth_s=1.0, queue_wait_s=0.0, latency_s=1.0))  # 100 chars/s
        session.execute(update(Job).where(Job.id == ids[0]).values(status=JobStatus.SUCCEEDED, chunks_done=1,
                                                                   finished_at=utcnow()))
    view = book_view(store, book_id)
    with store.read() as session:
        remaining = sum(session.get_one(Job, job_id).chars for job_id in ids[1:])  # the two chapters still queued
    assert view.status == JobStatus.RUNNING and view.chapters_done == 1
    assert view.eta_s == pytest.approx(remaining / 100.0, abs=0.1)
    assert expand_ids(store, [book_id, ids[1]]) == ids  # the book's chapters, each once
    assert expand_ids(store, ["not-a-thing"]) == ["not-a-thing"]  # left for the caller's own refusal
    with pytest.raises(BookNotFound, match="no such book: 0123456789abcdef"):
        book_view(store, "0123456789abcdef")
    store.dispose()


def book_view_id(store: object, job_id: str) -> str:
    from producer.jobs import job_views

    [view] = job_views(store, [job_id])  # type: ignore[arg-type]
    assert view.book_id is not None
    return view.book_id
