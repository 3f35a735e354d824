"""Output files named after their input, collisions resolved in order, and finished audiobooks: chapter
files tagged, the .m4b carrying the EPUB's title, author, cover and chapter titles (read back by ffprobe)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from producer.inputs import read_inputs
from producer.jobs import job_views
from producer.naming import display_title, output_stem, safe_name
from producer.submit import submit
from schemas.db import Store
from schemas.messages import JobRequest
from schemas.settings import ProducerSettings, WorkerSettings
from schemas.status import AudioFormat, JobStatus
from tests.books import build_epub
from tests.conftest import TEST_VOICE_DIRS
from tests.fakes import FakeEngine
from worker.book_audio import ffmpeg_available
from worker.job import JobContext, synthesize_job


@pytest.fixture
def settings(sqlite_url: str, tmp_path: Path, tiny_vits_dir: Path) -> ProducerSettings:
    return ProducerSettings(database_url=sqlite_url, output_dir=tmp_path / "out", voice=str(tiny_vits_dir),
                            voice_dirs=TEST_VOICE_DIRS)


def _run_all(settings: ProducerSettings, db: Store, ids: list[str]) -> None:
    ctx = JobContext(store=db, settings=WorkerSettings(database_url=settings.database_url,
                                                       output_dir=settings.output_dir),
                     worker_id="host/cpu/1", engine_for=lambda _voice: FakeEngine())  # type: ignore[arg-type,return-value]
    for job_id in ids:  # a short job may already have run together with an earlier one
        synthesize_job(job_id, ctx)
    assert [v.status for v in job_views(db, ids)] == [JobStatus.SUCCEEDED] * len(ids)


def _ffprobe(path: Path) -> dict:  # type: ignore[type-arg]
    done = subprocess.run(["ffprobe", "-v", "error", "-show_chapters", "-show_format", "-show_streams", "-of", "json",
                           str(path)], capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout))


def test_names_come_from_the_input() -> None:
    assert output_stem(JobRequest(text="x", source="/in/story.txt"), "id1") == "story"
    assert output_stem(JobRequest(text="x", source="notices.jsonl:3"), "id1") == "notices-3"
    assert output_stem(JobRequest(text="x", source="notices.jsonl:3", id="n-7"), "n-7") == "n-7"
    # text without a name (stdin, the Python/HTTP API): its first words; nothing to name it by: its id
    assert output_stem(JobRequest(text="The quick brown fox jumps over the lazy dog.", source="stdin"), "id1") == \
        "the-quick-brown-fox-jumps-over"
    assert output_stem(JobRequest(text="<speak>They’ll <emphasis>say</emphasis> hi!</speak>"), "id1") == "theyll-say-hi"
    assert output_stem(JobRequest(text="Hello, world."), "3f2a9c") == "hello-world"
    assert output_stem(JobRequest(text="😀 ☃"), "3f2a9c") == "3f2a9c"
    # what a job is listed as: its title, else its file's name, else its first words (stdin, JSONL, API)
    assert display_title("Given", "/in/story.txt", "x") == "Given"
    assert display_title(None, "/in/story.txt", "x") == "story.txt"
    assert display_title(None, "notices.jsonl:3", "Water service on Elm Street stops from nine.") == \
        "Water service on Elm Street stops"
    assert display_title(None, "stdin", "Hello there.") == display_title(None, None, "Hello there.") == "Hello there"
    assert display_title(None, None, "😀") is None
    chapter = JobRequest(text="x", source="b.epub", title="The Storm: Part 1/2", group_title="Book?", group_index=0)
    assert output_stem(chapter, "id1") == "Book_/01 - The Storm_ Part 1_2"
    assert safe_name("..") == safe_name("  ") == "untitled"
    assert safe_name("../../etc/passwd") == ".._.._etc_passwd".lstrip(".")


def test_collisions_get_the_first_free_number_and_the_id_stays_in_the_manifest(settings, db, tmp_path) -> None:
    for folder in ("a", "b", "c"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "story.txt").write_text(f"A story from {folder}.", encoding="utf-8")
    requests = read_inputs([str(tmp_path / f / "story.txt") for f in ("a", "b")], io.StringIO(), voice=None,
                           format=AudioFormat.WAV, priority=5)
    first = submit(requests, settings, db, publisher=None)
    later = submit(read_inputs([str(tmp_path / "c" / "story.txt")], io.StringIO(), voice=None,
                               format=AudioFormat.FLAC, priority=5), settings, db, publisher=None)
    third = submit(read_inputs([str(tmp_path / "c" / "story.txt")], io.StringIO(), voice=None,
                               format=AudioFormat.WAV, priority=5), settings, db, publisher=None)
    many = submit([JobRequest(text=f"The market opens at nine today, day {n}.", source="stdin") for n in range(3)],
                  settings, db, publisher=None)
    ids = [j.id for j in [*first, *later, *third]]
    _run_all(settings, db, ids)
    paths = [Path(str(v.audio_path)) for v in job_views(db, ids)]
    out = settings.output_dir.resolve()
    assert paths == [out / "story.wav", out / "story (2).wav", out / "story.flac", out / "story (3).wav"]
    _run_all(settings, db, [j.id for j in many])
    assert [Path(str(v.audio_path)).name for v in job_views(db, [j.id for j in many])] == [
        "the-market-opens-at-nine-today.wav", "the-market-opens-at-nine-today (2).wav",
        "the-market-opens-at-nine-today (3).wav"]
    assert [v.title for v in job_views(db, [j.id for j in [*first, *many]])] == [
        "story.txt", "story.txt", *["The market opens at nine today"] * 3]
    manifest = json.loads(paths[1].with_suffix(".manifest.json").read_text(encoding="utf-8"))
    assert manifest["job_id"] == ids[1] and manifest["audio"] == "story (2).wav"


def test_a_book_is_named_tagged_and_its_m4b_carries_title_author_cover_and_chapters(settings, db, tmp_path) -> None:
    assert ffmpeg_available(), "ffmpeg is required for this test (apt-get install ffmpeg; make test installs it)"
    from PIL import Image

    cover = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(cover, format="PNG")
    epub = build_epub(tmp_path / "book.epub", [("The Start", "<p>It began.</p>"), ("The End", "<p>It ended.</p>")],
                      title="A Small Book", author="Ada Writer", cover_png=cover.getvalue())
    requests = read_inputs([str(epub)], io.StringIO(), voice=None, format=AudioFormat.FLAC, priority=5)
    jobs = submit(requests, settings, db, publisher=None)
    again = submit([r.model_copy(update={"format": AudioFormat.OGG}) for r in requests], settings, db, publisher=None)
    _run_all(settings, db, [j.id for j in [*jobs, *again]])
    views = job_views(db, [j.id for j in jobs])
    out = settings.output_dir.resolve()
    assert [Path(str(v.audio_path)) for v in views] == [
        out / "A Small Book" / "01 - A Small Book.flac", out / "A Small Book" / "02 - The Start.flac",
        out / "A Small Book" / "03 - The End.flac"]
    assert Path(str(job_views(db, [again[0].id])[0].audio_path)).parent == out / "A Small Book (2)"
    tags = _ffprobe(Path(str(views[1].audio_path)))["format"]["tags"]
    assert {k.lower(): v for k, v in tags.items()}.items() >= {
        "title": "The Start", "album": "A Small Book", "artist": "Ada Writer", "track": "2"}.items()
    assert views[0].book_path == str(out / "A Small Book.m4b")
    probe = _ffprobe(out / "A Small Book.m4b")
    assert probe["format"]["tags"]["title"] == "A Small Book"
    assert probe["format"]["tags"]["artist"] == "Ada Writer"
    assert [c["tags"]["title"] for c in probe["chapters"]] == ["A Small Book", "The Start", "The End"]
    [picture] = [s for s in probe["streams"] if s["codec_type"] == "video"]
    assert picture["disposition"]["attached_pic"] == 1 and picture["codec_name"] == "png"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))


@hypothesis_settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="abcXYZ019 _.,()+-", min_size=1, max_size=130) | st.sampled_from(
    ["con", "Con.txt", "LPT1", "nul.", "a", "  x", "x  y", ".hidden", "notices-12", "Chapter 3 (2)"]))
def test_plain_names_skip_pathvalidate_only_where_it_would_change_nothing(text: str) -> None:
    from producer.naming import sanitized

    assert safe_name(text) == sanitized(text)


def test_jobs_that_keep_losing_their_name_to_racers_are_named_by_their_ids(
        settings: ProducerSettings, db: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two clashes on the unique keys (racers taking the same next free name) and the jobs are named by
    their ids, which cannot clash; a book's chapters keep their folder names."""
    from sqlalchemy.exc import IntegrityError

    import producer.submit as submit_module

    real = submit_module._store_once
    stems: list[list[str]] = []

    def clashing(prepared, store):  # type: ignore[no-untyped-def]
        stems.append([p.stem for p in prepared])
        if len(stems) <= submit_module.NAME_BY_ID_AFTER:
            raise IntegrityError("INSERT", {}, Exception("output_name taken by a racer"))
        return real(prepared, store)

    monkeypatch.setattr(submit_module, "_store_once", clashing)
    [job] = submit([JobRequest(text="The office opens at nine today.", voice="null:")], settings, db, publisher=None)
    assert stems[0] == ["the-office-opens-at-nine-today"] and stems[-1] == [job.id]
    assert len(stems) == submit_module.NAME_BY_ID_AFTER + 1
