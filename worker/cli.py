"""`ttsfleet worker`: start one worker for one device."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from producer.cli_common import BrokerUrlOpt, DatabaseUrlOpt, OutputDirOpt, VoiceOpt, environ
from schemas.settings import WorkerSettings


def worker(
    device: Annotated[str | None, typer.Option(envvar="TTSFLEET_DEVICE", show_envvar=True,
                                               help="auto, cpu, cuda, cuda:N [default: auto]")] = None,
    precision: Annotated[str | None, typer.Option(envvar="TTSFLEET_PRECISION", show_envvar=True,
                                                  help="auto, bf16, fp16, fp32 [default: auto]")] = None,
    queues: Annotated[str | None, typer.Option(envvar="TTSFLEET_QUEUES", show_envvar=True,
                                               help="comma-separated queues [default: ttsfleet]")] = None,
    voice: VoiceOpt = None,
    broker_url: BrokerUrlOpt = None,
    database_url: DatabaseUrlOpt = None,
    output_dir: OutputDirOpt = None,
    name: Annotated[str | None, typer.Option("--name", envvar="TTSFLEET_WORKER_NAME", show_envvar=True,
                                             help="worker slot name [default: HOST/DEVICE]")] = None,
    metrics_port: Annotated[int | None, typer.Option(envvar="TTSFLEET_METRICS_PORT", show_envvar=True,
                                                     help="serve Prometheus metrics on this port (0: any)")] = None,
    voices_cache_dir: Annotated[Path | None, typer.Option(envvar="TTSFLEET_VOICES_CACHE_DIR",
                                                          show_envvar=True)] = None,
    deterministic: Annotated[bool | None, typer.Option("--deterministic", envvar="TTSFLEET_DETERMINISTIC",
                                                       show_envvar=True,
                                                       help="noise off: same text, same audio")] = None,
    token_budget: Annotated[int | None, typer.Option(envvar="TTSFLEET_TOKEN_BUDGET", show_envvar=True,
                                                     help="max input tokens per batch [default: from memory]")] = None,
    loglevel: Annotated[str, typer.Option(help="log level")] = "INFO",
) -> None:
    """Start one worker for one device: pin its precision, load the voice, take jobs from the broker."""
    settings = WorkerSettings.from_env(
        environ(), device=device, precision=precision, queues=queues, voice=voice, broker_url=broker_url,
        database_url=database_url, output_dir=output_dir, worker_name=name, metrics_port=metrics_port,
        voices_cache_dir=voices_cache_dir, deterministic=deterministic, token_budget=token_budget)
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(settings, loglevel)


def serve(settings: WorkerSettings, loglevel: str = "INFO") -> None:
    """Start-up in order: policy and voice (fail fast), registry, resumed jobs, metrics, then Celery."""
    from producer.broker import Publisher, QueueDepths
    from worker.app import make_celery
    from worker.runtime import WorkerRuntime
    from worker.tasks import register_tasks

    log = logging.getLogger("ttsfleet.worker")
    runtime = WorkerRuntime.start(settings)
    runtime.register()
    publisher = Publisher(settings.broker_url, settings.queue)

    def republish(job_id: str, priority: int) -> None:
        try:
            publisher.publish(job_id, priority)
        except Exception as err:  # the heartbeat's reaper tries again later
            log.warning("could not re-publish %s: %s", job_id, err)

    for job_id in runtime.resume_dead_predecessors():
        log.warning("resuming job %s left by an earlier process of this worker", job_id)
        republish(job_id, 9)
    app = make_celery(settings)
    _start_metrics(settings, runtime, log)
    register_tasks(app, runtime, republish)
    runtime.start_heartbeat(republish, QueueDepths(settings.broker_url, [settings.queue]).total)
    log.info("worker %s ready: %s, %s (%s)", runtime.worker_id, runtime.device.name, runtime.policy.dtype,
             runtime.policy.reason)
    try:
        app.worker_main(["worker", "-P", "solo", "-c", "1", "-Q", settings.queues,
                         "-n", runtime.worker_id.replace("/", "-") + "@%h", "--without-gossip",
                         "--without-mingle", "-E", "-l", loglevel.upper()])
    finally:
        runtime.stop()
        publisher.close()


def _start_metrics(settings: WorkerSettings, runtime: object, log: logging.Logger) -> None:
    if settings.metrics_port is None:
        return
    from worker.metrics import attach_metrics

    port = attach_metrics(settings, runtime)
    log.info("Prometheus metrics on port %d", port)
