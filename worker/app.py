"""The Celery app of a worker, configured for long GPU jobs.

Delivery is at-least-once; SQL makes the effect exactly-once (see worker/lease.py). Comments explain
each setting that differs from Celery's defaults.

On RabbitMQ the message is acknowledged after the job (acks_late), and RabbitMQ closes a channel whose
delivery stays unacknowledged longer than its `consumer_timeout` (30 min by default): the message is
requeued (the SQL claim makes its redelivered copy harmless) but the worker's consumer has to
reconnect. For longer jobs, raise it in rabbitmq.conf above the longest job: `consumer_timeout = 21600000`
(ms; RabbitMQ 3.12+ also takes a per-queue `consumer-timeout` policy).
"""

from __future__ import annotations

from typing import Any

from schemas.broker import VISIBILITY_TIMEOUT_S, celery_broker_conf
from schemas.settings import WorkerSettings


def make_celery(settings: WorkerSettings, extra_conf: dict[str, Any] | None = None) -> Any:
    from celery import Celery

    app = Celery("ttsfleet", broker=settings.broker_url, set_as_current=True)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],  # never unpickle what arrives from the broker
        task_ignore_result=True,  # results live in SQL
        task_acks_late=True,  # ack after the job ran: a crash mid-job leaves the message to redeliver
        task_reject_on_worker_lost=True,  # a killed child requeues its message (prefork only)
        worker_prefetch_multiplier=1,  # hold one message: other GPUs take the rest of the queue
        worker_concurrency=1,  # one process per device
        visibility_timeout=VISIBILITY_TIMEOUT_S,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # Keep running a job through a broker blip: the redelivered copy is refused by the SQL claim.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_default_queue=settings.queue,
        worker_hijack_root_logger=False,
    )
    # Transport options, and on RabbitMQ the priority-queue declaration: the same as the producer's.
    app.conf.update(celery_broker_conf(settings.broker_url))
    from worker.metrics import CELERY_EVENT_SETTINGS

    app.conf.update(CELERY_EVENT_SETTINGS)
    if extra_conf:
        app.conf.update(extra_conf)
    return app
