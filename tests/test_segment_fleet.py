"""Segment leases across real processes: two `ttsfleet worker` subprocesses on Redis and PostgreSQL share
one long job; one is killed (SIGKILL) mid-job, and the job still ends complete, every chunk stored once
and the file assembled once."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf
from sqlalchemy import func, select

from schemas.tables import Chunk, JobMetrics, Segment
from tests.fleet import Fleet, running_fleet

pytestmark = [pytest.mark.integration, pytest.mark.slow]
LONG_TEXT = " ".join(f"Sentence number {i} is read aloud slowly and clearly." for i in range(40))


@pytest.fixture
def fleet(pg_url: str, redis_url: str, tiny_vits_dir: Path, tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(redis_url, pg_url, tiny_vits_dir, tmp_path) as fleet:
        # segments of a few chunks; a dead worker's segment is taken over within seconds
        fleet.env.update(TTSFLEET_SEGMENT_CHARS="300", TTSFLEET_LEASE_S="4")
        yield fleet


def _holders(fleet: Fleet, job_id: str) -> set[str]:
    with fleet.store.session() as s:
        return {str(w) for w in s.scalars(select(Segment.lease_owner).where(
            Segment.job_id == job_id, Segment.status == "running"))}


def test_a_worker_killed_mid_segment_leaves_the_job_complete_and_assembled_once(fleet: Fleet) -> None:
    first = fleet.start_worker("--name", "first")
    fleet.start_worker("--name", "second")
    (fleet.tmp / "long.txt").write_text(LONG_TEXT)
    [job_id] = fleet.submit(str(fleet.tmp / "long.txt"))
    deadline = time.monotonic() + 120
    while len(_holders(fleet, job_id)) < 2:  # both workers on it at once
        assert time.monotonic() < deadline, fleet.logs()
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    view = fleet.wait_done([job_id])[0]
    assert view["status"] == "succeeded" and view["chunks_done"] == view["chunks_total"] > 10
    assert view["segments_done"] == view["segments_total"] > 2
    assert sf.info(view["audio_path"]).duration == pytest.approx(view["audio_s"], abs=0.01)
    with fleet.store.session() as s:
        stored = s.scalars(select(Chunk.idx).where(Chunk.job_id == job_id, Chunk.audio_path.is_not(None))).all()
        assert sorted(stored) == list(range(view["chunks_total"]))  # each chunk once in the result
        assert s.scalar(select(func.count()).select_from(JobMetrics).where(JobMetrics.job_id == job_id)) == 1
        taken_over = s.scalar(select(func.max(Segment.attempts)).where(Segment.job_id == job_id))
    assert taken_over == 2  # the killed worker's segment was resumed by the other
    out = fleet.tmp / "out"
    assert [p.name for p in out.glob("*.wav")] == [Path(view["audio_path"]).name]
