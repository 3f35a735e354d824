"""Prometheus metrics of one worker, and the Celery settings that make it visible in Flower.

Each `WorkerMetrics` has its own `CollectorRegistry`, so several workers (or tests) in one process never
share counters. The queue depth is read from the broker at scrape time, never polled in the background.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from schemas.backlog import read_backlog
from schemas.broker import QueueDepths
from schemas.db import Store
from worker.events import JobFigures, JobOutcome, Listener

# Merge into the Celery config: task events for Flower/`celery events`; the event queue expires when
# no monitor listens, so an unwatched fleet does not pile events up in Redis.
CELERY_EVENT_SETTINGS: dict[str, Any] = {
    "worker_send_task_events": True,  # task-received/started/succeeded/failed (Flower's task list)
    "task_send_sent_event": True,  # task-sent from producers: Flower shows time spent queued
    "worker_enable_remote_control": True,  # Flower's worker pages use inspect/control commands
    "event_queue_ttl": 5.0,  # seconds an event waits for a monitor before it is dropped
    "event_queue_expires": 60.0,  # seconds an unused monitor queue lives after the monitor leaves
}

# Synthesis of one job, seconds: from a short sentence on a fast card to a chapter on a CPU.
SYNTH_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, float("inf"))
CHUNK_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, float("inf"))


class _QueueDepthCollector(Collector):
    """`ttsfleet_queue_depth` and `ttsfleet_broker_up`.

    Redis: LLEN summed over the priority lists; RabbitMQ: the ready-message count of a passive declare.
    """

    def __init__(self, broker_url: str | None, queues: list[str]) -> None:
        self._queues = queues
        self._reader = QueueDepths(broker_url, queues) if broker_url else None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("ttsfleet_broker_up", "1 if the broker answered the last scrape, else 0")
        depths = self._depths()
        up.add_metric([], 0.0 if depths is None else 1.0)
        yield up
        if depths is not None:
            gauge = GaugeMetricFamily("ttsfleet_queue_depth", "jobs waiting in the broker queue",
                                      labels=["queue"])
            for queue, depth in zip(self._queues, depths, strict=True):
                gauge.add_metric([queue], float(depth))
            yield gauge

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # values come from the broker at collect time only

    def _depths(self) -> list[int] | None:
        return self._reader.read() if self._reader is not None else None


class WorkerMetrics:
    """Counters, histogram and gauges of one worker, served over HTTP for Prometheus.

    `info` (e.g. worker id, card, dtype, capability) is exported once as `ttsfleet_worker_info`, so
    dashboards can join any series to the card it ran on. `queues` is comma-separated, as a worker's
    `--queues`.
    """

    def __init__(self, broker_url: str | None = None, queues: str = "ttsfleet",
                 info: Mapping[str, str] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._server: Any = None
        r = self.registry
        self.jobs = Counter("ttsfleet_jobs", "jobs finished by this worker, by final status",
                            ["status"], registry=r)
        self.chunks = Counter("ttsfleet_chunks", "chunks synthesized, counted as each one finishes",
                              registry=r)
        self.job_chunks = Histogram("ttsfleet_job_chunks", "chunks per finished job",
                                    buckets=CHUNK_BUCKETS, registry=r)
        self.audio_seconds = Counter("ttsfleet_audio_seconds", "seconds of audio produced", registry=r)
        self.synthesis_seconds = Histogram("ttsfleet_job_synthesis_seconds",
                                           "synthesis time per finished job, seconds",
                                           buckets=SYNTH_BUCKETS_S, registry=r)
        self.peak_memory = Gauge("ttsfleet_peak_memory_bytes",
                                 "peak memory of the last job, bytes: device memory on a GPU, process RSS on a CPU",
                                 registry=r)
        self.sql_backlog = Gauge("ttsfleet_sql_backlog_jobs",
                                 "jobs queued or running in SQL on this worker's queues (KEDA's number), "
                                 "refreshed on each heartbeat", ["queue", "status"], registry=r)
        self.info = Info("ttsfleet_worker", "the worker's device and precision policy", registry=r)
        if info:
            self.info.info({k: str(v) for k, v in info.items()})
        names = [q.strip() for q in queues.split(",") if q.strip()]
        r.register(_QueueDepthCollector(broker_url, names))

    def job_finished(self, status: str, audio_s: float, synth_s: float, chunks: int) -> None:
        """Count a job that reached a final status; audio, time and chunks count for succeeded jobs only.

        `chunks` is the job's chunk count (its histogram); `chunk_done` counts chunks as they finish.
        """
        self.jobs.labels(status=status).inc()
        if status == "succeeded" and chunks > 0:
            self.job_chunks.observe(chunks)
            self.audio_seconds.inc(max(0.0, audio_s))
            self.synthesis_seconds.observe(max(0.0, synth_s))

    def chunk_done(self, n: int = 1) -> None:
        self.chunks.inc(n)

    def set_peak_memory(self, bytes_: int | None) -> None:
        """Record the last job's peak memory (device on a GPU, process RSS on a CPU); None leaves NaN."""
        self.peak_memory.set(float("nan") if bytes_ is None else float(bytes_))

    def refresh_backlog(self, store: Store, queues: list[str]) -> None:
        """Read the SQL backlog of each queue (one small query each); called from the heartbeat thread,
        never on the synthesis path. Raises StoreUnavailable like any read."""
        for queue in queues:
            found = read_backlog(store, queue)
            self.sql_backlog.labels(queue=queue, status="queued").set(found.queued)
            self.sql_backlog.labels(queue=queue, status="running").set(found.running)

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve `/metrics` on a daemon thread and return the bound port (`port=0` picks a free one).

        Raises:
            OSError: the port is taken.
        """
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server = server
        return int(server.server_port)

    def close(self) -> None:
        """Stop serving (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

class MetricsListener(Listener):
    """Feeds a worker's jobs into its `WorkerMetrics` as they happen."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def chunk_done(self, job_id: str, done: int, total: int) -> None:
        self.metrics.chunk_done()

    def job_finished(self, outcome: JobOutcome, figures: JobFigures) -> None:
        self.metrics.job_finished(str(outcome.status), audio_s=figures.audio_s, synth_s=figures.synth_s,
                                  chunks=figures.chunks)
        self.metrics.set_peak_memory(figures.peak_mem_bytes)

    def job_failed(self, outcome: JobOutcome) -> None:
        self.metrics.job_finished(str(outcome.status), audio_s=0.0, synth_s=0.0, chunks=0)


def worker_info(row: Mapping[str, Any]) -> dict[str, str]:
    """The `ttsfleet_worker_info` labels from a worker's registry row."""
    return {key: str(row.get(key)) for key in ("id", "host", "card", "capability", "backend", "dtype", "tf32")}
