"""Load through the real stack: 2,000 short notices on two worker processes (Redis, PostgreSQL), a tenth
of them delivered twice, in the model-free `null:` voice (the queue, the store and the files are what is
loaded). Every job finishes exactly once; queue wait and latency percentiles are printed from `ttsfleet
stats`, the figures a capacity plan starts from."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from schemas.broker import Publisher
from schemas.tables import Job, JobMetrics
from tests.fleet import Fleet, running_fleet

pytestmark = [pytest.mark.integration, pytest.mark.slow]
NOTICES = 2000
STREETS = ["Elm", "Oak", "Pine", "Maple", "Cedar", "Birch", "Walnut", "Spruce"]


@pytest.fixture
def fleet(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(redis_url, pg_url, "null:", tmp_path) as fleet:
        yield fleet


def _unfinished(fleet: Fleet) -> int:
    with fleet.store.read() as s:
        return int(s.scalar(select(func.count()).select_from(Job).where(Job.status.in_(["queued", "running"]))) or 0)


def test_two_thousand_notices_on_two_workers_each_finish_exactly_once(fleet: Fleet) -> None:
    notices = fleet.tmp / "notices.jsonl"
    notices.write_text("".join(
        json.dumps({"text": f"Water on {STREETS[n % 8]} Street stops at {n % 12 + 1} pm, notice {n}."}) + "\n"
        for n in range(NOTICES)))
    fleet.start_worker("--name", "load-a")
    fleet.start_worker("--name", "load-b")
    ids = fleet.submit(str(notices))
    assert len(set(ids)) == NOTICES
    publisher = Publisher(fleet.env["TTSFLEET_BROKER_URL"])
    try:
        for job_id in ids[::10]:  # duplicate deliveries: the second copy must be refused by the claim
            publisher.publish(job_id, 5)
    finally:
        publisher.close()
    deadline = time.monotonic() + 900
    while _unfinished(fleet):  # one COUNT every 2 s: polling 2,000 ids would load the machine under test
        assert time.monotonic() < deadline, fleet.logs()
        time.sleep(2)
    with fleet.store.session() as s:
        statuses = {str(k): n for k, n in s.execute(select(Job.status, func.count()).group_by(Job.status))}
        results = s.scalar(select(func.count()).select_from(JobMetrics))
        most_attempts = s.scalar(select(func.max(Job.attempts)))
        per_worker = dict(s.execute(select(JobMetrics.worker_id, func.count()).group_by(JobMetrics.worker_id)).all())
    assert statuses == {"succeeded": NOTICES}
    assert results == NOTICES and most_attempts == 1  # one result each; no job was run twice
    assert len(per_worker) == 2 and min(per_worker.values()) > NOTICES // 10, per_worker  # both took work
    [row] = json.loads(fleet.cli("stats", "--by", "", "--format", "json").stdout)
    for key in ("p50_queue_wait_s", "p95_queue_wait_s", "p50_latency_s", "p95_latency_s"):
        assert row[key] is not None and row[key] >= 0
    print(f"\n{NOTICES} notices on 2 workers: queue wait p50 {row['p50_queue_wait_s']:.1f} s, "
          f"p95 {row['p95_queue_wait_s']:.1f} s; latency p50 {row['p50_latency_s']:.1f} s, "
          f"p95 {row['p95_latency_s']:.1f} s")
