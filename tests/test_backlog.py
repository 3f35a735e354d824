"""The SQL backlog: `ttsfleet backlog --json` and the exact query KEDA's postgresql scaler runs (taken from
deploy/k8s/keda-scaledobject.yaml) agree on a real PostgreSQL store."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psycopg
import pytest
import yaml
from sqlalchemy import update
from sqlalchemy.engine import make_url

from producer.submit import submit
from schemas.backlog import backlog_sql, read_backlog
from schemas.db import open_store
from schemas.errors import InvalidInput
from schemas.messages import JobRequest
from schemas.settings import ProducerSettings
from schemas.status import JobStatus
from schemas.tables import Job
from tests.deploy_files import K8S, TTSFLEET


def _keda_query() -> str:
    docs = yaml.safe_load_all((K8S / "keda-scaledobject.yaml").read_text())
    [scaled] = [d for d in docs if d["kind"] == "ScaledObject"]
    query: str = scaled["spec"]["triggers"][0]["metadata"]["query"]
    return query


def test_backlog_counts_queued_and_running_as_keda_does(pg_url: str, tmp_path: Path) -> None:
    store = open_store(pg_url)
    texts = ["One.", "Two.", "Three.", "Four.", "Five."]
    settings = ProducerSettings(database_url=pg_url, output_dir=tmp_path)
    ids = [s.id for s in submit([JobRequest(text=t) for t in texts], settings, store, publisher=None)]
    other = ProducerSettings(database_url=pg_url, output_dir=tmp_path, queue="gpu-l4")
    submit([JobRequest(text="Elsewhere.")], other, store, publisher=None)
    with store.session() as session:  # one running, one finished, one cancelled
        for job_id, status in zip(ids, (JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.CANCELLED), strict=False):
            session.execute(update(Job).where(Job.id == job_id).values(status=status))
    done = subprocess.run([TTSFLEET, "backlog", "--json", "--per-worker", "2", "--database-url", pg_url],
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert (shown["queued"], shown["running"], shown["backlog"], shown["workers_wanted"]) == (3, 1, 4, 2)
    assert shown["sql"] == _keda_query()
    # What KEDA runs: the manifest's text, through plain libpq, no SQLAlchemy.
    with psycopg.connect(make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)) as conn:
        [(keda_value,)] = conn.execute(_keda_query()).fetchall()
    assert keda_value == shown["backlog"] == read_backlog(store).total
    per_queue = read_backlog(store, "gpu-l4")
    assert (per_queue.total, per_queue.workers_wanted) == (1, 1)
    store.dispose()


def test_backlog_sql_refuses_queue_names_that_would_break_it() -> None:
    assert backlog_sql("gpu-l4").endswith("AND queue = 'gpu-l4'")
    with pytest.raises(InvalidInput, match="queue name"):
        backlog_sql("x'; DROP TABLE jobs; --")
