"""Pronunciation fixed once per book: the preview sentence, the entry's checks, and the entry applied to
every finished chapter with only the chunks that say the word synthesized again (an in-process worker on
the model-free `null:` voice, against SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from producer.books import book_chapter_ids
from producer.lexicon import Entry
from producer.pronounce import checked_entry, preview_sentence, pronounce
from producer.submit import submit
from schemas.db import Store, open_store
from schemas.errors import InvalidInput, JobNotFound
from schemas.job_options import JobOptions
from schemas.messages import JobRequest
from schemas.settings import ProducerSettings, WorkerSettings
from schemas.status import JobStatus
from schemas.tables import Chunk, Job
from tests.conftest import TEST_VOICE_DIRS
from worker.runtime import WorkerRuntime

# Five chunks a chapter or more: a chapter keeps its chunks' audio (a job of at most four does not).
CHAPTERS = [
    ("One", "The morning was cold. Tess lit the stove. The kettle sang. The cat slept. Snow fell."),
    ("Two", "A letter came for Tess. She read it twice.\n\nThen she burned it. The ashes were grey. Noon came."),
    ("Three", "Nobody called that week. The rain kept on. The roof leaked at last. Bread ran out. Spring came."),
]


def test_the_preview_is_the_first_sentence_that_says_the_word() -> None:
    text = "Chapter Two\n\nThe tessellated floor shone. A letter came for TESS, at last.   She read it twice."
    assert preview_sentence(text, Entry("tess", "Tez")) == "A letter came for TESS, at last."
    assert preview_sentence(text, Entry("Chapter", "Chap")) == "Chapter Two"
    with pytest.raises(InvalidInput, match="'Tess' is not in this chapter's text"):
        preview_sentence(text, Entry("Tess", "Tez"))  # a capital: exactly that spelling, and TESS is not it


def test_an_entry_is_checked_as_a_lexicon_line_is() -> None:
    assert checked_entry("  Tess ", "Tez") == Entry("Tess", "Tez")
    assert checked_entry("nasa", "[[ nˈæsə ]]").is_phonemes
    for word, say, message in [("a\tb", "c", "without TAB"), ("x", "[[ a", "unbalanced"), ("", "x", "empty"),
                               ("#tag", "x", "start with #"), ("x" * 101, "y", "at most 100")]:
        with pytest.raises(InvalidInput, match=message):
            checked_entry(word, say)


@pytest.fixture
def book(db_url: str, tmp_path: Path) -> Iterator[tuple[ProducerSettings, Store, WorkerRuntime, list[str]]]:
    """A three-chapter book on the `null:` voice, each chapter synthesized by an in-process worker."""
    settings = ProducerSettings(database_url=db_url, output_dir=tmp_path / "out", voice="null:",
                                voice_dirs=TEST_VOICE_DIRS, max_chunk_chars=40)
    store = open_store(db_url)
    requests = [JobRequest(text=body, title=title, group_title="Tess", group_index=n, source="tess.epub")
                for n, (title, body) in enumerate(CHAPTERS, 1)]
    jobs = submit(requests, settings, store, publisher=None)
    runtime = WorkerRuntime.start(WorkerSettings(database_url=db_url, output_dir=tmp_path / "out", voice="null:",
                                                 voice_dirs=TEST_VOICE_DIRS, device="cpu", worker_name="test"))
    for job in jobs:
        assert runtime.run_job(job.id).status == JobStatus.SUCCEEDED
    yield settings, store, runtime, [j.id for j in jobs]
    runtime.stop()
    store.dispose()


def _chunk_audio(store: Store, job_id: str) -> list[tuple[str, str | None, int | None]]:
    with store.read() as session:
        return [(c.text, c.audio_path, c.audio_offset) for c in
                session.scalars(select(Chunk).where(Chunk.job_id == job_id).order_by(Chunk.idx))]


def test_a_word_is_fixed_once_for_the_whole_book(book) -> None:  # type: ignore[no-untyped-def]
    settings, store, runtime, ids = book
    with store.read() as session:
        book_id = session.scalar(select(Job.group_id).where(Job.id == ids[0]))
    assert book_id and book_chapter_ids(store, book_id) == ids
    before = {j: _chunk_audio(store, j) for j in ids}
    published: list[str] = []

    done = pronounce(store, ids, [Entry("tess", "Tez")], settings, publish=published.extend)

    # "Tess" is said in one chunk of chapter one and one of chapter two; chapter three never says it.
    assert (done.jobs, done.chunks) == (2, 2) and published == ids[:2] == done.job_ids
    with store.read() as session:
        rows = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(ids)))}
    assert [rows[j].status for j in ids] == [JobStatus.QUEUED, JobStatus.QUEUED, JobStatus.SUCCEEDED]
    assert all(("tess", "Tez") in JobOptions.from_stored(rows[j].options).lexicon for j in ids[:2])
    # Chapter three never says it: left as it was (no entry to warn about as matching nothing).
    assert JobOptions.from_stored(rows[ids[2]].options).lexicon == () and rows[ids[2]].warnings == []
    for job_id in ids[:2]:
        after = _chunk_audio(store, job_id)
        redone = [a for a in after if a[1] is None]
        assert len(redone) == 1 and "Tez" in redone[0][0]
        assert [a for a in after if a[1] is not None] == [b for b in before[job_id] if "Tess" not in b[0]]
        assert runtime.run_job(job_id).status == JobStatus.SUCCEEDED
    assert _chunk_audio(store, ids[2]) == before[ids[2]]

    # The same entry again changes nothing the voice says: nothing is queued.
    again = pronounce(store, ids, [Entry("tess", "Tez")], settings, publish=published.extend)
    assert (again.jobs, again.chunks) == (0, 0) and published == ids[:2]
    # Said another way again: the chapters that now say "Tez" are found by their own entry for the word.
    changed = pronounce(store, ids, [Entry("tess", "Tessa")], settings, publish=published.extend)
    assert (changed.jobs, changed.chunks) == (2, 2) and published == ids[:2] * 2


def test_a_book_still_being_made_is_refused_whole(book) -> None:  # type: ignore[no-untyped-def]
    settings, store, _runtime, ids = book
    with store.session() as session:
        session.execute(update(Job).where(Job.id == ids[2]).values(status=JobStatus.RUNNING))
    with pytest.raises(InvalidInput, match=r"^1 of 3 chapters are still being made"):
        pronounce(store, ids, [Entry("tess", "Tez")], settings, publish=lambda _ids: None)
    with store.read() as session:
        assert list(session.scalars(select(Job.status).where(Job.id.in_(ids[:2])))) == [JobStatus.SUCCEEDED] * 2
    with pytest.raises(JobNotFound, match="no such book: 0123456789abcdef"):
        book_chapter_ids(store, "0123456789abcdef")


def test_the_routes_show_a_chapter_and_apply_a_word(book, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from schemas.settings import ServiceSettings
    from service.app import create_app

    settings, store, _runtime, ids = book
    with store.read() as session:
        book_id = session.scalar(select(Job.group_id).where(Job.id == ids[0]))
    service = ServiceSettings(database_url=settings.database_url, broker_url=redis_url, output_dir=settings.output_dir,
                              queue="ttsfleet-pronounce-test", voice="null:", voice_dirs=TEST_VOICE_DIRS)
    with TestClient(create_app(service, store, webhooks=False)) as client:
        assert client.get(f"/v1/jobs/{ids[1]}/text").json() == {"id": ids[1], "title": "Two", "text": CHAPTERS[1][1]}
        assert client.get("/v1/jobs/nope/text").status_code == 404
        bad = client.post(f"/v1/books/{book_id}/pronunciations", json={"word": "tess", "say": "[[ a"})
        assert bad.status_code == 400 and bad.json() == {"detail": "the entry:1: unbalanced [[ ]] in the replacement"}
        assert client.post(f"/v1/books/{book_id}/pronunciations", json={"word": "tess"}).status_code == 422
        missing = client.post("/v1/books/0123456789abcdef/pronunciations", json={"word": "tess", "say": "Tez"})
        assert missing.status_code == 404 and missing.json()["detail"] == "no such book: 0123456789abcdef"
        applied = client.post(f"/v1/books/{book_id}/pronunciations", json={"word": "tess", "say": "Tez"})
        assert applied.status_code == 202 and applied.json() == {"jobs": 2, "chunks": 2}
        busy = client.post(f"/v1/books/{book_id}/pronunciations", json={"word": "kettle", "say": "pot"})
        assert busy.status_code == 400 and busy.json()["detail"].startswith("2 of 3 chapters are still being made")
        paths = client.get("/openapi.json").json()["paths"]
        assert {"/v1/jobs/{job_id}/text", "/v1/books/{book_id}/pronunciations",
                "/v1/books/{book_id}/pronunciations/preview"} <= set(paths)


# The CLI runs in this process and leaves its store to the process's exit, as a command does; on PostgreSQL
# that open connection is a ResourceWarning (an error here), and the store's kind changes nothing the command
# does beyond `pronounce`, tested on both above.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_rerender_say_adds_to_each_chapters_own_lexicon(book, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    import json

    from producer.cli import main

    settings, store, _runtime, ids = book
    with store.read() as session:
        book_id = session.scalar(select(Job.group_id).where(Job.id == ids[0]))
    where = ["--database-url", settings.database_url, "--output-dir", str(settings.output_dir), "--json"]
    main(["rerender", str(book_id), "--say", "tess=Tez", "--say", "kettle=pot", *where])
    chapters = json.loads(capsys.readouterr().out)
    assert [(c["id"], c["status"], c["chunks_redone"]) for c in chapters] == \
        [(ids[0], "succeeded", 2), (ids[1], "succeeded", 1), (ids[2], "succeeded", 0)]

    main(["rerender", ids[2], "--say", "roof=ruff", *where])  # one job: its own lexicon, plus the entry
    [job] = json.loads(capsys.readouterr().out)
    assert (job["status"], job["chunks_redone"]) == ("succeeded", 1)
    with store.read() as session:
        lexicon = JobOptions.from_stored(session.scalar(select(Job.options).where(Job.id == ids[2]))).lexicon
    assert set(lexicon) == {("roof", "ruff")}  # the book's entries never reached it: it says neither word

    with pytest.raises(SystemExit) as exit_:
        main(["rerender", ids[2], "--say", "roof", *where])
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip() == "error: --say 'roof': expected WORD=SAYING, e.g. --say Tilney=Tillnee"
