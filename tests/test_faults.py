"""Faults injected into real worker processes (Redis, SQLite, `ttsfleet worker` subprocesses): stop
signals and a worker frozen past its lease. Each ends with every job finished once and its audio intact.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from sqlalchemy import select

from schemas.tables import Chunk
from tests.fleet import Fleet, running_fleet

pytestmark = [pytest.mark.integration, pytest.mark.slow]
LONG_TEXT = " ".join(f"Sentence number {i} is read aloud slowly and clearly." for i in range(30))


@pytest.fixture
def fleet(sqlite_url: str, redis_url: str, tiny_vits_dir: Path, tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(redis_url, sqlite_url, tiny_vits_dir, tmp_path) as fleet:
        yield fleet


def _status(fleet: Fleet, job_id: str) -> dict[str, Any]:
    view: dict[str, Any] = json.loads(fleet.cli("status", job_id, "--json").stdout)[0]
    return view


def _long_job_under_way(fleet: Fleet, min_chunks: int = 3) -> dict[str, Any]:
    (fleet.tmp / "long.txt").write_text(LONG_TEXT)
    [job] = json.loads(fleet.cli("submit", str(fleet.tmp / "long.txt"), "--json").stdout)
    deadline = time.monotonic() + 120
    # Read from the store, not through `status`: a CLI subprocess takes a second or two to start, which is
    # most of this job's run on a quick machine (the job then ended before the signal landed).
    while True:
        with fleet.store.read() as s:
            stored = len(s.scalars(select(Chunk.idx).where(Chunk.job_id == job["id"],
                                                           Chunk.audio_path.is_not(None))).all())
        if stored >= min_chunks:
            return dict(job)
        assert time.monotonic() < deadline, fleet.logs()
        time.sleep(0.05)


def _exits_within(proc: Any, seconds: float) -> float:
    started = time.monotonic()
    proc.wait(timeout=seconds)
    return time.monotonic() - started


def _finished_by_another_worker(fleet: Fleet, job: dict[str, Any], kept: int) -> None:
    fleet.start_worker("--token-budget", "64", "--name", "second")
    view = fleet.wait_done([job["id"]])[0]
    assert view["status"] == "succeeded" and view["chunks_done"] == job["chunks_total"]
    assert sf.info(view["audio_path"]).duration == pytest.approx(view["audio_s"], abs=0.01)
    with fleet.store.session() as s:
        attempts = s.scalars(select(Chunk.attempt).where(Chunk.job_id == job["id"])).all()
    assert len(attempts) == job["chunks_total"] and attempts.count(1) >= kept  # the first worker's chunks kept


@pytest.mark.parametrize("signals", [[signal.SIGTERM], [signal.SIGTERM, signal.SIGTERM], [signal.SIGQUIT]],
                         ids=["sigterm", "sigterm-twice", "sigquit"])
def test_a_stop_signal_puts_the_running_job_back_with_its_chunks(fleet: Fleet, signals: list[int]) -> None:
    fleet.env["TTSFLEET_LEASE_S"] = "3600"  # only the put-back, not lease expiry, can free the job in time
    worker = fleet.start_worker("--token-budget", "64")
    job = _long_job_under_way(fleet)
    for sig in signals:
        os.kill(worker.pid, sig)
        time.sleep(0.05)
    took_s = _exits_within(worker, 40)
    # A second SIGTERM that lands while the interpreter is already exiting (the first one put the job back
    # within milliseconds) meets Python's restored default handler and ends the process by that signal:
    # nothing is lost either way, which is what the status below checks.
    allowed = {0, -signal.SIGTERM} if signals == [signal.SIGTERM, signal.SIGTERM] else {0}
    assert worker.returncode in allowed, fleet.logs()
    view = _status(fleet, job["id"])
    assert view["status"] == "queued", fleet.logs()  # put back, not left running under a lease
    kept = view["chunks_done"]
    assert 3 <= kept < job["chunks_total"], "the job must stop mid-way, not run to its end"
    assert "put back" in fleet.logs()
    print(f"{[signal.Signals(s).name for s in signals]}: exited in {took_s:.1f} s with {kept} chunks kept")
    _finished_by_another_worker(fleet, job, kept)


def test_a_worker_frozen_past_its_lease_wakes_and_leaves_the_result_alone(pg_url: str, redis_url: str,
                                                                          tiny_vits_dir: Path, tmp_path: Path) -> None:
    # On PostgreSQL, the fleet's store: a process frozen inside a transaction holds its locks until the
    # server ends the idle session (schemas/db.py); an SQLite file would stay locked (one box, one writer).
    with running_fleet(redis_url, pg_url, tiny_vits_dir, tmp_path) as fleet:
        _frozen_past_its_lease(fleet)


def _frozen_past_its_lease(fleet: Fleet) -> None:
    fleet.env["TTSFLEET_LEASE_S"] = "3"
    frozen = fleet.start_worker("--token-budget", "64", "--name", "frozen")
    job = _long_job_under_way(fleet)
    os.kill(frozen.pid, signal.SIGSTOP)  # a VM pause mid-job: no heartbeat, the lease runs out
    try:
        fleet.start_worker("--token-budget", "64", "--name", "successor")
        view = fleet.wait_done([job["id"]])[0]
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    time.sleep(3)  # the frozen worker wakes, finds the job gone from under it, and carries on
    assert frozen.poll() is None, "waking up must not crash the worker"
    view = _status(fleet, job["id"])
    assert view["status"] == "succeeded"
    audio = Path(view["audio_path"])
    assert audio.is_file() and audio.with_suffix(".srt").is_file(), "the woken worker deleted the result"
    assert sf.info(str(audio)).duration == pytest.approx(view["audio_s"], abs=0.01)
    with fleet.store.session() as s:
        done = s.scalars(select(Chunk.idx).where(Chunk.job_id == job["id"], Chunk.audio_path.is_not(None))).all()
    assert sorted(done) == list(range(job["chunks_total"]))  # every chunk recorded exactly once


def test_postgresql_down_then_black_holed_loses_nothing(pg_url: str, redis_url: str, tiny_vits_dir: Path,
                                                         tmp_path: Path) -> None:
    from sqlalchemy.engine import make_url

    from schemas.db import open_store
    from tests.proxy import FaultyProxy

    direct = make_url(pg_url)
    proxy = FaultyProxy(direct.host or "127.0.0.1", direct.port or 5432)
    proxied = direct.set(port=proxy.port).render_as_string(hide_password=False)
    watch = open_store(pg_url)  # the test's own view, around the proxy

    def chunks_done(job_id: str) -> int:
        with watch.read() as s:
            return len(s.scalars(select(Chunk.idx).where(Chunk.job_id == job_id,
                                                         Chunk.audio_path.is_not(None))).all())

    try:
        with running_fleet(redis_url, proxied, tiny_vits_dir, tmp_path) as fleet:
            fleet.start_worker("--token-budget", "64")
            (fleet.tmp / "long.txt").write_text(LONG_TEXT)
            [job] = json.loads(fleet.cli("submit", str(fleet.tmp / "long.txt"), "--json").stdout)
            for fault in (proxy.down, proxy.blackhole):
                before = chunks_done(job["id"])
                while chunks_done(job["id"]) < before + 3:
                    time.sleep(0.1)
                fault()
                time.sleep(30)
                proxy.up()
            deadline = time.monotonic() + 300
            while _status(fleet, job["id"])["status"] != "succeeded":
                assert time.monotonic() < deadline, fleet.logs()
                time.sleep(1)
            view = _status(fleet, job["id"])
            assert sf.info(view["audio_path"]).duration == pytest.approx(view["audio_s"], abs=0.01)
            assert chunks_done(job["id"]) == view["chunks_total"] == job["chunks_total"]
            assert "database unavailable" in fleet.logs()  # the outage was seen, and survived
    finally:
        watch.dispose()
        proxy.close()
