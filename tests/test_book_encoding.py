"""The `.m4b` off the critical path: each chapter is encoded once, beside synthesis (a chapter's job is done
while its encode still runs), the book is joined without encoding again, and a re-rendered chapter costs
exactly one chapter's encode before the book is joined anew. Model-free `null:` voice, real ffmpeg."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from producer.book_view import book_view
from producer.inputs import read_inputs
from producer.rerender import rerender
from producer.submit import submit
from schemas.db import Store, open_store
from schemas.settings import ProducerSettings, WorkerSettings
from schemas.status import AudioFormat, JobStatus
from tests.books import build_epub
from worker import book_audio
from worker.runtime import WorkerRuntime

CHAPTERS = [("One", "<p>The first chapter has a few words in it.</p>"),
            ("Two", "<p>The second chapter names the Duchess once.</p>"),
            ("Three", "<p>The third chapter is short.</p>")]


@pytest.fixture
def book(tmp_path: Path) -> tuple[ProducerSettings, Store, list[str]]:
    settings = ProducerSettings(database_url=f"sqlite:///{tmp_path / 'store.db'}", output_dir=tmp_path / "out",
                                voice="null:")
    store = open_store(settings.database_url)
    epub = build_epub(tmp_path / "book.epub", CHAPTERS, title="Encoded", author="A. Writer")
    requests = read_inputs([str(epub)], None, voice="null:", format=AudioFormat.WAV, priority=5)  # type: ignore[arg-type]
    return settings, store, [s.id for s in submit(requests, settings, store, publisher=None)]


def _runtime(settings: ProducerSettings) -> WorkerRuntime:
    return WorkerRuntime.start(WorkerSettings(database_url=settings.database_url, output_dir=settings.output_dir,
                                              voice="null:", device="cpu", worker_name="encoding-test"))


def _counting(monkeypatch: pytest.MonkeyPatch, gate: threading.Event | None = None) -> list[str]:
    """Every chapter encode, by name; with `gate`, each waits for it first."""
    encoded: list[str] = []
    real = book_audio.encode_chapter

    def encode(audio: Path, out_path: Path) -> Path | None:
        if gate is not None:
            assert gate.wait(timeout=60), "the encode was never let through"
        encoded.append(audio.name)
        return real(audio, out_path)

    monkeypatch.setattr(book_audio, "encode_chapter", encode)
    return encoded


def test_chapters_are_encoded_beside_synthesis_and_the_book_joined_after_the_last(
        book: tuple[ProducerSettings, Store, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    settings, store, ids = book
    gate = threading.Event()
    encoded = _counting(monkeypatch, gate)
    runtime = _runtime(settings)
    try:
        for job_id in ids:  # every chapter finishes while no encode has been let through: not on its thread
            assert runtime.run_job(job_id).status == JobStatus.SUCCEEDED
        assert encoded == [] and book_view(store, book_view(store, _book(store, ids)).id).m4b_path is None
        gate.set()
    finally:
        runtime.stop()  # drains the encoder: every chapter encoded, the book joined
    view = book_view(store, _book(store, ids))
    assert len(encoded) == len(ids) == 4 and view.m4b_path is not None and Path(view.m4b_path).is_file()


def test_a_rerendered_chapter_costs_one_encode(book: tuple[ProducerSettings, Store, list[str]],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    settings, store, ids = book
    encoded = _counting(monkeypatch)
    runtime = _runtime(settings)
    try:
        for job_id in ids:
            assert runtime.run_job(job_id).status == JobStatus.SUCCEEDED
    finally:
        runtime.stop()
    first = book_view(store, _book(store, ids))
    assert first.m4b_path is not None and len(encoded) == 4
    before = book_audio.encoded_duration_s(Path(first.m4b_path))

    done = rerender(store, ids[2], settings, lexicon={"Duchess": "Duchess of the long and winding title"})
    assert done.queued and book_view(store, first.id).m4b_path is None  # not ready while a chapter is redone
    runtime = _runtime(settings)
    try:
        assert runtime.run_job(ids[2]).status == JobStatus.SUCCEEDED
    finally:
        runtime.stop()
    again = book_view(store, first.id)
    assert len(encoded) == 5  # the re-rendered chapter alone was encoded again
    assert again.m4b_path == first.m4b_path and book_audio.encoded_duration_s(Path(again.m4b_path)) > before + 0.5


def _book(store: Store, ids: list[str]) -> str:
    from producer.jobs import job_views

    book_id = job_views(store, ids[:1])[0].book_id
    assert book_id is not None
    return book_id


def test_a_book_whose_encode_was_lost_with_its_worker_is_joined_by_a_reaper(
        book: tuple[ProducerSettings, Store, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker killed between its chapters' success and their encode (here: its encoder never gets them)
    leaves a book with no .m4b; once the book has been finished for UNJOINED_AFTER_S, any worker's reaper
    encodes what is missing and joins it, once."""
    from datetime import timedelta

    from sqlalchemy import update

    from schemas.tables import Book, Job, utcnow
    from worker import books

    settings, store, ids = book
    encoded = _counting(monkeypatch)
    killed = _runtime(settings)
    killed.ctx.book_queue = lambda _job_id: None  # what a SIGKILL after each success amounts to
    try:
        for job_id in ids:
            assert killed.run_job(job_id).status == JobStatus.SUCCEEDED
    finally:
        killed.stop()
    book_id = _book(store, ids)
    with store.session() as session:  # its row, as `submit` and the API record it
        session.add(Book(id=book_id, title="Encoded", author="A. Writer"))
    assert encoded == [] and book_view(store, book_id).m4b_path is None
    assert books.unjoined_chapters(store) == []  # just finished: its own worker may still be encoding
    with store.session() as session:
        session.execute(update(Job).where(Job.id.in_(ids)).values(
            finished_at=utcnow() - timedelta(seconds=books.UNJOINED_AFTER_S + 60)))
    assert sorted(books.unjoined_chapters(store)) == sorted(ids)
    reaper = _runtime(settings)
    try:
        reaper.reap(lambda _job: None)
        reaper.reap(lambda _job: None)  # a second pass hands nothing over again
    finally:
        reaper.stop()  # drains its encoder
    view = book_view(store, book_id)
    assert view.m4b_path is not None and Path(view.m4b_path).is_file() and len(encoded) == len(ids)
    assert books.unjoined_chapters(store) == []
