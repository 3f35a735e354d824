"""Celery tasks: thin wrappers that validate the message and call the plain job function."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from schemas.broker import MAX_PRIORITY
from schemas.errors import DeviceLost, RetryableError, WorkerStopping
from schemas.messages import SYNTHESIZE_TASK, SynthesizeMessage
from worker import reaper
from worker.reaper import Republish
from worker.runtime import WorkerRuntime

log = logging.getLogger("ttsfleet.tasks")


def register_tasks(app: Any, runtime: WorkerRuntime, republish: Callable[[Republish], None]) -> None:
    """Register `ttsfleet.synthesize` on `app`, bound to this process's runtime."""

    @app.task(name=SYNTHESIZE_TASK, bind=True, autoretry_for=(RetryableError,), retry_backoff=True,
              retry_backoff_max=300, retry_jitter=True, max_retries=20)
    def synthesize(self: Any, **message: Any) -> str:
        """Synthesize the jobs named by the message: validate, run, report."""
        job_ids = SynthesizeMessage.model_validate(message).ids
        try:
            outcomes = runtime.run_delivery(job_ids)
            return ", ".join(f"{o.job_id}: {o.status or 'nothing to do'}" for o in outcomes[:4])
        except WorkerStopping as err:
            # Put back at a chunk boundary on SIGTERM: send them again so another worker resumes them now.
            log.warning("%s", err)
            _send_again(runtime, republish, job_ids)
            return "released"
        except DeviceLost as err:
            # CUDA is unusable in this process: the jobs were put back; send them again and let the
            # supervisor restart us with a fresh context.
            log.critical("device lost on jobs %s: %s; exiting", ", ".join(job_ids), err)
            _send_again(runtime, republish, job_ids)
            os._exit(3)


def _send_again(runtime: WorkerRuntime, republish: Callable[[Republish], None], job_ids: tuple[str, ...]) -> None:
    for job_id in job_ids:
        job = reaper.route(runtime.store, job_id, MAX_PRIORITY)
        if job is not None:
            republish(job)
