"""The `ttsfleet worker` process: start-up in order, then Celery's consumer loop until it stops.

The CLI builds the `WorkerSettings` and calls `serve`; nothing here knows about typer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from schemas.broker import Publisher
from schemas.errors import first_line
from schemas.settings import WorkerSettings
from worker.reaper import Republish

if TYPE_CHECKING:
    from worker.metrics import WorkerMetrics
    from worker.runtime import WorkerRuntime

log = logging.getLogger("ttsfleet.worker")


def serve(settings: WorkerSettings, loglevel: str = "INFO") -> None:
    """Start-up in order: policy and voice (fail fast), registry, resumed jobs, metrics, then Celery.

    Raises:
        PrecisionRefused, UnknownVoice, PermanentError: the worker cannot start on this device or voice.
        StoreUnavailable: the database cannot be reached.
    """
    from worker.app import make_celery
    from worker.runtime import WorkerRuntime
    from worker.tasks import register_tasks

    runtime = WorkerRuntime.start(settings)
    runtime.register()
    publisher = Publisher(settings.broker_url)
    republish = republisher(publisher)
    for job in runtime.resume_dead_predecessors():
        log.warning("resuming job %s left by an earlier process of this worker", job.job_id)
        republish(job)
    app = make_celery(settings)
    metrics = _start_metrics(settings, runtime)
    register_tasks(app, runtime, republish)
    runtime.start_heartbeat(republish)
    log.info("worker %s ready: %s, %s (%s)", runtime.worker_id, runtime.device.name, runtime.policy.dtype,
             runtime.policy.reason)
    try:
        app.worker_main(["worker", "-P", "solo", "-c", "1", "-Q", settings.queues,
                         "-n", runtime.worker_id.replace("/", "-") + "@%h", "--without-gossip",
                         "--without-mingle", "-E", "-l", loglevel.upper()])
    finally:
        runtime.stop()
        publisher.close()
        if metrics is not None:
            metrics.close()


def republisher(publisher: Publisher) -> Callable[[Republish], None]:
    """A re-publish callback that never raises: a failure is logged and the reaper tries again later."""

    def republish(job: Republish) -> None:
        try:
            publisher.publish(job.job_id, job.priority, job.queue)
        except Exception as err:
            log.warning("could not re-publish %s: %s", job.job_id, first_line(err))

    return republish


def _start_metrics(settings: WorkerSettings, runtime: WorkerRuntime) -> WorkerMetrics | None:
    """Serve Prometheus metrics when `settings.metrics_port` is set; returns what to close at exit."""
    if settings.metrics_port is None:
        return None
    from worker.metrics import MetricsListener, WorkerMetrics, worker_info

    metrics = WorkerMetrics(broker_url=settings.broker_url, queues=settings.queues,
                            info=worker_info(runtime.registry_row()))
    runtime.add_listener(MetricsListener(metrics))
    port = metrics.serve(settings.metrics_port)
    log.info("Prometheus metrics on port %d", port)
    return metrics
