"""End to end through real Redis, a real `ttsfleet worker` subprocess and a real SQL store (both kinds).

Jobs go in with the CLI; results are checked in SQL and on disk (duration, sample rate, not silent).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sqlalchemy import select

from schemas.tables import Chunk, Worker
from tests.books import build_epub
from tests.fleet import CHAPTER, NOTICES, Fleet, running_fleet

pytestmark = [pytest.mark.integration, pytest.mark.slow]

@pytest.fixture
def fleet(db_url: str, redis_url: str, tiny_vits_dir: Path, tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(redis_url, db_url, tiny_vits_dir, tmp_path) as fleet:
        yield fleet


def _inputs(tmp: Path) -> list[str]:
    notices = tmp / "notices.jsonl"
    notices.write_text("".join(json.dumps(n) + "\n" for n in NOTICES))
    chapter = tmp / "chapter.txt"
    chapter.write_text(CHAPTER)
    return [str(notices), str(chapter)]


def test_jobs_through_redis_and_a_worker(fleet: Fleet) -> None:
    worker = fleet.start_worker()
    ids = fleet.submit(*_inputs(fleet.tmp))
    assert len(ids) == 4

    views = fleet.wait_done(ids)
    assert [v["status"] for v in views] == ["succeeded"] * 4
    assert Path(views[-1]["audio_path"]).name == "chapter.wav"  # named after its input, not its id
    for view in views:
        assert view["chunks_done"] == view["chunks_total"] >= 1
        wav, rate = sf.read(view["audio_path"], dtype="float32")
        assert rate == 16_000
        assert view["audio_s"] == pytest.approx(len(wav) / rate, abs=1e-6)
        assert float(np.sqrt(np.mean(wav**2))) > 1e-4, "audio is silent"

    stats = fleet.cli("stats", "--by", "card,dtype", "--format", "json")
    assert stats.returncode == 0, stats.stderr
    rows = json.loads(stats.stdout)
    with fleet.store.session() as s:
        card = s.scalar(select(Worker.card).where(Worker.pid == worker.pid))
    [row] = [r for r in rows if r["card"] == card and r["dtype"] == "float32"]
    assert row["jobs"] == 4 and row["throughput_x"] > 0
    _a_book_becomes_chapter_files_subtitles_and_an_m4b(fleet)


def _a_book_becomes_chapter_files_subtitles_and_an_m4b(fleet: Fleet) -> None:
    chapters = [("Arrival", "<p>The train came in at 6 p.m. on a wet evening.</p>"),
                ("The Inn", "<p>She took a room for 2 nights.</p><p>It cost $40.</p>"),
                ("Departure", "<p>At dawn she was gone.</p>")]
    book = build_epub(fleet.tmp / "book.epub", chapters, title="A Short Journey")
    ids = fleet.submit(str(book))
    assert len(ids) == 4  # the opening line ("A Short Journey"), then the chapters
    views = fleet.wait_done(ids)
    assert [v["title"] for v in views] == ["A Short Journey", "Arrival", "The Inn", "Departure"]
    # Named at submit, written there by the Celery worker: the book's folder and its chapters' titles.
    assert [Path(v["audio_path"]).relative_to(Path(v["audio_path"]).parents[1]).as_posix() for v in views] == [
        "A Short Journey/01 - A Short Journey.wav", "A Short Journey/02 - Arrival.wav",
        "A Short Journey/03 - The Inn.wav", "A Short Journey/04 - Departure.wav"]
    for view in views:
        audio = Path(view["audio_path"])
        assert audio.is_file() and audio.with_suffix(".srt").is_file() and audio.with_suffix(".vtt").is_file()
    # The worker that finishes the last chapter builds the .m4b just after: book_path follows shortly.
    deadline = time.monotonic() + 60
    while not all(v["book_path"] for v in views):
        assert time.monotonic() < deadline, fleet.logs()
        time.sleep(0.5)
        views = json.loads(fleet.cli("status", *ids, "--json").stdout)
    m4b = Path(views[-1]["book_path"])
    assert m4b == Path(views[0]["audio_path"]).parents[1] / "A Short Journey.m4b"
    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_chapters", "-show_format", str(m4b)],
        capture_output=True, text=True, check=True).stdout)
    assert [c["tags"]["title"] for c in probe["chapters"]] == ["A Short Journey", "Arrival", "The Inn", "Departure"]
    for mark, view in zip(probe["chapters"], views, strict=True):
        assert float(mark["end_time"]) - float(mark["start_time"]) == pytest.approx(view["audio_s"], abs=0.01)


def test_a_killed_worker_resumes_its_job_without_redoing_chunks(fleet: Fleet) -> None:
    # A lease far longer than the test: only the restarted slot taking its dead predecessor's job
    # back (not lease expiry and the reaper) can finish the job in time.
    fleet.env["TTSFLEET_LEASE_S"] = "3600"
    long_text = " ".join(f"Sentence number {i} is read aloud slowly and clearly." for i in range(100))
    (fleet.tmp / "long.txt").write_text(long_text)
    worker = fleet.start_worker("--token-budget", "64")
    [job] = json.loads(fleet.cli("submit", str(fleet.tmp / "long.txt"), "--json").stdout)
    deadline = time.monotonic() + 120
    done = 0
    while done < 5 and time.monotonic() < deadline:
        done = json.loads(fleet.cli("status", job["id"], "--json").stdout)[0]["chunks_done"]
        time.sleep(0.2)
    assert 5 <= done < job["chunks_total"], "the job must be killed mid-way"
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)

    fleet.start_worker("--token-budget", "64")  # same slot: takes its predecessor's job back at once
    waited = fleet.cli("wait", job["id"], "--timeout", "180", timeout=240)
    assert waited.returncode == 0, waited.stdout + waited.stderr + fleet.logs()
    [view] = json.loads(fleet.cli("status", job["id"], "--json").stdout)
    assert view["status"] == "succeeded" and view["attempts"] == 2
    with fleet.store.session() as s:
        attempts = s.scalars(select(Chunk.attempt).where(Chunk.job_id == job["id"]).order_by(Chunk.idx)).all()
    # every chunk stored by the killed worker was kept; the new one made only the rest
    assert len(attempts) == job["chunks_total"] and set(attempts) == {1, 2}
    assert attempts.count(1) >= done


def test_jobs_whose_messages_the_broker_lost_still_finish(fleet: Fleet) -> None:
    import redis

    fleet.env["TTSFLEET_LEASE_S"] = "3"  # how long a queued job may go unseen once the queue is empty
    ids = fleet.submit(*_inputs(fleet.tmp))
    client = redis.Redis.from_url(fleet.env["TTSFLEET_BROKER_URL"])
    assert client.dbsize() > 0
    client.flushdb()  # a broker restarted without persistence: every message is gone
    client.close()
    fleet.start_worker()
    fleet.wait_done(ids, timeout_s=120)
    assert "re-publishing" in fleet.logs()


@pytest.fixture
def amqp_fleet(sqlite_url: str, amqp_url: str, tiny_vits_dir: Path, tmp_path: Path) -> Iterator[Fleet]:
    """Like `fleet`, with RabbitMQ as the broker and SQLite only (the broker is what is under test)."""
    with running_fleet(amqp_url, sqlite_url, tiny_vits_dir, tmp_path) as fleet:
        yield fleet


def test_jobs_through_rabbitmq_amqp_and_a_worker(amqp_fleet: Fleet) -> None:
    amqp_fleet.start_worker()
    ids = []
    for notice, priority in zip(NOTICES, ("0", "9", "5"), strict=True):  # all share one priority queue
        path = amqp_fleet.tmp / f"notice-{priority}.jsonl"
        path.write_text(json.dumps(notice) + "\n")
        ids += amqp_fleet.submit(str(path), "--priority", priority)
    assert len(set(ids)) == len(NOTICES)

    views = amqp_fleet.wait_done(ids)
    assert [v["status"] for v in views] == ["succeeded"] * len(ids)
    for view in views:
        wav, rate = sf.read(view["audio_path"], dtype="float32")
        assert rate == 16_000 and len(wav) / rate == pytest.approx(view["audio_s"], abs=1e-6)
        assert float(np.sqrt(np.mean(wav**2))) > 1e-4, "audio is silent"
    assert "PRECONDITION_FAILED" not in amqp_fleet.logs()
