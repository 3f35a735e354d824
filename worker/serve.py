"""The `ttsfleet worker` process: start-up in order, then Celery's consumer loop until it stops.

The CLI builds the `WorkerSettings` and calls `serve`; nothing here knows about typer.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from schemas.broker import MAX_PRIORITY, Publisher
from schemas.errors import first_line
from schemas.settings import WorkerSettings
from worker.reaper import Republish

if TYPE_CHECKING:
    from worker.metrics import WorkerMetrics
    from worker.runtime import WorkerRuntime

log = logging.getLogger("ttsfleet.worker")
# After SIGTERM, how long the running job may take to reach its next chunk boundary before it is put
# back at once; keep a supervisor's stop timeout (systemd TimeoutStopSec, Kubernetes grace period) above.
STOP_GRACE_S = 30.0


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
    runtime.ctx.outputs.sweep_dead_stagings()
    publisher = Publisher(settings.broker_url)
    republish = republisher(publisher)
    for job in runtime.resume_dead_predecessors():
        log.warning("resuming job %s left by an earlier process of this worker", job.job_id)
        republish(job)
    app = make_celery(settings)
    metrics = _start_metrics(settings, runtime)
    register_tasks(app, runtime, republish)
    _stop_on_signals(runtime, republish)
    runtime.start_heartbeat(republish)
    runtime.mark_ready()
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


def _stop_on_signals(runtime: WorkerRuntime, republish: Callable[[Republish], None]) -> None:
    """SIGTERM: the running job stops at its next chunk boundary, is put back with its chunks and
    re-published, then Celery's warm shutdown ends the process. A second SIGTERM, SIGQUIT, or no chunk
    boundary within STOP_GRACE_S: the job is put back at once and the process exits."""
    from celery.signals import worker_ready, worker_shutting_down

    def on_shutting_down(sig: str = "", how: str = "", **_: Any) -> None:
        if how == "Warm" and runtime.request_stop():
            log.warning("%s: the running job stops at its next chunk boundary and is put back", sig)
            timer = threading.Timer(STOP_GRACE_S, _abandon, (runtime, republish, f"{sig} + {STOP_GRACE_S:g} s"))
            timer.daemon = True
            timer.start()
            return
        threading.Thread(target=_abandon, args=(runtime, republish, sig), daemon=True).start()

    def on_quit(signum: int, _frame: object) -> None:
        # Replaces Celery's cold shutdown, which asks the solo pool to kill the running task: it cannot
        # (NotImplementedError raised inside the job). Put the job back and exit instead.
        threading.Thread(target=_abandon, args=(runtime, republish, "SIGQUIT"), daemon=True).start()

    def on_ready(**_: Any) -> None:  # Celery has installed its own handlers by now
        signal.signal(signal.SIGQUIT, on_quit)
        # Celery's consumer, kombu and their imports came after `WorkerRuntime.start` froze the heap: freeze
        # again, or the full collection after every job and segment scans them all (~50 ms -> ~3 ms per
        # job on this project's 2-core CPU; docs/fleet.md).
        gc.freeze()

    worker_shutting_down.connect(on_shutting_down, weak=False)
    worker_ready.connect(on_ready, weak=False)


def _abandon(runtime: WorkerRuntime, republish: Callable[[Republish], None], why: str) -> None:
    """Put what this process holds back now, send it again (a duplicate is harmless: the claim refuses
    it), and exit. Runs on a thread, never inside a signal handler."""
    from worker import reaper

    try:
        runtime.request_stop()  # before the jobs are put back: the main thread must not claim any again
        back = runtime.abandon()
        for job_id in back:
            route = reaper.route(runtime.store, job_id, MAX_PRIORITY)
            if route is not None:
                republish(route)
        log.warning("%s: stopping now; %s put back", why, ", ".join(back) or "nothing")
        runtime.stop(free_engines=False)  # the main thread may be inside the model right now
    except Exception as err:  # exit all the same: the leases expire and the reaper takes the jobs
        log.error("%s: could not put the jobs back (%s); exiting", why, first_line(err))
    finally:
        logging.shutdown()
        os._exit(0)


def _start_metrics(settings: WorkerSettings, runtime: WorkerRuntime) -> WorkerMetrics | None:
    """Serve Prometheus metrics when `settings.metrics_port` is set; returns what to close at exit."""
    if settings.metrics_port is None:
        return None
    from worker.metrics import MetricsListener, WorkerMetrics, worker_info

    metrics = WorkerMetrics(broker_url=settings.broker_url, queues=settings.queues,
                            info=worker_info(runtime.registry_row()))
    runtime.add_listener(MetricsListener(metrics))
    runtime.beat_hooks.append(lambda: metrics.refresh_backlog(runtime.store, settings.queue_names))
    port = metrics.serve(settings.metrics_port)
    log.info("Prometheus metrics on port %d", port)
    return metrics
