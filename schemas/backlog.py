"""The fleet's SQL backlog: jobs queued or running, the number an autoscaler sizes the workers by.

A Redis list length under-counts: with late acknowledgement a running job's message has left the list
but the job still needs its worker, and a queued job whose message was lost is not in the list at
all (the reaper re-publishes it). The store knows both. `backlog_sql` is the exact query KEDA's
PostgreSQL scaler runs (deploy/k8s/keda-scaledobject.yaml); `read_backlog` runs the same text, so the
command, the worker's Prometheus gauge and the autoscaler can never disagree. `live_workers` counts the
workers serving a queue now, which sizes how much of a backlog one worker (or one message) takes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, text

from schemas.db import Store
from schemas.errors import InvalidInput
from schemas.status import WorkerState
from schemas.tables import Worker, utcnow

_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


@dataclass(frozen=True, slots=True)
class Backlog:
    """Jobs waiting or in progress (on `queue`, or on every queue when None), and the workers they call
    for at `per_worker` jobs each (ceil; 0 when there is nothing to do: scale to zero)."""

    queue: str | None
    queued: int
    running: int
    per_worker: int
    sql: str

    @property
    def total(self) -> int:
        return self.queued + self.running

    @property
    def workers_wanted(self) -> int:
        return math.ceil(self.total / self.per_worker)


def backlog_sql(queue: str | None = None) -> str:
    """The one-number query for KEDA's postgresql scaler: queued + running jobs (of `queue`).

    Raises:
        InvalidInput: a queue name with characters other than letters, digits and `_.:-` (it is
            written into the SQL text, which KEDA runs as it is).
    """
    where = "status IN ('queued', 'running')"
    if queue is not None:
        if not _QUEUE_NAME.match(queue):
            raise InvalidInput(f"queue name {queue!r}: use letters, digits and _.:- only")
        where += f" AND queue = '{queue}'"
    return f"SELECT COUNT(*) FROM jobs WHERE {where}"


def read_backlog(store: Store, queue: str | None = None, per_worker: int = 1) -> Backlog:
    """Count queued and running jobs (of `queue`) in one query.

    Raises:
        InvalidInput: `per_worker` below 1 or a bad queue name.
        StoreUnavailable: the store cannot be reached.
    """
    if per_worker < 1:
        raise InvalidInput(f"--per-worker must be at least 1, got {per_worker}")
    sql = backlog_sql(queue)
    by_status = sql.replace("SELECT COUNT(*)", "SELECT status, COUNT(*)", 1) + " GROUP BY status"
    with store.read() as session:
        counts = {str(status): int(n) for status, n in session.execute(text(by_status))}
    return Backlog(queue=queue, queued=counts.get("queued", 0), running=counts.get("running", 0),
                   per_worker=per_worker, sql=sql)


def live_workers(store: Store, queues: Sequence[str], fresh_s: float) -> int:
    """Workers ready to take work from any of `queues` whose heartbeat is at most `fresh_s` old; at least 1
    (the caller itself, or the worker to come: an embedded `ttsfleet run` is not registered)."""
    since = utcnow() - timedelta(seconds=fresh_s)
    with store.read() as session:
        rows = session.scalars(select(Worker.queues).where(Worker.state == WorkerState.READY,
                                                           Worker.heartbeat_at >= since))
        wanted = set(queues)
        return max(1, sum(1 for names in rows if wanted & {q.strip() for q in names.split(",")}))
