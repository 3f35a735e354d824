"""`/v1/books`: preview, create (chapters picked), list, show, cancel, the .m4b (ranges, the title as its file
name) and the cover, `/v1/jobs/{id}/book`; tenancy (another key cannot see, cancel or download a book) and
one-line 4xx errors; on SQLite and PostgreSQL, chapters synthesized in-process with the model-free `null:` voice."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient

from producer.book_view import book_view
from schemas.db import Store, open_store
from schemas.settings import ServiceSettings, WorkerSettings
from schemas.status import JobStatus
from service.app import create_app
from service.keys import create_key
from tests.books import build_epub
from worker.runtime import WorkerRuntime

pytestmark = pytest.mark.integration

COVER_SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" width="200" height="300" viewBox="0 0 200 300">'
             b'<rect width="200" height="300" fill="#336699"/><circle cx="100" cy="150" r="60" fill="#ffcc00"/></svg>')
CHAPTERS = [("Down the Rabbit Hole", "<p>Alice was beginning to get very tired of sitting by her sister.</p>"),
            ("The Pool of Tears", "<p>Curiouser and curiouser, cried Alice.</p>"),
            ("A Caucus Race", "<p>They were indeed a queer looking party that assembled on the bank.</p>")]


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    store = open_store(db_url)
    yield store
    store.dispose()


@pytest.fixture
def epub(tmp_path: Path) -> bytes:
    path = build_epub(tmp_path / "alice.epub", CHAPTERS, title="Alice's Adventures", author="Lewis Carroll",
                      cover_svg=COVER_SVG)
    return path.read_bytes()


def _settings(db_url: str, redis_url: str, out: Path) -> ServiceSettings:
    return ServiceSettings.from_env({"TTSFLEET_DATABASE_URL": db_url, "TTSFLEET_BROKER_URL": redis_url,
                                     "TTSFLEET_QUEUE": "ttsfleet-books-test", "TTSFLEET_VOICE_DIRS": "/tmp",
                                     "TTSFLEET_REQUIRE_API_KEYS": "1", "TTSFLEET_VOICE": "null:",
                                     "TTSFLEET_OUTPUT_DIR": str(out)})


def _run_all(store: Store, db_url: str, out: Path, job_ids: list[str]) -> None:
    runtime = WorkerRuntime.start(WorkerSettings(database_url=db_url, output_dir=out, voice="null:", device="cpu",
                                                 worker_name="books-test"))
    try:
        for job_id in job_ids:
            assert runtime.run_job(job_id).status == JobStatus.SUCCEEDED
    finally:
        runtime.stop()


def _probe(path: Path) -> dict[str, object]:
    done = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
                           "-show_chapters", str(path)], capture_output=True, text=True, check=True, timeout=60)
    probed: dict[str, object] = json.loads(done.stdout)
    return probed


def test_a_book_over_http_from_preview_to_m4b(db_url: str, redis_url: str, store: Store, epub: bytes,
                                               tmp_path: Path) -> None:
    _a, key = create_key(store, "reader")
    _b, other = create_key(store, "someone-else")
    out = tmp_path / "out"
    with TestClient(create_app(_settings(db_url, redis_url, out), store, webhooks=False)) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        files = {"file": ("alice.epub", epub, "application/epub+zip")}
        preview = client.post("/v1/books/preview", files=files)
        assert preview.status_code == 200, preview.text
        shown = preview.json()
        assert (shown["title"], shown["author"], shown["has_cover"]) == ("Alice's Adventures", "Lewis Carroll", True)
        spoken = [c for c in shown["chapters"] if c["skipped"] is None]
        assert [c["title"] for c in spoken] == [t for t, _ in CHAPTERS]
        assert all(c["chars"] > 20 for c in spoken) and shown["warnings"] == []
        first, third = spoken[0]["index"], spoken[2]["index"]
        assert client.get("/v1/books").json() == {"books": [], "total": 0}  # a preview stores nothing

        made = client.post("/v1/books", files=files, data={"chapters": f"{first},Caucus", "format": "flac"})
        assert made.status_code == 202, made.text
        book = made.json()
        assert book["status"] == "queued" and book["m4b_url"] is None and book["cover_url"].endswith("/cover")
        assert [(c["index"], c["title"]) for c in book["chapters"]] == [
            (0, "Alice's Adventures"), (first, "Down the Rabbit Hole"), (third, "A Caucus Race")]
        assert book["chapters_total"] == 3 and book["chunks_done"] == 0 and book["chunks_total"] >= 3

        as_other = {"Authorization": f"Bearer {other}"}
        for answer in (client.get(f"/v1/books/{book['id']}", headers=as_other),
                       client.delete(f"/v1/books/{book['id']}", headers=as_other),
                       client.get(f"/v1/books/{book['id']}/m4b", headers=as_other),
                       client.get(f"/v1/books/{book['id']}/cover", headers=as_other)):
            assert answer.status_code == 404 and answer.json() == {"detail": f"no such book: {book['id']}"}
        assert client.get("/v1/books", headers=as_other).json() == {"books": [], "total": 0}
        early = client.get(f"/v1/books/{book['id']}/m4b")
        assert early.status_code == 409 and "\n" not in early.json()["detail"]

        _run_all(store, db_url, out, [c["job_id"] for c in book["chapters"]])
        done = client.get(f"/v1/books/{book['id']}").json()
        assert done["status"] == "succeeded" and done["chapters_done"] == 3 and done["eta_s"] == 0
        assert done["m4b_url"] == f"/v1/books/{book['id']}/m4b" and done["audio_s"] > 0
        assert all(c["audio_url"] == f"/v1/jobs/{c['job_id']}/audio" for c in done["chapters"])
        listed = client.get("/v1/books").json()
        assert listed["total"] == 1 and listed["books"][0]["id"] == book["id"]
        assert "chapters" not in listed["books"][0]

        m4b = client.get(done["m4b_url"])
        assert m4b.status_code == 200 and m4b.headers["content-type"] == "audio/mp4"
        assert "Alice's Adventures.m4b" in unquote(m4b.headers["content-disposition"])
        part = client.get(done["m4b_url"], headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and part.content == m4b.content[:100]
        assert client.get(f"/v1/jobs/{book['chapters'][1]['job_id']}/book").content == m4b.content
        assert client.get(f"/v1/books/{book['id']}/audio").content == m4b.content
        chapter = client.get(f"/v1/jobs/{book['chapters'][1]['job_id']}").json()
        assert chapter["book_id"] == book["id"] and chapter["book_url"] == f"/v1/books/{book['id']}/audio"
        assert chapter["book_path"] == f"/v1/jobs/{chapter['id']}/book"
        assert client.get(f"/v1/jobs/{book['chapters'][1]['job_id']}/book", headers=as_other).status_code == 404
        cover = client.get(done["cover_url"])
        assert cover.status_code == 200 and cover.headers["content-type"] == "image/png"
        assert cover.content.startswith(b"\x89PNG")
        (tmp_path / "book.m4b").write_bytes(m4b.content)
        probed = _probe(tmp_path / "book.m4b")
        tags = probed["format"]["tags"]  # type: ignore[index]
        assert (tags["title"], tags["artist"]) == ("Alice's Adventures", "Lewis Carroll")
        assert [c["tags"]["title"] for c in probed["chapters"]] == [  # type: ignore[union-attr]
            "Alice's Adventures", "Down the Rabbit Hole", "A Caucus Race"]
        streams = {s["codec_type"]: s for s in probed["streams"]}  # type: ignore[union-attr]
        assert streams["audio"]["codec_name"] == "aac"  # (a "data" stream holds the chapter marks' text)
        assert streams["video"]["disposition"]["attached_pic"] == 1 and streams["video"]["codec_name"] == "png"


def test_book_errors_are_one_line_4xx(db_url: str, redis_url: str, store: Store, epub: bytes,
                                      tmp_path: Path) -> None:
    _a, key = create_key(store, "careless")
    with TestClient(create_app(_settings(db_url, redis_url, tmp_path / "out"), store, webhooks=False)) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        files = {"file": ("alice.epub", epub, "application/epub+zip")}
        answers = {
            "no file": client.post("/v1/books", data={"chapters": "1"}),
            "a text file": client.post("/v1/books", files={"file": ("notes.txt", b"Hello.", "text/plain")}),
            "not an epub": client.post("/v1/books/preview", files={"file": ("bad.epub", b"nope", "x/y")}),
            "chapter 99": client.post("/v1/books", files=files, data={"chapters": "99"}),
            "no title match": client.post("/v1/books", files=files, data={"chapters": "Jabberwocky"}),
            "backwards": client.post("/v1/books", files=files, data={"chapters": "4-2"}),
            "no such book": client.get("/v1/books/0123456789abcdef"),
            "not an id": client.get("/v1/books/..%2Fetc"),
            "unknown format": client.post("/v1/books", files=files, data={"format": "mp9"}),
        }
        for what, answer in answers.items():
            assert 400 <= answer.status_code < 500, (what, answer.status_code, answer.text)
            detail = answer.json()["detail"]
            assert isinstance(detail, str) and detail and "\n" not in detail and "/tmp" not in detail, (what, detail)
        assert "bad.epub: not a readable EPUB" in answers["not an epub"].json()["detail"]
        assert "1-" in answers["chapter 99"].json()["detail"]
        assert client.get("/v1/books").json()["total"] == 0
        assert client.post("/v1/books", files=files, headers={"Authorization": "Bearer nope"}).status_code == 401


def test_the_book_routes_are_in_the_openapi_document(db_url: str, redis_url: str, store: Store,
                                                     tmp_path: Path) -> None:
    with TestClient(create_app(_settings(db_url, redis_url, tmp_path / "out"), store, webhooks=False)) as client:
        paths = client.get("/openapi.json").json()["paths"]
    for path, verb in (("/v1/books/preview", "post"), ("/v1/books", "post"), ("/v1/books", "get"),
                       ("/v1/books/{book_id}", "get"), ("/v1/books/{book_id}", "delete"),
                       ("/v1/books/{book_id}/m4b", "get"), ("/v1/books/{book_id}/cover", "get"),
                       ("/v1/jobs/{job_id}/book", "get")):
        assert paths[path][verb]["summary"], (path, verb)


def test_cancelling_a_book_cancels_its_unfinished_chapters(db_url: str, redis_url: str, store: Store, epub: bytes,
                                                          tmp_path: Path) -> None:
    _a, key = create_key(store, "impatient")
    with TestClient(create_app(_settings(db_url, redis_url, tmp_path / "out"), store, webhooks=False)) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        book = client.post("/v1/books", files={"file": ("alice.epub", epub, "application/epub+zip")}).json()
        cancelled = client.delete(f"/v1/books/{book['id']}")
        assert cancelled.status_code == 200, cancelled.text
        body = cancelled.json()
        assert body["status"] == "cancelled" and {c["status"] for c in body["chapters"]} == {"cancelled"}
        assert client.get(f"/v1/jobs/{book['chapters'][0]['job_id']}").json()["status"] == "cancelled"


def test_book_uploads_take_the_upload_limit(db_url: str, redis_url: str, store: Store, epub: bytes,
                                            tmp_path: Path) -> None:
    _a, key = create_key(store, "big")
    settings = _settings(db_url, redis_url, tmp_path / "out").model_copy(
        update={"max_upload_bytes": len(epub) // 2, "max_body_bytes": 1024})
    with TestClient(create_app(settings, store, webhooks=False)) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        for route in ("/v1/books", "/v1/books/preview"):
            answer = client.post(route, files={"file": ("alice.epub", epub, "application/epub+zip")})
            assert answer.status_code == 413 and "above the limit" in answer.json()["detail"], (route, answer.text)
    settings = settings.model_copy(update={"max_upload_bytes": len(epub) * 2})  # above the JSON limit: allowed
    with TestClient(create_app(settings, store, webhooks=False)) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        assert client.post("/v1/books/preview", files={"file": ("a.epub", epub, "x/y")}).status_code == 200


def test_a_book_in_an_object_store(sqlite_url: str, redis_url: str, epub: bytes, tmp_path: Path) -> None:
    """Chapters, their encodes and the .m4b kept remotely (fsspec `memory://`): the worker fetches and puts each,
    the service serves the .m4b from its local copy, with ranges."""
    store = open_store(sqlite_url)
    out = "memory://books-remote/out"
    settings = _settings(sqlite_url, redis_url, tmp_path).model_copy(update={"output_url": out})
    _a, key = create_key(store, "remote")
    with TestClient(create_app(settings, store, webhooks=False)) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        book = client.post("/v1/books", files={"file": ("alice.epub", epub, "application/epub+zip")},
                           data={"chapters": "Pool"}).json()
        runtime = WorkerRuntime.start(WorkerSettings(database_url=sqlite_url, output_dir=out, voice="null:",  # type: ignore[arg-type]
                                                     device="cpu", worker_name="books-remote"))
        try:
            for chapter in book["chapters"]:
                assert runtime.run_job(chapter["job_id"]).status == JobStatus.SUCCEEDED
        finally:
            runtime.stop()
        done = client.get(f"/v1/books/{book['id']}").json()
        assert done["m4b_url"] is not None, done
        assert str(book_view(store, book["id"]).m4b_path).startswith(out + "/")
        m4b = client.get(done["m4b_url"])
        assert m4b.status_code == 200 and m4b.content[4:8] == b"ftyp"
        assert client.get(done["m4b_url"], headers={"Range": "bytes=4-7"}).content == b"ftyp"
    store.dispose()
